"""Quantize while loading, and quantized checkpoints: `load_quantized(folder, scheme, ...)`, `save_quantized`.

No transformers function is mirrored (its `from_pretrained(quantization_config=...)` hands the work to add-on
libraries). A float checkpoint (the published bf16 one) is read one tensor at a time, as weights.load does: the
model is built on the meta device, `quant.prepare` swaps the target Linears for empty QuantLinears, and each of
their weights is quantized the moment it is read, so the float copy of one tensor at a time is all the process
holds beyond the quantized model. With mmap (the default, on the CPU) a weight is a view of the file's pages; once
it is quantized those pages are handed back to the kernel (madvise DONTNEED), so they do not stay in memory.

A quantized checkpoint (config.json with a "quantization_config"; the layout is in quant.py's docstring) is read
back exactly: same names, shapes, dtypes and bytes, checked strictly, then packed for the device's kernel.

This module reads the files through weights.py's helpers (checkpoint_files, read_header, _stored_dtype, _Reader,
_assign, check_device, compute_dtype, build) until weights.py offers a public per-tensor stream.

Shapes: N output features, K input features of a Linear.
"""

from __future__ import annotations

import json
import mmap as mmap_module
import os
from pathlib import Path

import torch
from safetensors import safe_open

from . import weights
from .config import Glm4vConfig
from .errors import CheckpointError, CheckpointNotFoundError, ConfigError, QuantError
from .jsonfile import read_json
from .paths import local_path
from .quant import QuantLinear, prepare, read_quantization_config

PAGE = mmap_module.PAGESIZE


def _read_config(folder: Path) -> tuple[Glm4vConfig, dict | None]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path} not found: a checkpoint folder needs its config.json next to the "
                                      "safetensors files")
    raw = read_json(path, ConfigError)
    stored = raw.pop("quantization_config", None)
    try:
        return Glm4vConfig.from_dict(raw), stored
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_quantized(path, scheme: str | None = None, group_size: int = 128, quantize_vision: bool = False,
                   dtype=None, device="cpu", mmap: bool = True):
    """A GLM-4.1V model with int8 / int4 Linears, from a float checkpoint (quantized as it is read; `scheme`
    required) or from a quantized one (read back exactly; `scheme` None or the stored one). dtype: the compute
    dtype (default: the checkpoint's). Returns the model in eval mode with `model.load_report`."""
    folder = local_path(path, "checkpoint folder", CheckpointNotFoundError)
    device = weights.check_device(device)
    dtype = weights.compute_dtype(dtype)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist")
    config, stored = _read_config(folder)
    model = weights.build(config, "meta")
    if stored is not None:
        return _load_stored(model, folder, stored, scheme, group_size, quantize_vision, dtype, device)
    if scheme is None:
        raise QuantError(f"{folder} holds float weights; pass scheme='int8' or 'int4' to quantize them while "
                         "loading (or use weights.load for the float model)")
    return _load_float(model, folder, scheme, group_size, quantize_vision, dtype, device, mmap)


