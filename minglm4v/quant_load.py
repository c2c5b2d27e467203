"""Quantize while loading, and quantized checkpoints: what `load(path, quantize=...)` runs (weights.py).

No transformers function is mirrored (its `from_pretrained(quantization_config=...)` hands the work to add-on
libraries). Both cases start as weights.load does: the model is built on the meta device and every tensor of the
checkpoint is checked against it (name, shape, dtype, none missing; weights.py) before any data is read.

  * A float checkpoint (the published bf16 one), `quantize="int8" | "int4"`: `quant.prepare` swaps the target
    Linears for empty QuantLinears, then `checkpoint.iter_checkpoint` streams the tensors one at a time and each
    target weight is quantized the moment it arrives, so the float copy of one tensor is all the process holds
    beyond the quantized model. On the CPU with mmap (the default) a weight is a view of the file's pages; once it
    is quantized those pages are handed back to the kernel (madvise DONTNEED), so they do not stay in memory.
  * A quantized checkpoint (config.json has a "quantization_config"; the layout is in quant.py's docstring): the
    model is prepared as recorded, every tensor must have exactly the recorded dtype (int8 / uint8 codes, scales
    in the compute dtype), and the buffers are read back byte for byte, then packed for the device's kernel.

`save_quantized` is `weights.save` for a quantized model (which `weights.save` itself handles), refusing a float one.

Shapes: N output features, K input features of a Linear.
"""

from __future__ import annotations

import ctypes
import functools
import mmap as mmap_module
from dataclasses import replace
from pathlib import Path

import torch

from . import weights
from .checkpoint import iter_checkpoint, read_checkpoint
from .config import Glm4vConfig
from .errors import QuantError
from .quant import QuantLinear, prepare, read_quantization_config

PAGE = mmap_module.PAGESIZE
DONTNEED = getattr(mmap_module, "MADV_DONTNEED", None)  # Linux and macOS; None elsewhere (then nothing is released)


def load_quantized(path, scheme: str | None = None, group_size: int | None = None,
                   quantize_vision: bool | None = None, dtype=None, device="cpu", mmap: bool = True):
    """`weights.load(path, dtype, device, mmap, quantize=scheme, group_size=..., quantize_vision=...)`: a float
    checkpoint quantized as it is read (`scheme` required), or a quantized one read back exactly."""
    return weights.load(path, dtype, device, mmap, quantize=scheme, group_size=group_size,
                        quantize_vision=quantize_vision)


def load_quantized_state(config: Glm4vConfig, folder: Path, scheme, group_size, quantize_vision, dtype, device, mmap,
                         progress):
    """The model of `config` with QuantLinears, filled from `folder` (checked by weights.load: dtype and device
    resolved). `model.load_report` counts what was read."""
    model = weights.build(config, "meta")
    ckpt = read_checkpoint(folder)
    if config.quantization_config is not None:
        report = _fill_stored(model, ckpt, config, scheme, group_size, quantize_vision, dtype, device, mmap, progress)
    elif scheme is None:
        raise QuantError(f"{folder} holds float weights and no quantization_config; group_size / quantize_vision "
                         "only apply when quantizing: pass quantize='int8' or 'int4' too, or leave them out")
    else:
        report = _fill_float(model, ckpt, scheme, group_size, quantize_vision, dtype, device, mmap, progress)
    model.config = replace(config, quantization_config=model.quantization_config)
    model.load_report = report
    return model


def _settings(scheme, group_size, quantize_vision) -> tuple[str, int | None, bool]:
    """(scheme, group_size, quantize_vision) as asked, defaults filled; group_size is int4's alone."""
    if quantize_vision is not None and not isinstance(quantize_vision, bool):
        raise QuantError(f"quantize_vision={quantize_vision!r} must be True or False (or None: False)")
    if scheme == "int8" and group_size is not None:
        raise QuantError(f"group_size={group_size} with quantize='int8': int8 has one scale per output channel, "
                         "groups are int4's; leave group_size out, or use quantize='int4'")
    return scheme, (128 if group_size is None else group_size) if scheme == "int4" else None, bool(quantize_vision)


