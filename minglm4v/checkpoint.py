"""A checkpoint folder's weight files, checked before any tensor is read, and the stream of its tensors.

The published layout (docs/glm41v.md §8): `config.json` beside either one `model.safetensors`, or shards
`model-0000k-of-0000n.safetensors` listed in `model.safetensors.index.json` =
{"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}.

`read_checkpoint` finds the files, reads the index strictly (jsonfile.read_json), refuses an index entry that
points outside the folder (`../x`, an absolute path, a symlink that resolves elsewhere) before opening anything,
reads every shard's header (safetensors_io.read_header) and checks that the index and the shards agree: each tensor
in exactly one shard, the one the index names. `iter_checkpoint` then yields (name, tensor) one tensor at a time, in
file order, so a consumer (the strict loader in weights.py, a quantizer) never holds more than the tensor in hand
beyond what it keeps. Progress, one line per shard, goes to stderr when it is a terminal.

Shapes: as stored.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch

from .devices import resolve_device
from .errors import CheckpointError, CheckpointNotFoundError
from .jsonfile import expect, read_json
from .paths import local_path
from .safetensors_io import DTYPES, Header, TensorReader, read_header

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class Checkpoint:
    """The weight files of a folder, checked: in reading order, with their headers and the index (if sharded)."""
    folder: Path
    headers: tuple[Header, ...]
    weight_map: dict[str, str] | None  # the index's {tensor: shard}, None for a single model.safetensors

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(h.path for h in self.headers)

    def tensors(self) -> dict[str, dict]:
        """{name: header entry} over all files (names are unique across files; read_checkpoint checked)."""
        return {name: info for h in self.headers for name, info in h.tensors.items()}


def _inside(folder: Path, entry: str, index: Path) -> Path:
    """folder/entry, refused unless it names a file inside the folder (a symlink included)."""
    rel = PurePosixPath(entry)
    if not entry or rel.is_absolute() or ".." in rel.parts or "\\" in entry or entry.startswith("~"):
        raise CheckpointError(f"{index} lists shard {entry!r}, which is not a file name inside {folder}; an index "
                              "names its shards relative to its own folder (model-00001-of-00004.safetensors)")
    path = folder / rel
    real, root = path.resolve(), folder.resolve()
    allowed = [root]
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        allowed.append(root.parent.parent / "blobs")  # a Hugging Face cache snapshot links its files to ../../blobs
    if not any(real.is_relative_to(a) for a in allowed):
        raise CheckpointError(f"{index} lists shard {entry!r}, a symlink to {real}, outside the checkpoint folder "
                              f"{folder}; copy the shard into the folder instead of linking it")
    return path


def read_index(folder: Path) -> dict[str, str]:
    """The index's weight_map {tensor: shard}, every entry checked to lie inside `folder`."""
    index = folder / INDEX
    data = read_json(index, CheckpointError)
    weight_map = expect(data.get("weight_map"), dict, index, "weight_map", CheckpointError)
    if "metadata" in data:
        metadata = expect(data["metadata"], dict, index, "metadata", CheckpointError)
        if "total_size" in metadata:
            expect(metadata["total_size"], (int, float), index, "metadata.total_size", CheckpointError)
    for name, shard in weight_map.items():
        expect(shard, str, index, f"weight_map[{name!r}]", CheckpointError)
    for shard in sorted(set(weight_map.values())):
        _inside(folder, shard, index)
    return weight_map


