"""Video in: pick frames at 2 per second, resize them together, and cut pairs of frames into patches.

Mirrors transformers' `Glm4vVideoProcessor` (`sample_frames`, `resize`, `patchify`), docs/glm41v.md §3:

    source --video_io.probe--> fps, frame count, H, W   (or a list/array/tensor of frames with their fps)
           --sample_indices--> frame indices at 2 fps (at most 300 s; longer clips: 600 frames spread evenly)
           --decode those frames (video_io.read_frames)--> (T, H, W, 3) uint8
           --smart_resize(T, H, W): one size for all frames, T*h*w within the pixel budget--> (T, 3, h, w) uint8
           --(x - 255*mean) / (255*std)--> float32 --two consecutive frames per temporal patch-->
    pixel_values_videos (t*h*w, 1176), video_grid_thw [t, h/14, w/14], a timestamp per temporal patch

The timestamp of temporal patch k is the time of its first frame (index / fps); the prompt shows it as whole seconds
(`frame_blocks_text`). `load_video(source)` turns any source into a `SampledVideo`; `preprocess_videos` takes file
sources directly and resizes each frame as it is decoded, so memory holds only the resized frames.

Decisions:
  * duration = frame count / fps, which is what transformers' decoders record; a clip of 2 frames still gives one
    temporal patch (transformers v5 samples at least one frame; the odd count is then padded by repeating it).
  * Sources: a path or file:// URL (opened by us, see video_io.py); an http(s) URL only with `allow_download=True`
    (media_files.py); frames as a (T, H, W, 3) uint8 array or tensor, or a list of HxWx3 uint8 arrays / tensors /
    PIL images (PIL frames go through rgb.py, so transparency is white as for images).
  * Limits (media_limits.py) are checked from sizes before anything is stacked, converted or decoded: every frame
    as an image, and frames held at full size (kept frames x H x W) against MAX_CLIP_PIXELS.
  * Bad video settings, sizes and frames raise VideoError (never ImageError).

Shape legend: T sampled frames, H W source size, h w resized size, t h w (grid) in patches, N = t*h*w rows.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .errors import VideoError
from .media_files import local_file
from .media_limits import check_clip, check_grid
from .patchify import IMAGE_MEAN, IMAGE_STD, patchify, smart_resize
from .rgb import to_rgb_array
from .video_io import probe, read_frames, resize_frames

SAMPLE_FPS = 2.0  # frames per second kept ("fps" of the video processor)
MAX_DURATION = 300.0  # seconds sampled at SAMPLE_FPS; longer clips get SAMPLE_FPS * MAX_DURATION frames spread evenly
VIDEO_MIN_PIXELS = 12544  # video_preprocessor_config.json "shortest_edge" (a pixel count over all frames)
VIDEO_MAX_PIXELS = 47040000  # "longest_edge" = 28*28*2*30000: at most ~30 000 LLM tokens per video
MAX_KEPT_FRAMES = 1 << 16  # sample_fps * max_duration: beyond it no frame could keep a 28x28 size in any budget


@dataclass
class SampledVideo:
    """The frames kept from a clip: frames (T, H, W, 3) uint8, their indices in the clip and the clip's fps."""
    frames: np.ndarray
    indices: list[int]
    fps: float
    total_frames: int

    @property
    def timestamps(self) -> list[float]:
        """Seconds of each kept frame: index / fps."""
        return [i / self.fps for i in self.indices]


@dataclass
class VideoInputs:
    """Model inputs for n videos, plus what the prompt needs: per video its kept frame indices and one timestamp
    per temporal patch (seconds of the patch's first frame)."""
    pixel_values_videos: torch.Tensor  # (N, C*tp*p*p)
    video_grid_thw: torch.Tensor  # (n, 3) in patches
    frame_indices: list[list[int]] = field(default_factory=list)
    timestamps: list[list[float]] = field(default_factory=list)


# ---------------------------------------------------------------------- which frames

