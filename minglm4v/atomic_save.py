"""Saving over a checkpoint folder without ever losing it: write aside, swap in, remove only what we wrote before.

`replace_checkpoint(folder, write)` lets `write(tmp)` fill a fresh temporary folder inside `folder` (same file
system, so moving a file in is a rename: it needs no space and cannot fail halfway). Every file is flushed to disk,
then renamed over its old name: the weight files first, the index next, config.json last. Only then are the files
the previous save wrote and this one did not write removed: the shards its `model.safetensors.index.json` lists
and the index, or its lone `model.safetensors`. Any other file (`model_ema.safetensors`, a tokenizer, notes) is never
touched. An exception or a full disk while writing removes the temporary folder and leaves the old checkpoint
byte for byte as it was; a process killed while writing leaves a `.minglm4v-save-*` folder that can be deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .checkpoint import INDEX, SINGLE, read_index
from .errors import CheckpointError

TMP_PREFIX = ".minglm4v-save-"


def previous_save(folder: Path) -> list[str]:
    """The weight files (and index) a previous save left in `folder`, as names inside it."""
    if (folder / INDEX).is_file():
        try:
            weight_map = read_index(folder)  # refuses entries outside the folder: they are never deleted
        except CheckpointError as e:
            raise CheckpointError(f"cannot save over {folder}: its {INDEX} cannot be read ({e}), so which shards "
                                  "it owns is unknown. Move the old checkpoint away, or save into a new folder") \
                from None
        return sorted(set(weight_map.values())) + [INDEX]
    if (folder / SINGLE).is_file():
        return [SINGLE]
    return []


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_checkpoint(folder: Path, write: Callable[[Path], list[str]]) -> list[Path]:
    """Run `write(tmp)` (it returns the names it wrote, config.json among them), then swap them into `folder`."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"cannot save into {folder}: it is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    old = previous_save(folder)  # before anything is written: a folder we cannot read is refused untouched
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=folder))
    try:
        names = write(tmp)
        for name in names:
            _fsync(tmp / name)
    except OSError as e:  # a full disk, a file-size limit, a read-only folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the checkpoint into {folder} ({e}); the files there are "
                              "unchanged") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in [n for n in names if n not in (INDEX, "config.json")]:
        os.replace(tmp / name, folder / name)
    if INDEX in names:
        os.replace(tmp / INDEX, folder / INDEX)
    elif INDEX in old:  # now a single file: the old index must not keep pointing at the old shards
        (folder / INDEX).unlink()
    os.replace(tmp / "config.json", folder / "config.json")
    for name in old:
        if name not in names and name != INDEX and (folder / name).is_file():
            (folder / name).unlink()
    tmp.rmdir()
    try:
        _fsync(folder)
    except OSError:  # some file systems cannot sync a folder; the files themselves are synced
        pass
    return [folder / n for n in names]
