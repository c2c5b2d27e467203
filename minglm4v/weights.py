"""Load and save GLM-4.1V checkpoints: the folder layout transformers writes and the 9B model is published in.

Mirrors what transformers' `from_pretrained` / `save_pretrained` do for `Glm4vForConditionalGeneration` (docs/glm41v.md §8),
strictly: a folder holds `config.json` and either `model.safetensors` or shards `model-0000k-of-0000n.safetensors`
listed in `model.safetensors.index.json` = {"metadata": {"total_size": bytes}, "weight_map": {name: shard}}.

A safetensors file is simple enough to read by hand, which is what keeps loading lean:

    [8 bytes: n, little-endian] [n bytes: JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}}] [raw data]

Loading builds the model on the meta device (no memory), then, per tensor, checks the name, the shard the index
promised, the shape and the dtype, and places the bytes without an intermediate state dict:
  * CPU, stored dtype: the parameter is a view of the memory-mapped file (copy-on-write), read on first use, one
    copy shared with the page cache (or, with `mmap=False`, a `torch.empty` filled by `readinto`);
  * another device or a dtype conversion: `torch.empty` on the target, filled through one 64 MiB staging buffer a
    slice at a time.
So the process holds the weights once: peak memory is the checkpoint's bytes (plus that buffer) on the CPU, or just
the buffer when loading onto a GPU. Any unknown, duplicate, missing or mis-shaped tensor raises `CheckpointError` naming
the tensor and file, so a half-loaded model is never returned. The checkpoint's dtype is kept (bf16 stays bf16)
unless `dtype` is given. Parameter names need no renaming: the module tree (model.py) uses the checkpoint names.

`find_checkpoint` looks for the real 9B checkpoint (an environment variable, then the Hugging Face cache; a
download only when asked for), and `weight_bytes` is the memory the weights need.

Shapes: the checkpoint's, e.g. embed_tokens (V, C).
"""

from __future__ import annotations

import json
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .config import Glm4vConfig
from .errors import CheckpointError, CheckpointNotFoundError, DeviceError
from .model import Glm4vForConditionalGeneration

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
STAGING_BYTES = 64 << 20  # the staging buffer for device copies and dtype conversions


@dataclass(frozen=True)
class LoadReport:
    """What `load` read: counted, so a caller (or a test) can see nothing was skipped."""
    files: tuple[str, ...]  # safetensors files, in reading order
    tensors: int  # tensors assigned (= len(state_dict()))
    parameters: int  # numbers in them
    dtype: torch.dtype  # dtype of the loaded model
    bytes_read: int = 0  # tensor bytes read from the files


def build(config: Glm4vConfig, device: str | torch.device = "meta") -> Glm4vForConditionalGeneration:
    """An un-initialised model; on "meta" it takes no memory (names and shapes only)."""
    with torch.device(device):
        return Glm4vForConditionalGeneration(config)


def weight_bytes(config: Glm4vConfig, dtype: torch.dtype = torch.bfloat16) -> tuple[int, int]:
    """(parameters, bytes) of the model's weights in `dtype`, counted on the meta device (no memory)."""
    n = sum(p.numel() for p in build(config, "meta").parameters())
    return n, n * torch.empty((), dtype=dtype).element_size()