def sample_indices(total_frames: int, fps: float, *, sample_fps: float = SAMPLE_FPS,
                   max_duration: float = MAX_DURATION) -> list[int]:
    """Indices of the frames to keep, from the metadata alone (docs/glm41v.md §3.1).

    Up to `max_duration` seconds: n = floor(duration * sample_fps) (at least 1) frames, frame i at
    ceil(i * fps / sample_fps). Longer: sample_fps * max_duration frames at evenly spaced times 0 .. duration (all
    frames if there are not more than that). Then duplicates go (first kept) and an odd count repeats the last."""
    if not _number(total_frames) or int(total_frames) != total_frames or total_frames < 1:
        raise VideoError(f"a video needs at least one frame, got total_frames={total_frames!r:.40}")
    if not (_number(fps) and fps > 0 and math.isfinite(fps)):
        raise VideoError(f"frame rate fps={fps!r:.40} must be a positive number of frames per second")
    if not (_number(sample_fps) and _number(max_duration) and sample_fps > 0 and max_duration > 0
            and sample_fps * max_duration <= MAX_KEPT_FRAMES):
        raise VideoError(f"sample_fps={sample_fps!r:.40} and max_duration={max_duration!r:.40} must be positive "
                         f"numbers keeping at most {MAX_KEPT_FRAMES:,} frames (sample_fps * max_duration); the "
                         "published settings are 2 fps and 300 s")
    total_frames = int(total_frames)
    last = total_frames - 1
    duration = total_frames / fps
    if duration <= max_duration:
        n = max(math.floor(duration * sample_fps), 1)
        picks = [min(last, math.ceil(i * fps / sample_fps)) for i in range(n)]
    else:
        n = int(max_duration * sample_fps)
        if n >= total_frames:
            picks = list(range(total_frames))
        else:  # evenly spaced seconds, both ends included
            picks = [min(last, math.ceil(s * fps)) for s in np.linspace(0, duration, n, endpoint=True)]
    picks = list(dict.fromkeys(picks))  # drop repeats, keep order
    if len(picks) % 2:
        picks.append(picks[-1])
    return picks


def _number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def patch_timestamps(indices: Sequence[int], fps: float, temporal_patch_size: int = 2) -> list[float]:
    """One timestamp per temporal patch: the time (s) of its first frame."""
    return [i / fps for i in list(indices)[::temporal_patch_size]]


# ---------------------------------------------------------------------- sources

def load_video(source, *, fps: float | None = None, allow_download: bool = False, sample_fps: float = SAMPLE_FPS,
               max_duration: float = MAX_DURATION, size: tuple[int, int] | None = None) -> SampledVideo:
    """A video source -> the frames kept at `sample_fps` (full size unless `size` = (h, w) is given).

    Accepted: a path (str or pathlib.Path) or a `file://` URL of a video file; frames with their rate `fps`: a
    (T, H, W, 3) uint8 numpy array or torch tensor, or a list of (H, W, 3) uint8 arrays / tensors or PIL images; a
    `SampledVideo` (returned as it is). An http(s) URL is refused unless `allow_download=True`: then it is
    downloaded (at most media_files.MAX_DOWNLOAD_BYTES) to a temporary file that is removed once decoded."""
    if isinstance(source, SampledVideo):
        return source
    if isinstance(source, (str, os.PathLike)):
        with local_file(source, "video", VideoError, allow_download) as (path, shown):
            info = probe(path, shown)
            idx = sample_indices(info.total_frames, info.fps, sample_fps=sample_fps, max_duration=max_duration)
            if size is None:  # full-size frames are held at once: the clip limit applies
                check_clip(len(idx), info.width, info.height, f"video {shown}", VideoError)
            return SampledVideo(read_frames(path, idx, size, shown), idx, info.fps, info.total_frames)
    if isinstance(source, (list, tuple, np.ndarray, torch.Tensor)):
        if fps is None:
            raise VideoError("a video given as frames needs their frame rate: pass fps=<frames per second> "
                             "(timestamps and sampling depend on it)")
        sampled = from_frames(source, fps, sample_fps=sample_fps, max_duration=max_duration)
        if size is not None:
            sampled.frames = resize_frames(sampled.frames, *size).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)
        return sampled
    raise VideoError(f"a video source must be a path, a file:// URL, frames (a (T, H, W, 3) uint8 array or tensor, "
                     f"or a list of frames) with fps, or a SampledVideo; got {type(source).__name__}")


