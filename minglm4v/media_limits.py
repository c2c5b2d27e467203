"""The size limits every image and video route shares, checked from sizes alone, before the big allocation.

An image file, a PIL image, an array, a tensor, a list of frames, a video file and a grid all meet the same limits:

* `MAX_DECODE_PIXELS` (PIL's decompression-bomb limit, 179 M pixels, <= 537 MB as RGB) for one picture: an image
  or one frame of a video. Files are checked from their header, in-memory pictures from their size, before any
  conversion.
* `MAX_CLIP_PIXELS` for the frames of one clip held at full size at once (kept frames x H x W): 600 frames of
  1920x1080, the 2-fps sample of a five-minute Full-HD clip (3.7 GB as uint8). Frames decoded from a file are
  resized one by one as they are decoded and never meet this limit; frames handed over in memory do.
* `MAX_GRID_PATCHES` for one row (t, h, w) of `image_grid_thw` / `video_grid_thw`: 2^20 patches, which is
  262 144 LLM tokens after the 2x2 merge, four times the 65 536-token context of GLM-4.1V.

Shape legend: t h w the patch grid, H W a picture's height and width in pixels.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

MAX_DECODE_PIXELS = 2 * 89_478_485  # PIL's decompression-bomb limit: larger pictures are refused before decoding
MAX_CLIP_PIXELS = 600 * 1920 * 1080  # kept frames x H x W of one clip held at full size in memory
MAX_GRID_PATCHES = 1 << 20  # t*h*w of one grid row: 262 144 tokens after the 2x2 merge


def check_picture(width: int, height: int, what: str, error: type[Exception]) -> None:
    """Refuse an empty picture or one of more than MAX_DECODE_PIXELS pixels, naming `what` and its real size."""
    if width <= 0 or height <= 0:
        raise error(f"{what} is empty ({width}x{height} pixels, width x height); give a picture with pixels")
    if width * height > MAX_DECODE_PIXELS:
        raise error(f"{what} is {width}x{height} = {width * height:,} pixels, more than minglm4v decodes "
                    f"({MAX_DECODE_PIXELS:,}); downscale it first (the model sees at most a few million pixels "
                    "of it anyway)")


def check_clip(frames: int, width: int, height: int, what: str, error: type[Exception]) -> None:
    """Refuse frames x H x W above MAX_CLIP_PIXELS (and any frame above MAX_DECODE_PIXELS) before they are stacked."""
    check_picture(width, height, f"a frame of {what}", error)
    if frames * width * height > MAX_CLIP_PIXELS:
        raise error(f"{what}: {frames} frames of {width}x{height} are {frames * width * height:,} pixels, more than "
                    f"minglm4v holds for one clip ({MAX_CLIP_PIXELS:,}, 600 frames of 1920x1080); pass fewer or "
                    "smaller frames, or the video file (its frames are resized as they are decoded)")


def _whole(value, what: str, error: type[Exception]) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise error(f"{what} must hold whole numbers (integers), got {value!r:.40} ({type(value).__name__})")
    return int(value)


def check_grid(grid, what: str, error: type[Exception], merge_size: int | None = None) -> list[tuple[int, int, int]]:
    """A grid row (t, h, w) or an (n, 3) table of them -> a list of (t, h, w) ints, each checked: integers, positive,
    t*h*w at most MAX_GRID_PATCHES, and h, w multiples of `merge_size` when given. Nothing is allocated from the
    values before they pass."""
    if isinstance(grid, torch.Tensor):
        if grid.dtype.is_floating_point or grid.dtype.is_complex or grid.dtype == torch.bool:
            raise error(f"{what} must be an integer tensor of [t, h, w] rows, got dtype {grid.dtype}")
        rows = grid.tolist()
    elif isinstance(grid, np.ndarray):
        if grid.dtype.kind not in "iu":
            raise error(f"{what} must be an integer array of [t, h, w] rows, got dtype {grid.dtype}")
        rows = grid.tolist()
    elif isinstance(grid, (list, tuple)):
        rows = list(grid)
    else:
        raise error(f"{what} must be [t, h, w] or a list of such rows, got {type(grid).__name__}")
    if rows and not isinstance(rows[0], (list, tuple, np.ndarray, torch.Tensor)):
        rows = [rows]  # one row
    out = []
    for row in rows:
        row = row.tolist() if isinstance(row, (np.ndarray, torch.Tensor)) else row
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            raise error(f"{what}: each row must be [t, h, w] (three numbers), got {row!r:.60}")
        t, h, w = (_whole(v, what, error) for v in row)
        if min(t, h, w) <= 0:
            raise error(f"{what} row {[t, h, w]}: t, h and w must be positive")
        if t * h * w > MAX_GRID_PATCHES:
            raise error(f"{what} row {[t, h, w]} is {t * h * w:,} patches, more than any input minglm4v takes "
                        f"({MAX_GRID_PATCHES:,}); pass the grid the preprocessor returned")
        if merge_size is not None and (h % merge_size or w % merge_size):
            raise error(f"{what} row {[t, h, w]}: h and w must be multiples of the merge size {merge_size}")
        out.append((t, h, w))
    return out
