"""Load and save GLM-4.1V checkpoints: the folder layout transformers writes and the 9B model is published in.

Mirrors what transformers' `from_pretrained` / `save_pretrained` do for `Glm4vForConditionalGeneration` (facts §8),
strictly: a folder holds `config.json` and either `model.safetensors` or shards `model-0000k-of-0000n.safetensors`
listed in `model.safetensors.index.json` = {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}.

Loading builds the model on the meta device (no memory), then reads the files one at a time with `safe_open` and,
per tensor, checks the name, the shard the index promised, the shape and the dtype before assigning it as the
parameter. Any unknown, duplicate, missing or mis-shaped tensor raises `CheckpointError` naming the tensor and file,
so a half-loaded model is never returned. The checkpoint's dtype is kept (bf16 stays bf16) unless `dtype` is given.
Parameter names need no renaming: the module tree (model.py) uses the checkpoint names.

Shapes: the checkpoint's, e.g. embed_tokens (V, C).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import Glm4vConfig
from .errors import CheckpointError, CheckpointNotFoundError
from .model import Glm4vForConditionalGeneration

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class LoadReport:
    """What `load` read: counted, so a caller (or a test) can see nothing was skipped."""
    files: tuple[str, ...]  # safetensors files, in reading order
    tensors: int  # tensors assigned (= len(state_dict()))
    parameters: int  # numbers in them
    dtype: torch.dtype  # dtype of the loaded model


def build(config: Glm4vConfig, device: str | torch.device = "meta") -> Glm4vForConditionalGeneration:
    """An un-initialised model; on "meta" it takes no memory (names and shapes only)."""
    with torch.device(device):
        return Glm4vForConditionalGeneration(config)


def checkpoint_files(folder: str | Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a folder, and the index's weight_map (None for a single file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist; pass the folder holding "
                                      f"config.json and {SINGLE} (or the shards and {INDEX})")
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index ({e!r}); it must hold "
                                  '{"metadata": {...}, "weight_map": {tensor: file}}. Re-download it') from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointNotFoundError(f"{index} lists shard file(s) {missing} that are not in {folder}; "
                                          "download all shards of the checkpoint")
        return [folder / f for f in files], weight_map
    if (folder / SINGLE).is_file():
        return [folder / SINGLE], None
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    raise CheckpointNotFoundError(f"{folder} has neither {SINGLE} nor {INDEX} (safetensors files there: {found}); "
                                  "a sharded checkpoint needs its index file")


_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _stored_dtype(files: list[Path]) -> torch.dtype:
    """The one floating dtype all tensors are stored in (read from the headers, no tensor data)."""
    seen = {}
    for path in files:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name != "__metadata__":
                seen.setdefault(info["dtype"], (name, path.name))
    bad = {k: v for k, v in seen.items() if k not in _DTYPES}
    if bad:
        raise CheckpointError(f"tensors stored as {sorted(bad)} (e.g. {list(bad.values())[0]}); GLM-4.1V weights "
                              f"are floating point ({sorted(_DTYPES)})")
    if len(seen) > 1:
        raise CheckpointError(f"the checkpoint mixes dtypes {sorted(seen)} (e.g. {seen}); pass dtype= to load() "
                              "to choose the dtype of the model")
    return _DTYPES[next(iter(seen))] if seen else torch.float32


def load_state(model: nn.Module, folder: str | Path, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu") -> LoadReport:
    """Fill a (meta) model from a checkpoint folder, strictly. Returns the count."""
    folder = Path(folder)
    files, weight_map = checkpoint_files(folder)
    dtype = dtype or _stored_dtype(files)
    expected = dict(model.state_dict(keep_vars=True))  # name -> meta tensor (shapes only)
    loaded: dict[str, str] = {}  # name -> file it came from
    n_params = 0
    for path in files:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            names = list(f.keys())
            if weight_map is not None:
                promised = {k for k, v in weight_map.items() if v == path.name}
                if promised - set(names):
                    raise CheckpointError(f"{folder / INDEX} says {sorted(promised - set(names))[:5]} are in "
                                          f"{path.name}, but that file does not hold them; re-download the shard")
            for name in names:
                where = f"tensor {name!r} in {path}"
                if name not in expected:
                    raise CheckpointError(f"{where} is not a parameter of GLM-4.1V ({type(model).__name__}); is "
                                          "this a GLM-4.1V checkpoint in the published layout (model.visual.*, "
                                          "model.language_model.*, lm_head.weight)?")
                if name in loaded:
                    raise CheckpointError(f"{where} was already read from {loaded[name]}; the checkpoint holds it "
                                          "twice")
                if weight_map is not None and weight_map.get(name) != path.name:
                    raise CheckpointError(f"{where}: the index says it lives in {weight_map.get(name)}; the "
                                          "index and the shards disagree, re-download them")
                shape = tuple(f.get_slice(name).get_shape())
                want = tuple(expected[name].shape)
                if shape != want:
                    raise CheckpointError(f"{where} has shape {list(shape)} but the model built from config.json "
                                          f"expects {list(want)}; config.json and the weights do not belong together")
                tensor = f.get_tensor(name)
                if not tensor.is_floating_point():
                    raise CheckpointError(f"{where} has dtype {tensor.dtype}; GLM-4.1V weights are floating point")
                _assign(model, name, tensor.to(dtype))
                loaded[name] = path.name
                n_params += tensor.numel()
    missing = [k for k in expected if k not in loaded]
    if missing:
        raise CheckpointError(f"{len(missing)} tensor(s) of the model are not in {folder} (files "
                              f"{[p.name for p in files]}), e.g. {missing[:5]}; the checkpoint is incomplete or "
                              "belongs to a different config")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer built on meta: a bug in the model code, not in the checkpoint
        raise CheckpointError(f"after loading, {left[:5]} are still on the meta device; compute them on the fly")
    return LoadReport(tuple(p.name for p in files), len(loaded), n_params, dtype)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the meta parameter `name` with `tensor` (no copy)."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    if leaf in module._parameters:
        setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))
    else:
        module._buffers[leaf] = tensor


def load(path: str | Path, dtype: torch.dtype | None = None,
         device: str | torch.device = "cpu") -> Glm4vForConditionalGeneration:
    """Load a GLM-4.1V checkpoint folder onto `device`, in the stored dtype unless `dtype` is given.

    The model is in eval mode with `requires_grad=False` parameters (inference; call `.requires_grad_()` to train);
    `model.config` is its config and `model.load_report` says how many tensors and parameters were read from which
    files."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist; pass the folder holding "
                                      f"config.json and {SINGLE} (or the shards and {INDEX})")
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(f"{folder / 'config.json'} not found: a checkpoint folder needs its "
                                      "config.json next to the safetensors files")
    model = build(Glm4vConfig.from_pretrained(folder), "meta")
    model.load_report = load_state(model, folder, dtype=dtype, device=device)
    return model.eval()


def parse_size(size: int | str) -> int:
    """Bytes from 5_000_000_000, "5GB" (powers of 1000) or "5GiB" (powers of 1024)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*", str(size), re.IGNORECASE)
    if not m:
        raise CheckpointError(f"max_shard_size={size!r}: use bytes (int) or a string like '5GB' or '500MiB'")
    unit = m.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base ** "BKMG".index(unit[0]))


def save(model: Glm4vForConditionalGeneration, folder: str | Path, max_shard_size: int | str = "5GB") -> list[Path]:
    """Write config.json and the weights in the published layout: one `model.safetensors` when they fit in
    max_shard_size, else shards `model-0000k-of-0000n.safetensors` plus `model.safetensors.index.json`.
    Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
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
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX]:
        stale.unlink(missing_ok=True)  # never leave shards of an earlier save beside the new ones
    written = [model.config.save_pretrained(folder)]
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE), metadata={"format": "pt"})
        return written + [folder / SINGLE]
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        written.append(folder / fname)
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return written + [folder / INDEX]