def _frame_shape(f, k: int) -> tuple[int, int]:
    """(H, W) of frame k of a list, from its size alone; anything but an (H, W, 3) uint8 frame is refused."""
    if isinstance(f, Image.Image):
        return f.height, f.width
    if isinstance(f, (np.ndarray, torch.Tensor)):
        dtype_ok = f.dtype == (torch.uint8 if isinstance(f, torch.Tensor) else np.uint8)
        if f.ndim == 3 and f.shape[-1] == 3 and dtype_ok:
            return int(f.shape[0]), int(f.shape[1])
        raise VideoError(f"frame {k} has shape {tuple(f.shape)} and dtype {f.dtype}: expected (H, W, 3) uint8 RGB")
    raise VideoError(f"frame {k} is a {type(f).__name__}; frames must be (H, W, 3) uint8 arrays or tensors, or PIL "
                     "images")


def _frame_array(f) -> np.ndarray:
    if isinstance(f, Image.Image):
        return to_rgb_array(f)  # transparency onto white, as for images
    return f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)


def from_frames(frames, fps: float, *, sample_fps: float = SAMPLE_FPS,
                max_duration: float = MAX_DURATION) -> SampledVideo:
    """A clip given as frames (a (T, H, W, 3) uint8 array or tensor, or a list of HxWx3 uint8 arrays / tensors / PIL
    images) played at `fps` -> the frames kept by the same sampling rule as a file. Sizes are checked before any
    frame is stacked or converted, and only the kept frames are."""
    if isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8 or frames.ndim != 4:
            raise VideoError(f"frames of shape {tuple(frames.shape)} and dtype {frames.dtype}: expected (T, H, W, 3) "
                             "uint8 RGB")
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
            raise VideoError(f"frames of shape {frames.shape} and dtype {frames.dtype}: expected (T, H, W, 3) uint8 "
                             "RGB")
        indices = sample_indices(len(frames), fps, sample_fps=sample_fps, max_duration=max_duration)
        check_clip(len(indices), frames.shape[2], frames.shape[1], "the frames", VideoError)
        return SampledVideo(frames[indices], indices, float(fps), len(frames))
    if not isinstance(frames, (list, tuple)):
        raise VideoError(f"frames must be a (T, H, W, 3) uint8 array or tensor, or a list of frames, got "
                         f"{type(frames).__name__}")
    if not frames:
        raise VideoError("from_frames() got no frames; a video needs at least one")
    shapes = {_frame_shape(f, k) for k, f in enumerate(frames)}
    if len(shapes) != 1:
        raise VideoError(f"the frames of one video must share one size, got (H, W) sizes {sorted(shapes)[:4]}")
    (height, width), = shapes
    indices = sample_indices(len(frames), fps, sample_fps=sample_fps, max_duration=max_duration)
    check_clip(len(indices), width, height, "the frames", VideoError)
    return SampledVideo(np.stack([_frame_array(frames[i]) for i in indices]), indices, float(fps), len(frames))

# ---------------------------------------------------------------------- pixels