def check_device(device: str | torch.device) -> torch.device:
    """torch.device(device), refusing a GPU this machine does not have (rather than failing deep in a copy)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:0'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={str(device)!r} asks for a CUDA GPU, but torch sees none (torch "
                              f"{torch.__version__}, built with CUDA: {torch.version.cuda is not None}); "
                              "load on 'cpu', or run on a machine with a GPU and a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device={str(device)!r} asks for Apple's MPS, which this machine does not have")
    elif dev.type == "meta":
        raise DeviceError("device='meta' holds no data; use weights.build(config) for a model without weights")
    return dev


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


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """({name: {"dtype", "shape", "data_offsets"}}, byte where the data starts) of one safetensors file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if size < 8 or n > size - 8:
            raise CheckpointError(f"{path} is not a safetensors file (header of {n} bytes in a file of {size}); "
                                  "the download is truncated or the file is something else")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: the safetensors header is not JSON ({e}); re-download the file") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object; re-download the file")
    header.pop("__metadata__", None)
    start = 8 + n
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise CheckpointError(f"tensor {name!r} in {path} is stored as "
                                  f"{info.get('dtype') if isinstance(info, dict) else info!r}; GLM-4.1V weights are "
                                  f"floating point ({sorted(_DTYPES)})")
        try:
            a, b = (int(x) for x in info["data_offsets"])
            numel = 1
            for d in info["shape"]:
                numel *= int(d)
            itemsize = torch.empty((), dtype=_DTYPES[info["dtype"]]).element_size()
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"tensor {name!r} in {path}: malformed header entry {info!r} ({e!r})") from None
        if not 0 <= a <= b <= size - start or b - a != numel * itemsize:
            raise CheckpointError(f"tensor {name!r} in {path}: bytes [{a}, {b}) do not fit its shape {info['shape']} "
                                  f"({info['dtype']}) or the file's {size - start} data bytes; re-download the file")
    return header, start


def _stored_dtype(headers: dict[Path, dict]) -> torch.dtype:
    """The one floating dtype all tensors are stored in (from the headers, no tensor data)."""
    seen = {}
    for path, header in headers.items():
        for name, info in header.items():
            seen.setdefault(info["dtype"], (name, path.name))
    bad = {k: v for k, v in seen.items() if k not in _DTYPES}
    if bad:
        raise CheckpointError(f"tensors stored as {sorted(bad)} (e.g. {list(bad.values())[0]}); GLM-4.1V weights "
                              f"are floating point ({sorted(_DTYPES)})")
    if len(seen) > 1:
        raise CheckpointError(f"the checkpoint mixes dtypes {sorted(seen)} (e.g. {seen}); pass dtype= to load() "
                              "to choose the dtype of the model")
    return _DTYPES[next(iter(seen))] if seen else torch.float32


def _read_exact(fh, buf: memoryview, where: str) -> None:
    """Fill buf from the file (one read may return less than asked, e.g. above 2 GiB on Linux)."""
    done = 0
    while done < len(buf):
        got = fh.readinto(buf[done:])
        if not got:
            raise CheckpointError(f"{where}: the file ended early; re-download it")
        done += got


