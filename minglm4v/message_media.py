"""The image or video a message item names -> what `patchify.preprocess` / `video.preprocess_videos` take.

Mirrors what transformers' processors accept in a message item (`{"type": "image", "image" | "path" | "url": ...}`,
the same for "video"; `load_image` / `load_video` in image_utils.py and video_utils.py). The reading itself is
`patchify.load_image` and `video.load_video` / `video.preprocess_videos`, which keep local files local: a str or
os.PathLike is a local file, `file://` is read as the path it names, and a remote URL is refused unless the caller
passes `allow_download=True` (then it is downloaded, size-bounded, into a temporary file).

* images: a path / URL, a PIL image, an (H, W, C) numpy array, or a torch tensor (C, H, W) / (H, W, C) of uint8;
* videos: a path / URL, a `video.SampledVideo`, or frames (a list of HxWx3 arrays / PIL images, a (T, H, W, 3)
  array, or a torch tensor (T, H, W, 3) / (T, 3, H, W)) with their frame rate under "fps".
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from . import video
from .errors import ImageError, VideoError
from .patchify import load_image


def image_from(value, allow_download: bool = False):
    """A message item's image -> a PIL image or an (H, W, C) array for `patchify.preprocess`."""
    if not isinstance(value, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
        raise ImageError(f"an image item holds a {type(value).__name__}; give a PIL image, an HxWxC uint8 array or "
                         "tensor, a file path or a file:// URL")
    return load_image(value, allow_download=allow_download)


def video_from(value, fps=None, sample_fps: float = video.SAMPLE_FPS, max_duration: float = video.MAX_DURATION):
    """A message item's video -> a path / URL (read by `video.preprocess_videos`, frames resized as they are
    decoded) or a `video.SampledVideo` (frames given with their fps)."""
    if not isinstance(value, (str, os.PathLike, list, tuple, np.ndarray, torch.Tensor, video.SampledVideo)):
        raise VideoError(f"a video item holds a {type(value).__name__}; give a file path or file:// URL, a list of "
                         "frames (or a (T, H, W, 3) uint8 array or tensor) with 'fps', or a video.SampledVideo")
    if isinstance(value, (str, os.PathLike)):
        if fps is not None:
            raise VideoError("a video file carries its own frame rate; 'fps' is only for a video given as frames")
        return value
    if isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[1] == 3 and value.shape[-1] != 3:
        value = value.permute(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        if fps is None:
            raise VideoError("a video given as frames needs their frame rate: add 'fps': <frames per second> "
                             "to the video item (timestamps and sampling depend on it)")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
            raise VideoError(f"'fps' must be a positive number of frames per second, got {fps!r}")
    return video.load_video(value, fps=fps, sample_fps=sample_fps, max_duration=max_duration)