def normalize_frames(frames: torch.Tensor, mean=IMAGE_MEAN, std=IMAGE_STD) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> float32 (x - 255*mean) / (255*std): the fused rescale-and-normalise of transformers'
    video processor, evaluated for the 256 possible values once per channel (a lookup table)."""
    levels = torch.arange(256, dtype=torch.float32)
    m = (torch.tensor(mean, dtype=torch.float32) * 255.0)[:, None]  # (3, 1), scaled in float32 as transformers
    s = (torch.tensor(std, dtype=torch.float32) * 255.0)[:, None]
    lut = (levels[None] - m) / s  # (3, 256)
    out = torch.empty(frames.shape, dtype=torch.float32)  # (T, 3, h, w)
    for c in range(3):  # one channel's indices at a time
        out[:, c] = lut[c][frames[:, c].long()]
    return out


def video_size(num_frames: int, height: int, width: int, *, min_pixels: int = VIDEO_MIN_PIXELS,
               max_pixels: int = VIDEO_MAX_PIXELS, patch_size: int = 14, temporal_patch_size: int = 2,
               merge_size: int = 2) -> tuple[int, int]:
    """(h, w) for every frame of a clip: smart_resize with the pixel budget shared by all `num_frames` frames."""
    return smart_resize(num_frames, height, width, factor=patch_size * merge_size,
                        temporal_factor=temporal_patch_size, min_pixels=min_pixels, max_pixels=max_pixels,
                        error=VideoError)


def _check_settings(min_pixels, max_pixels, patch_size, temporal_patch_size, merge_size) -> None:
    for name, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels), ("patch_size", patch_size),
                    ("temporal_patch_size", temporal_patch_size), ("merge_size", merge_size)):
        if not isinstance(v, numbers.Integral) or isinstance(v, (bool, np.bool_)) or v <= 0:
            raise VideoError(f"video setting {name}={v!r:.40} must be a positive whole number")
    if max_pixels < min_pixels:
        raise VideoError(f"video settings need min_pixels <= max_pixels, got {min_pixels} > {max_pixels}")


def preprocess_videos(videos, *, sample_fps: float = SAMPLE_FPS, max_duration: float = MAX_DURATION,
                      min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS, patch_size: int = 14,
                      temporal_patch_size: int = 2, merge_size: int = 2, mean=IMAGE_MEAN,
                      std=IMAGE_STD, allow_download: bool = False) -> VideoInputs:
    """Videos -> `VideoInputs`, rows concatenated in order. Each video is a path or file:// URL (frames resized as
    they are decoded), an http(s) URL with `allow_download=True`, or a `SampledVideo` (`load_video` makes one from
    frames with their fps)."""
    if isinstance(videos, (str, os.PathLike, SampledVideo)):
        videos = [videos]
    videos = list(videos)
    if not videos:
        raise VideoError("preprocess_videos() got no videos")
    _check_settings(min_pixels, max_pixels, patch_size, temporal_patch_size, merge_size)
    size_kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size,
                   temporal_patch_size=temporal_patch_size, merge_size=merge_size)
    rows, grids, indices, stamps = [], [], [], []
    for v in videos:
        if isinstance(v, (str, os.PathLike)):
            with local_file(v, "video", VideoError, allow_download) as (path, shown):
                info = probe(path, shown)
                idx = sample_indices(info.total_frames, info.fps, sample_fps=sample_fps, max_duration=max_duration)
                h, w = video_size(len(idx), info.height, info.width, **size_kw)
                small = torch.from_numpy(read_frames(path, idx, (h, w), shown)).permute(0, 3, 1, 2)  # (T, 3, h, w)
            fps = info.fps
        elif isinstance(v, SampledVideo):
            idx, fps = v.indices, v.fps
            f = v.frames
            if not (isinstance(f, np.ndarray) and f.ndim == 4 and f.shape[-1] == 3 and f.dtype == np.uint8
                    and len(f) == len(idx)):
                raise VideoError("a SampledVideo needs frames (T, H, W, 3) uint8 with one index per frame; make it "
                                 "with video.load_video or video.from_frames")
            h, w = video_size(len(idx), f.shape[1], f.shape[2], **size_kw)
            small = resize_frames(f, h, w)
        else:
            raise VideoError(f"a video must be a path, a file:// URL or a SampledVideo (video.load_video(frames, "
                             f"fps=...) makes one from frames), got {type(v).__name__}")
        r, grid = patchify(normalize_frames(small, mean, std), patch_size, temporal_patch_size, merge_size)
        del small
        ts = patch_timestamps(idx, fps, temporal_patch_size)
        if len(ts) != grid[0]:  # the prompt needs one timestamp per temporal patch
            raise VideoError(f"{len(ts)} timestamps for {grid[0]} temporal patches")
        rows.append(r)
        grids.append(grid)
        indices.append(list(idx))
        stamps.append(ts)
    pixels = rows[0] if len(rows) == 1 else torch.cat(rows)
    return VideoInputs(pixels, torch.tensor(grids, dtype=torch.int64), indices, stamps)


# ---------------------------------------------------------------------- the prompt

def frame_blocks_text(grid_thw: Sequence[int], timestamps: Sequence[float], merge_size: int = 2) -> str:
    """What a video's <|video|> becomes in the prompt (docs/glm41v.md §3.3): per temporal patch k,
    <|begin_of_image|> + <|image|> x (h*w/m^2) + <|end_of_image|> + whole seconds of timestamps[k]."""
    (t, h, w), = check_grid([grid_thw], "video_grid_thw", VideoError, merge_size)  # before any string is built
    if len(timestamps) != t:
        raise VideoError(f"{len(timestamps)} timestamps for {t} temporal patches; give one per temporal patch")
    n = h * w // merge_size**2
    return "".join(f"<|begin_of_image|>{'<|image|>' * n}<|end_of_image|>{int(s)}" for s in timestamps)
