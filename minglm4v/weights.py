"""Load and save GLM-4.1V checkpoints: the folder layout transformers writes and the 9B model is published in.

Mirrors what transformers' `from_pretrained` / `save_pretrained` do for `Glm4vForConditionalGeneration`
(docs/glm41v.md §8), strictly. The folder layout and the tensor stream are in checkpoint.py, the safetensors
format in safetensors_io.py, Hub ids in hub.py, devices in devices.py, the atomic folder update in atomic_save.py;
this file is the model side.

Loading builds the model on the meta device (no memory), checks every tensor of the checkpoint against it before
reading any data (a parameter of the model, the shape config.json implies, a floating dtype), then fills it from
`checkpoint.iter_checkpoint`, one tensor at a time, without an intermediate state dict:
  * CPU, stored dtype: the parameter is a view of the memory-mapped file (copy-on-write), read on first use, one
    copy shared with the page cache (or, with `mmap=False`, a `torch.empty` filled by `readinto`);
  * another device or a dtype conversion: `torch.empty` on the target, filled through one 64 MiB staging buffer a
    slice at a time.
So the process holds the weights once: peak memory is the checkpoint's bytes (plus that buffer) on the CPU, or just
the buffer when loading onto a GPU. Any unknown, duplicate, missing or mis-shaped tensor raises `CheckpointError` naming
the tensor and file, so a half-loaded model is never returned. Parameter names need no renaming: the module tree
(model.py) uses the checkpoint names.

Shapes: the checkpoint's, e.g. embed_tokens (vocab, C).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from .atomic_save import replace_checkpoint
from .checkpoint import INDEX, SINGLE, Checkpoint, iter_checkpoint, read_checkpoint
from .config import Glm4vConfig
from .devices import resolve_device
from .errors import CheckpointError, CheckpointNotFoundError
from .hub import resolve_checkpoint
from .model import Glm4vForConditionalGeneration
from .paths import local_path

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
STORED_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}  # safetensors names


@dataclass(frozen=True)
class LoadReport:
    """What `load` read: counted, so a caller (or a test) can see nothing was skipped."""
    files: tuple[str, ...]  # safetensors files, in reading order
    tensors: int  # tensors assigned (= len(state_dict()))
    parameters: int  # numbers in them
    dtype: torch.dtype  # dtype of the loaded model
    bytes_read: int = 0  # tensor bytes read from the files
    folder: Path | None = None  # the local folder (a Hub id resolves to a snapshot in the Hugging Face cache)


def build(config: Glm4vConfig, device: str | torch.device = "meta") -> Glm4vForConditionalGeneration:
    """An un-initialised model; on "meta" it takes no memory (names and shapes only)."""
    with torch.device(device):
        return Glm4vForConditionalGeneration(config)


def weight_bytes(config: Glm4vConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(parameters, bytes) of the model's weights in `dtype`, counted on the meta device (no memory)."""
    n = sum(p.numel() for p in build(config, "meta").parameters())
    return n, n * torch.empty((), dtype=dtype).element_size()


def compute_dtype(dtype) -> torch.dtype | None:
    """None for "keep the stored dtype" (None or "auto"), else a floating torch.dtype from a dtype or its name
    ("bfloat16", "torch.float32", ...)."""
    if dtype is None or dtype == "auto":
        return None
    name = str(dtype).removeprefix("torch.")
    if name not in COMPUTE_DTYPES:
        raise CheckpointError(f"dtype={dtype!r}: GLM-4.1V runs in {', '.join(COMPUTE_DTYPES)} (or 'auto' / None to "
                              "keep the checkpoint's own dtype, bfloat16 for the published weights)")
    return COMPUTE_DTYPES[name]


def stored_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The one dtype all tensors of the checkpoint are stored in (headers only; load_state checked each is a
    floating STORED_DTYPES one)."""
    seen = {}
    for h in ckpt.headers:
        for name, info in h.tensors.items():
            seen.setdefault(info["dtype"], (name, h.path.name))
    if len(seen) > 1:
        raise CheckpointError(f"the checkpoint mixes dtypes {sorted(seen)} (e.g. {seen}); pass dtype= to load() "
                              "to choose the dtype of the model")
    return STORED_DTYPES[next(iter(seen))] if seen else torch.float32


def _check_against(model: nn.Module, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint is a parameter of `model` with its shape, in a float dtype; none is missing."""
    expected = dict(model.state_dict(keep_vars=True))  # name -> meta tensor (shapes only)
    for h in ckpt.headers:
        for name, info in h.tensors.items():
            where = f"tensor {name!r} in {h.path}"
            if name not in expected:
                raise CheckpointError(f"{where} is not a parameter of GLM-4.1V ({type(model).__name__}); is "
                                      "this a GLM-4.1V checkpoint in the published layout (model.visual.*, "
                                      "model.language_model.*, lm_head.weight)?")
            if info["dtype"] not in STORED_DTYPES:
                raise CheckpointError(f"{where} is stored as {info['dtype']}; GLM-4.1V weights are floating point "
                                      f"({sorted(STORED_DTYPES)})")
            shape, want = tuple(info["shape"]), tuple(expected[name].shape)
            if shape != want:
                raise CheckpointError(f"{where} has shape {list(shape)} but the model built from config.json "
                                      f"expects {list(want)}; config.json and the weights do not belong together")
    tensors = ckpt.tensors()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(f"{len(missing)} tensor(s) of the model are not in {ckpt.folder} (files "
                              f"{[p.name for p in ckpt.files]}), e.g. {missing[:5]}; the checkpoint is incomplete "
                              "or belongs to a different config")
    return expected


