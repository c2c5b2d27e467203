"""One safetensors file, read by hand: its header checked as the format specifies, then its tensors' bytes.

The format (huggingface/safetensors, README "Format"; docs/glm41v.md §8):

    [8 bytes: n, unsigned little-endian] [n bytes: a UTF-8 JSON object, the header] [the data buffer]
    header = {name: {"dtype": "BF16", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
              "__metadata__": {str: str}  (optional)}

`data_offsets` count from the start of the data buffer; the tensors tile it exactly, in order, with no gap and
no overlap, and `end - begin = prod(shape) * itemsize(dtype)`. `read_header` checks every one of these rules (and
a cap on n, duplicate names, JSON nesting) and names the file and the tensor when one is broken, so two
parameters can never share bytes and a forged header cannot make the reader allocate or seek wildly.

`TensorReader` places a tensor's bytes on the target device and dtype: on the CPU in the stored dtype the tensor is a
view of the memory-mapped file (copy-on-write); otherwise a `torch.empty` on the target filled through one 64 MiB
staging buffer, a slice at a time. Only safetensors files are read: no code can run while loading.

Shapes: as stored in the file.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError
from .jsonfile import _no_duplicates

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own cap; the 9B shards' headers are ~100 kB
STAGING_BYTES = 64 << 20  # the staging buffer for device copies and dtype conversions

# The format's dtype names that torch can hold. Floating ones are model weights; the integer ones appear in
# quantized checkpoints (packed weights) and are passed through as stored.
DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: tensors in file order, where the data starts, and the metadata."""
    path: Path
    tensors: dict[str, dict]  # name -> {"dtype", "shape", "data_offsets"}, sorted by offset
    data_start: int  # 8 + n: the file offset of the data buffer
    metadata: dict[str, str]


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(path: str | Path) -> Header:
    """The header of one safetensors file, every rule of the format checked; CheckpointError names the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if size < 8 or n > size - 8:
            raise CheckpointError(f"{path} is not a safetensors file (header of {n} bytes in a file of {size}); "
                                  "the download is truncated or the file is something else")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: the safetensors header declares {n:,} bytes, more than the format "
                                  f"allows ({MAX_HEADER_BYTES:,}); the file is not a checkpoint shard")
        raw = fh.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: the safetensors header is not UTF-8 (byte {e.start}); re-download the "
                              "file") from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:  # the C decoder refuses nesting deeper than the interpreter's recursion limit
        raise CheckpointError(f"{path}: the safetensors header nests JSON thousands of levels deep; a real "
                              "header nests 3 deep, so this is not a checkpoint shard") from None
    except ValueError as e:  # not JSON, or a name that appears twice
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e}); re-download the "
                              "file") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object; re-download the file")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: the header's __metadata__ must map strings to strings, got "
                              f"{metadata!r:.80}")
    data_bytes = size - 8 - n
    for name, info in header.items():
        _check_entry(path, name, info, data_bytes)
    ordered = sorted(header, key=lambda k: tuple(header[k]["data_offsets"]))
    at = 0  # the tensors must tile the data buffer: each begins where the previous ended
    for name in ordered:
        begin, end = header[name]["data_offsets"]
        if begin != at:
            what = "overlaps the tensor before it" if begin < at else f"leaves bytes [{at}, {begin}) unused"
            raise CheckpointError(f"tensor {name!r} in {path}: its bytes [{begin}, {end}) {what}; the format "
                                  "stores tensors back to back, so the header is forged or corrupt")
        at = end
    if at != data_bytes:
        raise CheckpointError(f"{path}: the tensors cover {at} data bytes but the file has {data_bytes}; "
                              "the header and the data do not fit together, re-download the file")
    return Header(path, {k: header[k] for k in ordered}, 8 + n, dict(metadata))


def _check_entry(path: Path, name: str, info, data_bytes: int) -> None:
    where = f"tensor {name!r} in {path}"
    if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
        got = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise CheckpointError(f"{where}: a header entry holds exactly {sorted(_ENTRY_KEYS)}, got {got}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where} is stored as {dtype!r:.40}, not a safetensors dtype torch can hold "
                              f"({', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {shape!r:.80} must be a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(x) for x in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets {offsets!r:.80} must be two integers 0 <= begin <= end")
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes or offsets[1] > data_bytes:
        raise CheckpointError(f"{where}: bytes {offsets} do not fit its shape {shape} ({dtype}, {nbytes} bytes) "
                              f"or the file's {data_bytes} data bytes; re-download the file")


def _read_exact(fh, buf: memoryview, where: str) -> None:
    """Fill buf from the file (one read may return less than asked, e.g. above 2 GiB on Linux)."""
    done = 0
    while done < len(buf):
        got = fh.readinto(buf[done:])
        if not got:
            raise CheckpointError(f"{where}: the file ended early; re-download it")
        done += got


class TensorReader:
    """Reads tensors of open safetensors files into tensors on `device`; one staging buffer for all of them."""

    def __init__(self, device: torch.device, use_mmap: bool):
        self.device, self.use_mmap = device, use_mmap and device.type == "cpu"
        self.map = None  # the current file, memory-mapped copy-on-write (when use_mmap)
        self.staging = torch.empty(STAGING_BYTES, dtype=torch.uint8)
        if device.type == "cuda":
            self.staging = self.staging.pin_memory()  # page-locked: the copy to the GPU needs no extra bounce

    def open(self, fh) -> None:
        self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if self.use_mmap else None

    def read(self, fh, offset: int, info: dict, dtype: torch.dtype, where: str) -> torch.Tensor:
        """The tensor whose bytes start at file `offset`, as `dtype` on the reader's device."""
        stored = DTYPES[info["dtype"]]
        nbytes = info["data_offsets"][1] - info["data_offsets"][0]
        if self.map is not None and stored == dtype and nbytes and offset % stored.itemsize == 0:
            # the tensor *is* the file's pages (copy-on-write): no copy, read from disk on first use, and the page
            # cache and the process share one copy of the weights. The tensor keeps the mapping alive.
            raw = torch.frombuffer(self.map, dtype=torch.uint8, count=nbytes, offset=offset)
            return raw.view(stored).view(info["shape"])
        out = torch.empty(info["shape"], dtype=dtype, device=self.device)
        fh.seek(offset)
        if self.device.type == "cpu" and stored == dtype:  # the bytes land in place
            if out.numel():
                _read_exact(fh, memoryview(out.view(-1).view(torch.uint8).numpy()), where)
            return out
        flat = out.view(-1)  # (numel,): filled a slice at a time, converted by copy_
        size = stored.itemsize
        step = len(self.staging) // size  # elements per slice
        for e0 in range(0, flat.numel(), step):
            e1 = min(e0 + step, flat.numel())
            chunk = self.staging[:(e1 - e0) * size]
            _read_exact(fh, memoryview(chunk.numpy()), where)
            flat[e0:e1].copy_(chunk.view(stored))
        return out
