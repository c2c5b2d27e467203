"""The image or video a message item names -> what `patchify.preprocess` / `video.preprocess_videos` take.

Mirrors what transformers' processors accept in a message item (`{"type": "image", "image" | "path" | "url": ...}`,
the same for "video"; `load_image` / `load_video` in image_utils.py and video_utils.py), with local files kept
local:

* a str / os.PathLike names a local file; `file://` URLs are read as the path they name (`paths.local_path`);
* a remote URL (`https://...`) is refused unless the caller passes `allow_download=True`; then it is downloaded with
  urllib into the caller's temporary folder, at most MAX_DOWNLOAD_BYTES, and read from there;
* images: a PIL image, an (H, W, C) numpy array, or a torch tensor (H, W, C) or (C, H, W) of uint8;
* videos: a `video.SampledVideo`, or frames (a list of HxWx3 arrays / PIL images, a (T, H, W, 3) array, or a torch
  tensor (T, H, W, 3) / (T, 3, H, W)) with their frame rate under "fps".
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image

from . import video as V
from .errors import ImageError, VideoError
from .patchify import load_image
from .paths import is_remote_url, local_path, url_scheme

MAX_DOWNLOAD_BYTES = 512 << 20  # a 4K photo is ~10 MB, a long 1080p clip a few hundred
DOWNLOAD_TIMEOUT_S = 30


def download(url: str, folder: Path, what: str, error: type[Exception],
             max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Fetch an http(s) URL into `folder` (at most `max_bytes`, else `error`); returns the file's path."""
    if url_scheme(url) not in ("http", "https"):
        raise error(f"{what} {url[:200]!r}: only http:// and https:// URLs can be downloaded")
    suffix = PurePosixPath(urlparse(url).path).suffix[:16]
    target = folder / f"download-{len(os.listdir(folder))}{suffix}"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as f:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise error(f"{what} {url[:200]!r} is {int(declared):,} bytes, more than the {max_bytes:,} allowed")
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise error(f"{what} {url[:200]!r} is more than the {max_bytes:,} bytes allowed")
                f.write(chunk)
    except OSError as e:  # URLError, HTTPError, timeouts
        raise error(f"{what} {url[:200]!r} could not be downloaded: {e}") from e
    return target


def _local_or_downloaded(value, what: str, error, allow_download: bool, folder: Path | None) -> Path:
    if is_remote_url(value):
        if not allow_download:
            raise error(f"{what} {str(value)[:200]!r} is a remote URL; minglm4v does not download unless asked: "
                        "pass allow_download=True, or download the file and give its path")
        if folder is None:
            raise error(f"{what} {str(value)[:200]!r}: downloading needs a temporary folder (internal error)")
        return download(value, folder, what, error)
    return local_path(value, what, error)


def _tensor_to_array(t: torch.Tensor, channel_axis: int, what: str, error) -> np.ndarray:
    a = t.detach().cpu().numpy()
    if a.ndim == channel_axis + 3 and a.shape[channel_axis] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, channel_axis, -1)  # channels first -> channels last
    return a


def image_from(value, allow_download: bool = False, folder: Path | None = None):
    """A message item's image -> a PIL image or an (H, W, C) array for `patchify.preprocess`."""
    if isinstance(value, (Image.Image, np.ndarray)):
        return value
    if isinstance(value, torch.Tensor):
        return _tensor_to_array(value, 0, "image", ImageError)
    if isinstance(value, (str, os.PathLike)):
        return load_image(_local_or_downloaded(value, "image", ImageError, allow_download, folder))
    raise ImageError(f"an image item holds a {type(value).__name__}; give a PIL image, an HxWxC uint8 array, a "
                     "torch tensor, a file path or a file:// URL")


def video_from(value, fps=None, allow_download: bool = False, folder: Path | None = None,
               sample_fps: float = V.SAMPLE_FPS, max_duration: float = V.MAX_DURATION):
    """A message item's video -> a Path or a `video.SampledVideo` for `video.preprocess_videos`."""
    if isinstance(value, V.SampledVideo):
        return value
    if isinstance(value, (str, os.PathLike)):
        if fps is not None:
            raise VideoError("a video file carries its own frame rate; 'fps' is only for a video given as frames")
        return _local_or_downloaded(value, "video", VideoError, allow_download, folder)
    if isinstance(value, torch.Tensor):
        value = _tensor_to_array(value, 1, "video", VideoError)
    if isinstance(value, (list, tuple, np.ndarray)):
        if fps is None:
            raise VideoError("a video given as frames needs their frame rate: add 'fps': <frames per second> "
                             "to the video item (timestamps and sampling depend on it)")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
            raise VideoError(f"'fps' must be a positive number of frames per second, got {fps!r}")
        return V.from_frames(value, float(fps), sample_fps=sample_fps, max_duration=max_duration)
    raise VideoError(f"a video item holds a {type(value).__name__}; give a file path or file:// URL, a list of "
                     "frames (or a (T, H, W, 3) uint8 array or tensor) with 'fps', or a minglm4v.video.SampledVideo")