class _Reader:
    """Reads tensors from an open safetensors file into tensors allocated on the target device and dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype, use_mmap: bool):
        self.device, self.dtype, self.use_mmap = device, dtype, use_mmap and device.type == "cpu"
        self.map = None  # the current file, memory-mapped copy-on-write (when use_mmap)
        self.staging = torch.empty(STAGING_BYTES, dtype=torch.uint8)
        if device.type == "cuda":
            self.staging = self.staging.pin_memory()  # page-locked: the copy to the GPU needs no extra bounce

    def open(self, fh) -> None:
        self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) if self.use_mmap else None

    def read(self, fh, offset: int, info: dict, where: str) -> torch.Tensor:
        stored = _DTYPES[info["dtype"]]
        nbytes = info["data_offsets"][1] - info["data_offsets"][0]
        if self.map is not None and stored == self.dtype and nbytes and offset % stored.itemsize == 0:
            # the tensor *is* the file's pages (copy-on-write): no copy, read from disk on first use, and the page
            # cache and the process share one copy of the weights. The tensor keeps the mapping alive.
            raw = torch.frombuffer(self.map, dtype=torch.uint8, count=nbytes, offset=offset)
            return raw.view(stored).view(info["shape"])
        out = torch.empty(info["shape"], dtype=self.dtype, device=self.device)
        fh.seek(offset)
        if self.device.type == "cpu" and stored == self.dtype:  # the bytes land in place
            if out.numel():
                _read_exact(fh, memoryview(out.view(-1).view(torch.uint8).numpy()), where)
            return out
        flat = out.view(-1)  # (numel,): filled a slice at a time, converted by copy_
        size = stored.itemsize
        step = STAGING_BYTES // size  # elements per slice
        for e0 in range(0, flat.numel(), step):
            e1 = min(e0 + step, flat.numel())
            chunk = self.staging[:(e1 - e0) * size]
            _read_exact(fh, memoryview(chunk.numpy()), where)
            flat[e0:e1].copy_(chunk.view(stored))
        return out


def load_state(model: nn.Module, folder: str | Path, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu", mmap: bool = True) -> LoadReport:
    """Fill a (meta) model from a checkpoint folder, strictly, one tensor at a time. Returns the count."""
    folder = Path(folder)
    device = check_device(device)
    files, weight_map = checkpoint_files(folder)
    headers = {path: read_header(path) for path in files}
    dtype = compute_dtype(dtype) or _stored_dtype({p: h for p, (h, _) in headers.items()})
    expected = dict(model.state_dict(keep_vars=True))  # name -> meta tensor (shapes only)
    loaded: dict[str, str] = {}  # name -> file it came from
    n_params = n_bytes = 0
    reader = _Reader(device, dtype, mmap)
    for path in files:
        header, start = headers[path]
        names = sorted(header, key=lambda k: header[k]["data_offsets"][0])  # file order: sequential reads
        if weight_map is not None:
            promised = {k for k, v in weight_map.items() if v == path.name}
            if promised - set(names):
                raise CheckpointError(f"{folder / INDEX} says {sorted(promised - set(names))[:5]} are in "
                                      f"{path.name}, but that file does not hold them; re-download the shard")
        with open(path, "rb", buffering=0) as fh:
            reader.open(fh)
            for name in names:
                info = header[name]
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
                shape = tuple(info["shape"])
                want = tuple(expected[name].shape)
                if shape != want:
                    raise CheckpointError(f"{where} has shape {list(shape)} but the model built from config.json "
                                          f"expects {list(want)}; config.json and the weights do not belong together")
                tensor = reader.read(fh, start + info["data_offsets"][0], info, where)
                _assign(model, name, tensor)
                loaded[name] = path.name
                n_params += tensor.numel()
                n_bytes += info["data_offsets"][1] - info["data_offsets"][0]
    missing = [k for k in expected if k not in loaded]
    if missing:
        raise CheckpointError(f"{len(missing)} tensor(s) of the model are not in {folder} (files "
                              f"{[p.name for p in files]}), e.g. {missing[:5]}; the checkpoint is incomplete or "
                              "belongs to a different config")
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:  # a non-persistent buffer built on meta: a bug in the model code, not in the checkpoint
        raise CheckpointError(f"after loading, {left[:5]} are still on the meta device; compute them on the fly")
    return LoadReport(tuple(p.name for p in files), len(loaded), n_params, dtype, n_bytes)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace the meta parameter `name` with `tensor` (no copy)."""
    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner)
    if leaf in module._parameters:
        setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))
    else:
        module._buffers[leaf] = tensor


def load(path: str | Path, dtype: torch.dtype | None = None,
         device: str | torch.device = "cpu", mmap: bool = True) -> Glm4vForConditionalGeneration:
    """Load a GLM-4.1V checkpoint folder onto `device`, in the stored dtype unless `dtype` is given.

    Each tensor is read from disk straight into its place on `device` ("cuda" loads the 9B model onto the GPU
    without a CPU copy of the weights). On the CPU, in the stored dtype, `mmap=True` makes the parameters views of
    the memory-mapped files (copy-on-write): loading is nearly instant and the weights are read on first use;
    `mmap=False` reads them into memory the process owns. The model is in eval mode with `requires_grad=False` parameters
    (inference; call `.requires_grad_()` to train); `model.config` is its config and `model.load_report` says how
    many tensors, parameters and bytes were read from which files."""
    folder = Path(path)
    check_device(device)
    dtype = compute_dtype(dtype)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {folder} does not exist; pass the folder holding "
                                      f"config.json and {SINGLE} (or the shards and {INDEX})")
    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(f"{folder / 'config.json'} not found: a checkpoint folder needs its "
                                      "config.json next to the safetensors files")
    model = build(Glm4vConfig.from_pretrained(folder), "meta")
    model.load_report = load_state(model, folder, dtype=dtype, device=device, mmap=mmap)
    return model.eval()


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(dtype) -> torch.dtype | None:
    """None (keep the stored dtype), a floating torch.dtype, or its name ("bfloat16", "torch.float32", ...)."""
    if dtype is None:
        return None
    name = str(dtype).removeprefix("torch.")
    if name not in COMPUTE_DTYPES:
        raise CheckpointError(f"dtype={dtype!r}: GLM-4.1V runs in {', '.join(COMPUTE_DTYPES)} (or None to keep the "
                              "checkpoint's own dtype, bfloat16 for the published weights)")
    return COMPUTE_DTYPES[name]


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