def checkpoint_files(folder: str | Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a folder, and the index's weight_map (None for a single file); no file opened but
    the index."""
    folder = local_path(folder, "checkpoint folder", CheckpointError)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist; pass the folder holding "
                                      f"config.json and {SINGLE} (or the shards and {INDEX})")
    if (folder / INDEX).is_file():
        weight_map = read_index(folder)
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CheckpointNotFoundError(f"{folder / INDEX} lists shard file(s) {missing} that are not in "
                                          f"{folder}; download all shards of the checkpoint")
        return [folder / f for f in files], weight_map
    if (folder / SINGLE).is_file():
        return [folder / SINGLE], None
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    raise CheckpointNotFoundError(f"{folder} has neither {SINGLE} nor {INDEX} (safetensors files there: {found}); "
                                  "a sharded checkpoint needs its index file")


def read_checkpoint(folder: str | Path) -> Checkpoint:
    """The checked weight files of a checkpoint folder (headers only, no tensor data)."""
    folder = local_path(folder, "checkpoint folder", CheckpointError)
    files, weight_map = checkpoint_files(folder)
    headers = tuple(read_header(p) for p in files)
    seen: dict[str, str] = {}  # name -> file it is in
    for h in headers:
        for name in h.tensors:
            if name in seen:
                raise CheckpointError(f"tensor {name!r} is in both {seen[name]} and {h.path.name} of {folder}; the "
                                      "checkpoint holds it twice")
            seen[name] = h.path.name
            if weight_map is not None and weight_map.get(name) != h.path.name:
                raise CheckpointError(f"tensor {name!r} in {h.path}: the index says it lives in "
                                      f"{weight_map.get(name)}; the index and the shards disagree, re-download them")
    if weight_map is not None:
        absent = sorted(k for k in weight_map if k not in seen)
        if absent:
            raise CheckpointError(f"{folder / INDEX} says {absent[:5]} are in {weight_map[absent[0]]}, but that "
                                  "file does not hold them; re-download the shard")
    return Checkpoint(folder, headers, weight_map)


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else bool(progress)


def iter_checkpoint(folder: str | Path | Checkpoint, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu", mmap: bool = True,
                    progress: bool | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) for every tensor of a checkpoint folder, one at a time, in file order.

    Everything about the folder is checked before the first tensor is read (`read_checkpoint`). Floating tensors
    come as `dtype` (None: as stored); integer and bool tensors (packed quantized weights) always as stored. On the
    CPU in the stored dtype, `mmap=True` yields views of the memory-mapped files (copy-on-write; see `weights.load`);
    anything else is read into a fresh tensor on `device` through one 64 MiB staging buffer. `progress` prints one
    line per shard to stderr: True, False, or None (the default) for "when stderr is a terminal".

    The folder, the device and the dtype are checked when this is called; the tensors are read as the caller
    iterates. A consumer that keeps only what it needs of each tensor (a quantizer keeping int8 codes) therefore
    peaks at what it keeps plus one tensor."""
    ckpt = folder if isinstance(folder, Checkpoint) else read_checkpoint(folder)
    device = resolve_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CheckpointError(f"dtype={dtype!r}: iter_checkpoint converts floating tensors only; pass a floating "
                              "torch.dtype or None")
    return _stream(ckpt, dtype, TensorReader(device, mmap), _show_progress(progress) and len(ckpt.headers) > 1)


def _stream(ckpt: Checkpoint, dtype: torch.dtype | None, reader: TensorReader,
            show: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """The generator behind iter_checkpoint (which checks everything first, so errors come at the call)."""
    start = time.perf_counter()
    for k, header in enumerate(ckpt.headers, 1):
        if show:
            nbytes = sum(i["data_offsets"][1] - i["data_offsets"][0] for i in header.tensors.values())
            print(f"minglm4v: loading shard {k}/{len(ckpt.headers)} {header.path.name} ({nbytes / 1e9:.2f} GB, "
                  f"{len(header.tensors)} tensors, {time.perf_counter() - start:.1f} s so far)", file=sys.stderr,
                  flush=True)
        with open(header.path, "rb", buffering=0) as fh:
            reader.open(fh)
            for name, info in header.tensors.items():
                want = dtype if dtype is not None and info["dtype"] in FLOATING else DTYPES[info["dtype"]]
                yield name, reader.read(fh, header.data_start + info["data_offsets"][0], info, want,
                                        f"tensor {name!r} in {header.path}")
