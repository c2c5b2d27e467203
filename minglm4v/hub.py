"""Checkpoints by name: Hugging Face Hub ids through the local cache, and the real 9B model wherever it is.

The Hugging Face cache (huggingface_hub's layout, docs/glm41v.md §8) keeps a repo `owner/name` as

    <cache>/models--owner--name/refs/main                  the commit hash that `main` pointed at when downloaded
    <cache>/models--owner--name/snapshots/<hash>/<files>   one folder per downloaded commit (links into ../../blobs)

`resolve_checkpoint` turns what a user passed to `load` into a local folder: an existing path is used as it is;
a string like "zai-org/GLM-4.1V-9B-Thinking" that is not a local path is looked up in the cache (the snapshot
refs/main names first, then the newest complete one). Nothing is downloaded unless the caller opts in with
`allow_download=True` and huggingface_hub is installed (imported only then). `find_checkpoint` looks for the 9B
model (environment variables, then the cache) for chapter 09 and the benchmarks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .checkpoint import checkpoint_files
from .errors import CheckpointError, CheckpointNotFoundError
from .paths import local_path, url_scheme

ENV_VARS = ("MINGLM4V_9B", "GLM41V_PATH")  # a checkpoint folder, checked in this order
HUB_REPOS = ("zai-org/GLM-4.1V-9B-Thinking", "THUDM/GLM-4.1V-9B-Thinking")  # the current name, then the old one
DOWNLOAD_VAR = "MINGLM4V_DOWNLOAD"  # set to 1 to let find_checkpoint download (about 20.6 GB)

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")


def hub_cache(environ=None) -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    env = os.environ if environ is None else environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_hub_id(value) -> bool:
    """True for a string shaped like a Hub model id, `owner/name` (letters, digits, `_ . -`; no `--` or `..`)."""
    return (isinstance(value, str) and _HUB_ID.fullmatch(value) is not None and "--" not in value
            and ".." not in value and not value.endswith((".", "-")) and "-/" not in value and "./" not in value)


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
        head = main.read_text(errors="replace").strip()
        snaps.sort(key=lambda p: p.name != head)
    return snaps


def cached_snapshot(repo: str, environ=None) -> tuple[Path | None, list[str]]:
    """(the first complete snapshot of `repo` in the cache or None, why each other snapshot could not be used)."""
    partial = []
    for snap in _snapshots(hub_cache(environ), repo):
        why = _complete(snap)
        if why is None:
            return snap, partial
        partial.append(f"{snap} ({why})")
    return None, partial


def _download(repo: str, cache: Path, why: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointNotFoundError(f"{why} asks for a download of {repo}, but huggingface_hub is not "
                                      "installed: pip install huggingface_hub") from None
    return Path(snapshot_download(repo, cache_dir=str(cache)))


def resolve_checkpoint(path, allow_download: bool = False, environ=None) -> Path:
    """The local folder for what a user passed as a checkpoint: a path (str, Path, file:// URL) or a Hub id.

    A remote URL raises CheckpointError. A string that is not an existing local path but looks like `owner/name`
    is found in the Hugging Face cache; when it is not there, CheckpointNotFoundError says how to download it, and
    with `allow_download=True` (and huggingface_hub installed) it is downloaded into the cache instead."""
    folder = local_path(path, "checkpoint", CheckpointError)
    if not isinstance(path, str) or url_scheme(path) == "file" or folder.exists() or not is_hub_id(path):
        return folder
    snap, partial = cached_snapshot(path, environ)
    if snap is not None:
        return snap
    cache = hub_cache(environ)
    if allow_download:
        return _download(path, cache, "allow_download=True")
    message = (f"{path!r} is neither a folder here ({Path.cwd()}) nor a model in the Hugging Face cache {cache}. "
               f"If it is a Hub id, download it first (`hf download {path}`, or huggingface_hub.snapshot_download"
               f"({path!r})), or pass allow_download=True to let minglm4v download it with huggingface_hub")
    if partial:
        message += "; incomplete snapshots: " + "; ".join(partial)
    raise CheckpointNotFoundError(message)


def find_checkpoint(environ=None) -> tuple[Path | None, str]:
    """(folder, how it was found) of the GLM-4.1V-9B-Thinking checkpoint, or (None, why none was found).

    Looks, in order, at the environment variables MINGLM4V_9B and GLM41V_PATH (a folder that must exist: a path
    that does not is an error, not a silent fallback), then the Hugging Face cache for zai-org/ and
    THUDM/GLM-4.1V-9B-Thinking (complete snapshots only). Downloads only when MINGLM4V_DOWNLOAD=1, with
    huggingface_hub, which is imported only then."""
    env = os.environ if environ is None else environ
    for var in ENV_VARS:
        if env.get(var):
            folder = local_path(env[var], f"${var}", CheckpointNotFoundError).expanduser()
            why = _complete(folder) if folder.is_dir() else "the folder does not exist"
            if why:
                raise CheckpointNotFoundError(f"{var}={env[var]} is not a usable checkpoint folder ({why}); point "
                                              "it at the folder holding config.json and the safetensors shards, "
                                              f"or unset {var}")
            return folder, f"from ${var}"
    cache = hub_cache(env)
    partial = []
    for repo in HUB_REPOS:
        snap, why = cached_snapshot(repo, env)
        if snap is not None:
            return snap, f"from the Hugging Face cache ({repo})"
        partial += why
    if env.get(DOWNLOAD_VAR) == "1":
        folder = _download(HUB_REPOS[0], cache, f"{DOWNLOAD_VAR}=1")
        return folder, f"downloaded from the Hugging Face Hub ({HUB_REPOS[0]})"
    reason = (f"no GLM-4.1V-9B checkpoint found (set {ENV_VARS[0]}=/path/to/GLM-4.1V-9B-Thinking, or put it in "
              f"the Hugging Face cache {cache}, or set {DOWNLOAD_VAR}=1 to download about 20.6 GB)")
    if partial:
        reason += "; incomplete snapshots: " + "; ".join(partial)
    return None, reason