def _fill_float(model, ckpt, scheme, group_size, quantize_vision, dtype, device, mmap, progress):
    scheme, group_size, quantize_vision = _settings(scheme, group_size, quantize_vision)
    weights._check_against(model, ckpt)  # the float checkpoint's names, shapes and dtypes
    dtype = dtype or weights.stored_dtype(ckpt)
    model.to(dtype)  # on meta: only the dtype the QuantLinears and the rest are built in
    names = prepare(model, scheme, group_size or 128, quantize_vision)
    quantized = {n + ".weight": model.get_submodule(n) for n in names}
    sizes = {name: info["data_offsets"][1] - info["data_offsets"][0] for name, info in ckpt.tensors().items()}
    n = n_params = n_bytes = 0
    for name, tensor in iter_checkpoint(ckpt, dtype=dtype, device=device, mmap=mmap, progress=progress):
        if name in quantized:
            quantized[name].load_weight(tensor)
            _release(tensor)
        else:
            weights._assign(model, name, tensor)
        n, n_params, n_bytes = n + 1, n_params + tensor.numel(), n_bytes + sizes[name]
        del tensor
    _check_filled(model)
    return weights.LoadReport(tuple(p.name for p in ckpt.files), n, n_params, dtype, n_bytes, ckpt.folder)


def _release(tensor: torch.Tensor) -> None:
    """Hand the whole pages under a tensor that is a view of a memory-mapped file (iter_checkpoint's mmap case: its
    storage is the file's buffer, not one torch can resize) back to the kernel. The mapping is private and only
    read, so a page is simply re-read from the file if it is ever touched again. Any other tensor: nothing."""
    if DONTNEED is None or tensor.device.type != "cpu" or not tensor.numel() or tensor.untyped_storage().resizable():
        return
    a = tensor.data_ptr()
    lo, hi = -(-a // PAGE) * PAGE, (a + tensor.numel() * tensor.element_size()) // PAGE * PAGE
    if hi > lo:
        _libc().madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), DONTNEED)


@functools.cache
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _fill_stored(model, ckpt, config, scheme, group_size, quantize_vision, dtype, device, mmap, progress):
    where = f"{ckpt.folder / 'config.json'}: quantization_config"
    stored = read_quantization_config(config.quantization_config, where)  # (scheme, group_size, quantize_vision)
    asked = {"quantize": scheme, "group_size": group_size, "quantize_vision": quantize_vision}
    differ = {k: v for (k, v), s in zip(asked.items(), stored) if v is not None and v != s}
    if differ:
        raise QuantError(f"{ckpt.folder} is already quantized (quantize={stored[0]!r}, group_size={stored[1]}, "
                         f"quantize_vision={stored[2]}), not as asked ({differ}); load it with quantize=None to read "
                         "it as stored, or quantize the float checkpoint again")
    s_name = config.quantization_config["scale_dtype"]
    if s_name not in weights.COMPUTE_DTYPES:
        raise QuantError(f"{where}: scale_dtype={s_name!r} is not a compute dtype ({', '.join(weights.COMPUTE_DTYPES)}"
                         "); the config does not describe a minglm4v quantized checkpoint")
    s_dtype = weights.COMPUTE_DTYPES[s_name]
    if dtype is not None and dtype != s_dtype:
        raise QuantError(f"{ckpt.folder} was quantized in {s_dtype} (its scales and other tensors); dtype={dtype} "
                         f"would change them. Load it with dtype=None, or quantize the float checkpoint in {dtype}")
    model.to(s_dtype)
    prepare(model, stored[0], stored[1] or 128, stored[2])
    weights._check_against(model, ckpt, exact_dtype=True)  # names, shapes and the recorded dtypes
    n = n_params = n_bytes = 0
    for name, tensor in iter_checkpoint(ckpt, dtype=None, device=device, mmap=mmap, progress=progress):
        weights._assign(model, name, tensor)
        n, n_params, n_bytes = n + 1, n_params + tensor.numel(), n_bytes + tensor.numel() * tensor.element_size()
    _check_filled(model)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            rows = [m.qweight, m.scales] + ([m.zeros] if m.scheme == "int4" else [])
            m.pack()
            if m.layout != "rows":  # repacked for the kernel: the file's pages of the row layout are not needed
                for t in rows:
                    _release(t)
            del rows
    return weights.LoadReport(tuple(p.name for p in ckpt.files), n, n_params, s_dtype, n_bytes, ckpt.folder)


def _check_filled(model) -> None:
    left = [k for k, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # weights._check_against found every tensor: this is a bug in the model code, not the checkpoint
        raise QuantError(f"after loading, {left[:5]} are still on the meta device")


def save_quantized(model, folder, max_shard_size: int | str = "5GB") -> list[Path]:
    """`weights.save` of a quantized model: the layout of quant.py's docstring, config.json recording the model's
    quantization_config. Returns the files written."""
    if not getattr(model, "quantization_config", None):
        raise QuantError("this model is not quantized (no model.quantization_config); use weights.save, or "
                         "quantize_model first")
    return weights.save(model, folder, max_shard_size)