def load_state(model: nn.Module, folder: str | Path, dtype=None, device: str | torch.device = "cpu",
               mmap: bool = True, progress: bool | None = None) -> LoadReport:
    """Fill a (meta) model from a checkpoint folder, strictly, one tensor at a time (`iter_checkpoint`).

    Every tensor is checked against the model before any data is read; dtype, device, mmap and progress mean what
    they mean for `load`. Returns the count (LoadReport)."""
    device = resolve_device(device)
    ckpt = read_checkpoint(folder)
    _check_against(model, ckpt)
    dtype = compute_dtype(dtype) or stored_dtype(ckpt)
    n = n_params = n_bytes = 0
    sizes = {name: info["data_offsets"][1] - info["data_offsets"][0] for name, info in ckpt.tensors().items()}
    for name, tensor in iter_checkpoint(ckpt, dtype=dtype, device=device, mmap=mmap, progress=progress):
        _assign(model, name, tensor)
        n, n_params, n_bytes = n + 1, n_params + tensor.numel(), n_bytes + sizes[name]
    left = [k for k, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer built on meta: a bug in the model code, not in the checkpoint
        raise CheckpointError(f"after loading, {left[:5]} are still on the meta device; compute them on the fly")
    return LoadReport(tuple(p.name for p in ckpt.files), n, n_params, dtype, n_bytes, ckpt.folder)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the meta parameter `name` with `tensor` (no copy)."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    if leaf in module._parameters:
        setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))
    else:
        module._buffers[leaf] = tensor


def load(path, dtype=None, device: str | torch.device = "cpu", mmap: bool = True, *,
         progress: bool | None = None, allow_download: bool = False) -> Glm4vForConditionalGeneration:
    """Load a GLM-4.1V checkpoint onto `device`; `model.config` is its config.

    path: a checkpoint folder (str, Path or file:// URL) or a Hugging Face Hub id ("zai-org/GLM-4.1V-9B-Thinking")
        found in the local Hugging Face cache; `allow_download=True` lets huggingface_hub download a Hub id that is
        not there (never otherwise). Other URLs are refused.
    dtype: "auto" or None (the default) keep the dtype the weights are stored in (bf16 stays bf16; unlike
        transformers 4.x, None does not mean float32); or torch.float32 / bfloat16 / float16, or their names.
    device: "cpu" (the default), "cuda", "cuda:1", "mps", or "auto" (CUDA, then MPS, then CPU). Each tensor is read
        from disk straight into its place ("cuda" loads the 9B model onto the GPU without a CPU copy).
    mmap: on the CPU in the stored dtype, True makes the parameters views of the memory-mapped files
        (copy-on-write): loading is nearly instant and the weights are read on first use. The price: rewriting a
        checkpoint file while a model loaded from it is alive ends the process with SIGBUS, as with any
        memory-mapped loader. False reads the weights into memory the process owns.
    progress: one line per shard on stderr; None (the default) prints only when stderr is a terminal.

    The model is in eval mode with `requires_grad=False` parameters (inference; call `.requires_grad_()` to train);
    `model.load_report` says how many tensors, parameters and bytes were read from which files."""
    device = resolve_device(device)
    dtype = compute_dtype(dtype)
    folder = resolve_checkpoint(path, allow_download=allow_download)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist; pass the folder holding "
                                      f"config.json and {SINGLE} (or the shards and {INDEX}), or a Hub id")
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(f"{folder / 'config.json'} not found: a checkpoint folder needs its "
                                      "config.json next to the safetensors files")
    model = build(Glm4vConfig.from_pretrained(folder), "meta")
    model.load_report = load_state(model, folder, dtype=dtype, device=device, mmap=mmap, progress=progress)
    return model.eval()


def parse_size(size: int | str) -> int:
    """Bytes from 5_000_000_000, "5GB" (powers of 1000) or "5GiB" (powers of 1024)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*", str(size), re.IGNORECASE)
    if not m:
        raise CheckpointError(f"max_shard_size={size!r}: use bytes (int) or a string like '5GB' or '500MiB'")
    unit = m.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base ** "BKMG".index(unit[0]))


def _write_shard(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as e:  # the library reports a full disk or a file-size limit this way
        raise OSError(f"{path.name}: {e}") from e


def save(model: Glm4vForConditionalGeneration, folder: str | Path, max_shard_size: int | str = "5GB") -> list[Path]:
    """Write config.json and the weights in the published layout: one `model.safetensors` when they fit in
    max_shard_size, else shards `model-0000k-of-0000n.safetensors` plus `model.safetensors.index.json`.

    Safe over an existing checkpoint: everything is written into a temporary folder first and swapped in only
    when complete (a full disk or an error midway leaves the previous checkpoint as it was); then only the files
    the previous save wrote (what its index lists, or its model.safetensors) are removed, never other files such as
    `model_ema.safetensors` or the tokenizer. Returns the files written."""
    folder = local_path(folder, "save folder", CheckpointError)
    limit = parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in model.state_dict().items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:  # start a new shard; a lone tensor may exceed the limit
            shards.append({})
            size = 0
        shards[-1][name] = t.detach().contiguous()
        size += nbytes

    def write(tmp: Path) -> list[str]:
        model.config.save_pretrained(tmp)
        if len(shards) == 1:
            _write_shard(shards[0], tmp / SINGLE)
            return ["config.json", SINGLE]
        names, weight_map, total = ["config.json"], {}, 0
        for k, shard in enumerate(shards, 1):
            fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
            _write_shard(shard, tmp / fname)
            names.append(fname)
            for name, t in shard.items():
                weight_map[name] = fname
                total += t.numel() * t.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return names + [INDEX]

    return replace_checkpoint(folder, write)