# ---------------------------------------------------------------------------------------------- the real 9B model

ENV_VARS = ("MINGLM4V_9B", "GLM41V_PATH")  # a checkpoint folder, checked in this order
HUB_REPOS = ("zai-org/GLM-4.1V-9B-Thinking", "THUDM/GLM-4.1V-9B-Thinking")  # the current name, then the old one
DOWNLOAD_VAR = "MINGLM4V_DOWNLOAD"  # set to 1 to let find_checkpoint download (about 20.6 GB)


def hub_cache(environ=None) -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _complete(folder: Path) -> str | None:
    """None when `folder` is a loadable checkpoint folder, else why not."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    try:
        checkpoint_files(folder)
    except CheckpointError as e:
        return str(e)
    return None


def _snapshots(cache: Path, repo: str) -> list[Path]:
    """Snapshot folders of `repo` in the cache, the one refs/main points at first, then newest first."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snaps = sorted((p for p in (root / "snapshots").glob("*") if p.is_dir()), key=lambda p: -p.stat().st_mtime)
    main = root / "refs" / "main"
    if main.is_file():
        head = main.read_text().strip()
        snaps.sort(key=lambda p: p.name != head)
    return snaps


def find_checkpoint(environ=None) -> tuple[Path | None, str]:
    """(folder, how it was found) of the GLM-4.1V-9B-Thinking checkpoint, or (None, why none was found).

    Looks, in order, at the environment variables MINGLM4V_9B and GLM41V_PATH (a folder that must exist: a path
    that does not is an error, not a silent fallback), then the Hugging Face cache for zai-org/ and
    THUDM/GLM-4.1V-9B-Thinking (complete snapshots only). Downloads only when MINGLM4V_DOWNLOAD=1, with
    huggingface_hub, which is imported only then."""
    env = os.environ if environ is None else environ
    for var in ENV_VARS:
        if env.get(var):
            folder = Path(env[var]).expanduser()
            why = _complete(folder) if folder.is_dir() else "the folder does not exist"
            if why:
                raise CheckpointNotFoundError(f"{var}={env[var]} is not a usable checkpoint folder ({why}); point "
                                              "it at the folder holding config.json and the safetensors shards, "
                                              f"or unset {var}")
            return folder, f"from ${var}"
    cache = hub_cache(env)
    partial = []
    for repo in HUB_REPOS:
        for snap in _snapshots(cache, repo):
            why = _complete(snap)
            if why is None:
                return snap, f"from the Hugging Face cache ({repo})"
            partial.append(f"{snap} ({why})")
    if env.get(DOWNLOAD_VAR) == "1":
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise CheckpointNotFoundError(f"{DOWNLOAD_VAR}=1 asks for a download, but huggingface_hub is not "
                                          "installed: pip install huggingface_hub") from None
        folder = Path(snapshot_download(HUB_REPOS[0], cache_dir=str(cache)))
        return folder, f"downloaded from the Hugging Face Hub ({HUB_REPOS[0]})"
    reason = (f"no GLM-4.1V-9B checkpoint found (set {ENV_VARS[0]}=/path/to/GLM-4.1V-9B-Thinking, or put it in "
              f"the Hugging Face cache {cache}, or set {DOWNLOAD_VAR}=1 to download about 20.6 GB)")
    if partial:
        reason += "; incomplete snapshots: " + "; ".join(partial)
    return None, reason
