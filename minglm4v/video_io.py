"""Decoding video files with PyAV: what the container says, and the frames at chosen indices, resized as decoded.

Mirrors the PyAV reader of transformers' video utilities (`video_utils.py`, its pyav backend), docs/glm41v.md §3:

    local file --open by us, PyAV gets the file object--> container
              --probe--> fps, frame count (counted by decoding where the container does not say, e.g. WebM), H, W
              --read_frames(indices, size)--> (T, h, w, 3) uint8, each frame resized as soon as it is decoded

Decisions:
  * PyAV is handed the open file, never the name, so no name can select an FFmpeg protocol (`pipe:0`,
    `http:/host/x.mp4` as a relative path are read as the local files they name).
  * Still images are not videos: a file FFmpeg reads with an image demuxer (PNG, JPEG, WebP, BMP, TIFF, ...), or a
    one-frame GIF/APNG, is refused with a VideoError instead of becoming a silent one-frame "video".
  * The frame size is checked from the header (media_limits.MAX_DECODE_PIXELS, the image limit) before any frame
    is decoded, and again on every decoded frame before it is converted.
  * Resizing is torch's bicubic with antialias on the uint8 frames, the way torchvision resizes uint8 tensors on the
    CPU (its native uint8 kernel for BICUBIC; on a GPU torchvision goes through float32, then rounds and clamps, and
    so do we). transformers' video processor calls torchvision's resize on uint8 frames. There is no torchvision
    beside the CPU torch here to compare pixels with, so this follows torchvision's source, not a measurement.
  * The container's rotation metadata is not applied (nor does transformers' PyAV reader apply it).

Shape legend: T frames, H W source size, h w resized size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import VideoError
from .media_files import open_regular
from .media_limits import check_picture

STILL_CODECS = {"png", "apng", "mjpeg", "gif", "webp", "bmp", "tiff", "jpeg2000", "jpegls", "ppm", "pgm", "pbm",
                "pam", "qoi", "jpegxl", "sgi", "targa", "pcx", "exr", "hdr", "psd", "dds", "xbm", "xwd"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (frame count counted by decoding where it is absent)."""
    fps: float
    total_frames: int
    height: int
    width: int

    @property
    def duration(self) -> float:
        return self.total_frames / self.fps


@contextlib.contextmanager
def opened(path: str | Path, shown: str | None = None):
    """The PyAV container of a local video file, opened from a file object; the frame size checked from the header."""
    import av

    path = Path(path)
    shown = shown or str(path)
    with open_regular(path, "video", VideoError, shown) as f:
        try:
            container = av.open(f)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot open {shown} as a video ({e}); give a file ffmpeg can read (mp4, webm, mkv, "
                             "...)") from e
        with container:
            formats = container.format.name.split(",")
            if any(n.endswith("_pipe") or n.startswith("image2") for n in formats):
                raise VideoError(f"{shown} is a still image ({container.format.name}), not a video; pass it as an "
                                 "image item (minglm4v.patchify.load_image), or give a video file")
            if not container.streams.video:
                kinds = [s.type for s in container.streams] or "none"
                raise VideoError(f"{shown} holds no video stream (streams: {kinds}); give a file with pictures in it")
            s = container.streams.video[0]
            if s.width and s.height:
                check_picture(s.width, s.height, f"a frame of video {shown}", VideoError)
            yield container


def decode(container, shown: str):
    """Yield (index, frame) for every frame of the first video stream; decoding errors become VideoError."""
    import av

    i = -1
    try:
        for i, frame in enumerate(container.decode(video=0)):
            check_picture(frame.width, frame.height, f"frame {i} of video {shown}", VideoError)
            yield i, frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{shown}: the video stream is corrupt after {i + 1} frames ({e}); re-encode the file") \
            from e


def probe(path: str | Path, shown: str | None = None) -> VideoInfo:
    """fps, frame count and size of a local video file. Where the container does not record the frame count (WebM
    says 0), the frames are counted by decoding the stream once."""
    shown = shown or str(path)
    with opened(path, shown) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        if not rate or rate <= 0:
            raise VideoError(f"{shown}: the video stream has no frame rate; re-encode it with a constant frame rate")
        total = s.frames or sum(1 for _ in decode(c, shown))
        height, width, codec = s.height, s.width, s.codec_context.name
    if total == 0:
        raise VideoError(f"{shown}: the video stream has no frames")
    if total == 1 and codec in STILL_CODECS:
        raise VideoError(f"{shown} is a still image (one {codec} frame), not a video; pass it as an image item "
                         "(minglm4v.patchify.load_image), or give a video file")
    return VideoInfo(fps=float(rate), total_frames=int(total), height=int(height), width=int(width))


def read_frames(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None,
                shown: str | None = None) -> np.ndarray:
    """Decode the frames at `indices` (in that order, repeats allowed) -> (T, H, W, 3) uint8 RGB, each resized to
    `size` = (h, w) as soon as it is decoded when given. Decoding stops after the last index needed."""
    shown = shown or str(path)
    wanted = set(int(i) for i in indices)
    if not wanted:
        raise VideoError("read_frames() got no frame indices")
    last, got, decoded = max(wanted), {}, 0
    with opened(path, shown) as c:
        for i, frame in decode(c, shown):
            decoded = i + 1
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                got[i] = rgb if size is None else resize_frames(rgb[None], *size)[0].permute(1, 2, 0).numpy()
            if i >= last:
                break
    missing = sorted(wanted - set(got))
    if missing:
        raise VideoError(f"{shown}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} could not be decoded "
                         f"(the stream ended after {decoded} frames, fewer than the container says); the file is "
                         "probably truncated; re-encode it")
    return np.stack([got[int(i)] for i in indices])


def resize_frames(frames: np.ndarray | torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) uint8, bicubic with antialias as torchvision does it for uint8 tensors:
    the native uint8 kernel on the CPU; elsewhere float32, rounded and clamped back to uint8."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
    if x.shape[-2:] == (h, w):
        return x.contiguous()
    if x.device.type == "cpu":
        return F.interpolate(x.contiguous(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
    y = F.interpolate(x.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)  # (T, 3, h, w)
    return y.clamp_(0, 255).round_().to(torch.uint8)