def _load_float(model, folder, scheme, group_size, quantize_vision, dtype, device, mmap):
    files, weight_map = weights.checkpoint_files(folder)
    headers = {p: weights.read_header(p) for p in files}
    dtype = dtype or weights._stored_dtype({p: h for p, (h, _) in headers.items()})
    model.to(dtype)  # on meta: only the dtype the QuantLinears and the rest are built in
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}  # the float checkpoint's names
    names = prepare(model, scheme, group_size, quantize_vision)
    quantized = {n + ".weight": model.get_submodule(n) for n in names}
    reader = weights._Reader(device, dtype, mmap)
    loaded: dict[str, str] = {}
    n_params = n_bytes = 0
    for path in files:
        header, start = headers[path]
        order = sorted(header, key=lambda k: header[k]["data_offsets"][0])  # file order: sequential reads
        with open(path, "rb", buffering=0) as fh:
            reader.open(fh)
            for name in order:
                info = header[name]
                where = f"tensor {name!r} in {path}"
                _check_entry(name, where, path, loaded, expected, weight_map, tuple(info["shape"]))
                a, b = (start + x for x in info["data_offsets"])
                tensor = reader.read(fh, a, info, where)
                if name in quantized:
                    quantized[name].load_weight(tensor)
                    del tensor
                    _release(reader.map, a, b)
                else:
                    weights._assign(model, name, tensor)
                loaded[name] = path.name
                n_params += _numel(info["shape"])
                n_bytes += b - a
    _check_complete(model, folder, files, expected, loaded)
    model.load_report = weights.LoadReport(tuple(p.name for p in files), len(loaded), n_params, dtype, n_bytes)
    return model.eval()


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _release(mapping, a: int, b: int) -> None:
    """Give the whole pages of file bytes [a, b) back to the kernel (a private read-only use: they are re-read
    from the file if ever touched again)."""
    if mapping is None:
        return
    lo, hi = -(-a // PAGE) * PAGE, b // PAGE * PAGE
    if hi > lo:
        mapping.madvise(mmap_module.MADV_DONTNEED, lo, hi - lo)


def _check_entry(name, where, path, loaded, expected, weight_map, shape) -> None:
    if name not in expected:
        raise CheckpointError(f"{where} is not a tensor of this GLM-4.1V model (config.json); is this a GLM-4.1V "
                              "checkpoint in the published layout?")
    if name in loaded:
        raise CheckpointError(f"{where} was already read from {loaded[name]}; the checkpoint holds it twice")
    if weight_map is not None and weight_map.get(name) != path.name:
        raise CheckpointError(f"{where}: the index says it lives in {weight_map.get(name)}; the index and the "
                              "shards disagree, re-download them")
    if shape != expected[name]:
        raise CheckpointError(f"{where} has shape {list(shape)} but the model built from config.json expects "
                              f"{list(expected[name])}; config.json and the weights do not belong together")


def _check_complete(model, folder, files, expected, loaded) -> None:
    missing = [k for k in expected if k not in loaded]
    if missing:
        raise CheckpointError(f"{len(missing)} tensor(s) of the model are not in {folder} (files "
                              f"{[p.name for p in files]}), e.g. {missing[:5]}; the checkpoint is incomplete")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"after loading, {left[:5]} are still empty (meta)")


def _load_stored(model, folder, stored, scheme, group_size, quantize_vision, dtype, device):
    where = f"{folder / 'config.json'}: quantization_config"
    s_scheme, s_group, s_vision = read_quantization_config(stored, where)
    asked = (scheme, group_size if scheme == "int4" else None, quantize_vision)
    if scheme is not None and asked != (s_scheme, s_group, s_vision):
        raise QuantError(f"{folder} is already quantized ({s_scheme}, group_size={s_group}, quantize_vision="
                         f"{s_vision}), not as asked {asked}; load it with scheme=None, or quantize the float "
                         "checkpoint again")
    s_dtype = getattr(torch, stored["scale_dtype"])
    if dtype is not None and dtype != s_dtype:
        raise QuantError(f"{folder} was quantized with {s_dtype} scales; dtype={dtype} would change them. Load "
                         f"it with dtype=None, or quantize the float checkpoint in {dtype}")
    model.to(s_dtype)
    prepare(model, s_scheme, s_group or 128, s_vision)
    expected = {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()}
    files, weight_map = weights.checkpoint_files(folder)
    loaded: dict[str, str] = {}
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                _check_entry(name, f"tensor {name!r} in {path}", path, loaded,
                             {k: s for k, (_, s) in expected.items()}, weight_map, tuple(t.shape))
                if t.dtype != expected[name][0]:
                    raise CheckpointError(f"tensor {name!r} in {path} is {t.dtype}; the quantized layout has "
                                          f"{expected[name][0]} there (see minglm4v/quant.py)")
                weights._assign(model, name, t.to(device))
                loaded[name] = path.name
    _check_complete(model, folder, files, expected, loaded)
    for m in model.modules():
        if isinstance(m, QuantLinear):
            m.pack()
    model.load_report = weights.LoadReport(tuple(p.name for p in files), len(loaded),
                                           sum(t.numel() for t in model.state_dict().values()), s_dtype)
    return model.eval()


def save_quantized(model, folder, max_shard_size: int | str = "5GB") -> list[Path]:
    """weights.save, then config.json records the model's quantization_config. Returns the files written."""
    if not getattr(model, "quantization_config", None):
        raise QuantError("this model is not quantized (no model.quantization_config); use weights.save, or "
                         "quantize_model first")
    written = weights.save(model, folder, max_shard_size)
    path = Path(folder) / "config.json"
    d = json.loads(path.read_text())
    d["quantization_config"] = model.quantization_config
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, indent=2) + "\n")
    os.replace(tmp, path)  # never a half-written config.json
    return written
