"""The files that ship with minglm4v: the default checkpoint (the tiny trained GLM-4.1V) and the demo pictures.

In a source checkout they are the repository's `data/` folder. In an installed wheel the same folder is package data,
`minglm4v/data/` (pyproject.toml maps `data/` onto the package `minglm4v.data`, so git holds one copy), found with
`importlib.resources`. Every caller asks here, so `python -m minglm4v demo` works from any directory either way:

    data_dir()            the folder holding them
    default_checkpoint()  data/tiny-glm4v, the 1.1 M-parameter model of chapter 08
    shipped("scene.png")  one shipped file, by name

No shapes here.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import ShippedDataError

CHECKPOINT_NAME = "tiny-glm4v"


def data_dir() -> Path:
    """The shipped data folder: minglm4v/data in an installed wheel, else the checkout's data/ beside the package."""
    packaged = files("minglm4v").joinpath("data")
    # An installed (unzipped) wheel: a real folder. importlib.resources hands back a pathlib.Path for it.
    if isinstance(packaged, Path) and (packaged / CHECKPOINT_NAME).is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "data"


def shipped(name: str) -> Path:
    """The path of a file (or folder) shipped in data/, e.g. "scene.png"; a clear error when it is missing."""
    path = data_dir() / name
    if not path.exists():
        raise ShippedDataError(f"{name} is not in minglm4v's data folder ({data_dir()}): the installation is "
                               "incomplete; reinstall minglm4v (the wheel ships data/) or pass your own path")
    return path


def default_checkpoint() -> Path:
    """data/tiny-glm4v: the checkpoint `demo` and `generate` use when no --model is given."""
    return shipped(CHECKPOINT_NAME)
