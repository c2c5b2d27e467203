"""Video in: decode a clip, pick frames at 2 per second, resize them together, and cut pairs of frames into patches.

Mirrors transformers' `Glm4vVideoProcessor` (`sample_frames`, `resize`, `patchify`) and its PyAV reader, docs/glm41v.md §3:

    file --PyAV--> fps, frame count (counted by decoding where the container does not say, e.g. WebM)
         --sample_indices--> frame indices at 2 fps (at most 300 s; longer clips: 600 frames spread evenly)
         --decode those frames--> (T, H, W, 3) uint8
         --smart_resize(T, H, W): one size for all frames, T*h*w within the pixel budget--> (T, 3, h, w) uint8
         --(x - 255*mean) / (255*std)--> float32 --two consecutive frames per temporal patch-->
    pixel_values_videos (t*h*w, 1176), video_grid_thw [t, h/14, w/14], a timestamp per temporal patch

The timestamp of temporal patch k is the time of its first frame (index / fps); the prompt shows it as whole seconds
(`frame_blocks_text`). A list of frames with their fps goes through the same sampling (`from_frames`).

Decisions:
  * duration = frame count / fps, which is what transformers' decoders record; a clip of 2 frames still gives one
    temporal patch (transformers v5 samples at least one frame; the odd count is then padded by repeating it).
  * Resizing is torch's bicubic with antialias on the uint8 frames, the way torchvision resizes uint8 tensors on the
    CPU (its native uint8 kernel for BICUBIC; on a GPU torchvision goes through float32, then rounds and clamps, and
    so do we). transformers' video processor calls torchvision's resize on uint8 frames. There is no torchvision
    beside the CPU torch here to compare pixels with, so this follows torchvision's source, not a measurement. It runs
    frame by frame as frames are decoded, so memory holds only the resized frames.
  * The container's rotation metadata is not applied (nor does transformers' PyAV reader apply it).

Shape legend: T sampled frames, H W source size, h w resized size, t h w (grid) in patches, N = t*h*w rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import VideoError
from .patchify import IMAGE_MEAN, IMAGE_STD, patchify, smart_resize

SAMPLE_FPS = 2.0  # frames per second kept ("fps" of the video processor)
MAX_DURATION = 300.0  # seconds sampled at SAMPLE_FPS; longer clips get SAMPLE_FPS * MAX_DURATION frames spread evenly
VIDEO_MIN_PIXELS = 12544  # video_preprocessor_config.json "shortest_edge" (a pixel count over all frames)
VIDEO_MAX_PIXELS = 47040000  # "longest_edge" = 28*28*2*30000: at most ~30 000 LLM tokens per video


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
    if int(total_frames) != total_frames or total_frames < 1:
        raise VideoError(f"a video needs at least one frame, got total_frames={total_frames}")
    if not (fps > 0 and math.isfinite(fps)):
        raise VideoError(f"frame rate fps={fps} must be a positive number of frames per second")
    if not (sample_fps > 0 and max_duration > 0):
        raise VideoError(f"sample_fps={sample_fps} and max_duration={max_duration} must be positive")
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


def patch_timestamps(indices: Sequence[int], fps: float, temporal_patch_size: int = 2) -> list[float]:
    """One timestamp per temporal patch: the time (s) of its first frame."""
    return [i / fps for i in list(indices)[::temporal_patch_size]]


# ---------------------------------------------------------------------- decoding

def _open(path: Path):
    import av

    if not path.is_file():
        raise VideoError(f"video file {path} not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"cannot open {path} as a video ({e}); give a file ffmpeg can read (mp4, webm, mkv, ...)") \
            from e
    if not container.streams.video:
        kinds = [s.type for s in container.streams] or "none"
        container.close()
        raise VideoError(f"{path} holds no video stream (streams: {kinds}); give a file with pictures in it")
    return container


def _decode(container, path: Path):
    """Yield (index, frame) for every frame of the first video stream; decoding errors become VideoError."""
    import av

    i = -1
    try:
        for i, frame in enumerate(container.decode(video=0)):
            yield i, frame
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: the video stream is corrupt after {i + 1} frames ({e}); re-encode the file") from e


def probe(path: str | Path) -> VideoInfo:
    """fps, frame count and size of a video file. Where the container does not record the frame count (WebM says
    0), the frames are counted by decoding the stream once."""
    path = Path(path)
    with _open(path) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        if not rate or rate <= 0:
            raise VideoError(f"{path}: the video stream has no frame rate; re-encode it with a constant frame rate")
        total = s.frames or sum(1 for _ in _decode(c, path))
        height, width = s.height, s.width
    if total == 0:
        raise VideoError(f"{path}: the video stream has no frames")
    return VideoInfo(fps=float(rate), total_frames=int(total), height=int(height), width=int(width))


def read_frames(path: str | Path, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode the frames at `indices` (in that order, repeats allowed) -> (T, H, W, 3) uint8 RGB, each resized to
    `size` = (h, w) as soon as it is decoded when given. Decoding stops after the last index needed."""
    path = Path(path)
    wanted = set(int(i) for i in indices)
    if not wanted:
        raise VideoError("read_frames() got no frame indices")
    last, got, decoded = max(wanted), {}, 0
    with _open(path) as c:
        for i, frame in _decode(c, path):
            decoded = i + 1
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3)
                got[i] = rgb if size is None else resize_frames(rgb[None], *size)[0].permute(1, 2, 0).numpy()
            if i >= last:
                break
    missing = sorted(wanted - set(got))
    if missing:
        raise VideoError(f"{path}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} could not be decoded "
                         f"(the stream ended after {decoded} frames, fewer than the container says); the file is "
                         "probably truncated; re-encode it")
    return np.stack([got[int(i)] for i in indices])


def load_video(path: str | Path, *, sample_fps: float = SAMPLE_FPS, max_duration: float = MAX_DURATION,
               size: tuple[int, int] | None = None) -> SampledVideo:
    """Probe, sample and decode a video file; frames at full size unless `size` = (h, w) is given."""
    info = probe(path)
    indices = sample_indices(info.total_frames, info.fps, sample_fps=sample_fps, max_duration=max_duration)
    return SampledVideo(read_frames(path, indices, size), indices, info.fps, info.total_frames)


def from_frames(frames, fps: float, *, sample_fps: float = SAMPLE_FPS,
                max_duration: float = MAX_DURATION) -> SampledVideo:
    """A clip given as frames (a (T, H, W, 3) uint8 array, or a list of HxWx3 arrays / PIL images) played at `fps`
    -> the frames kept by the same sampling rule as a file."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        arr = frames
    else:
        frames = list(frames)
        if not frames:
            raise VideoError("from_frames() got no frames; a video needs at least one")
        arr = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames]
        shapes = {a.shape for a in arr}
        if len(shapes) != 1:
            raise VideoError(f"the frames of one video must share one size, got shapes {sorted(shapes)[:4]}")
        arr = np.stack(arr)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise VideoError(f"frames of shape {arr.shape} and dtype {arr.dtype}: expected (T, H, W, 3) uint8 RGB")
    indices = sample_indices(len(arr), fps, sample_fps=sample_fps, max_duration=max_duration)
    return SampledVideo(arr[indices], indices, float(fps), len(arr))


# ---------------------------------------------------------------------- pixels

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


def normalize_frames(frames: torch.Tensor, mean=IMAGE_MEAN, std=IMAGE_STD) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> float32 (x - 255*mean) / (255*std): the fused rescale-and-normalise of transformers'
    video processor, evaluated for the 256 possible values once per channel (a lookup table)."""
    levels = torch.arange(256, dtype=torch.float32)
    m = (torch.tensor(mean, dtype=torch.float32) * 255.0)[:, None]  # (3, 1), scaled in float32 as transformers
    s = (torch.tensor(std, dtype=torch.float32) * 255.0)[:, None]
    lut = (levels[None] - m) / s  # (3, 256)
    idx = frames.long()  # (T, 3, h, w)
    return torch.stack([lut[c][idx[:, c]] for c in range(3)], dim=1)  # (T, 3, h, w)


def video_size(num_frames: int, height: int, width: int, *, min_pixels: int = VIDEO_MIN_PIXELS,
               max_pixels: int = VIDEO_MAX_PIXELS, patch_size: int = 14, temporal_patch_size: int = 2,
               merge_size: int = 2) -> tuple[int, int]:
    """(h, w) for every frame of a clip: smart_resize with the pixel budget shared by all `num_frames` frames."""
    return smart_resize(num_frames, height, width, factor=patch_size * merge_size,
                        temporal_factor=temporal_patch_size, min_pixels=min_pixels, max_pixels=max_pixels)


def preprocess_videos(videos, *, sample_fps: float = SAMPLE_FPS, max_duration: float = MAX_DURATION,
                      min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS, patch_size: int = 14,
                      temporal_patch_size: int = 2, merge_size: int = 2, mean=IMAGE_MEAN,
                      std=IMAGE_STD) -> VideoInputs:
    """Videos (file paths or `SampledVideo`s, e.g. from `from_frames`) -> `VideoInputs`, rows concatenated in order."""
    if isinstance(videos, (str, Path, SampledVideo)):
        videos = [videos]
    videos = list(videos)
    if not videos:
        raise VideoError("preprocess_videos() got no videos")
    size_kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size,
                   temporal_patch_size=temporal_patch_size, merge_size=merge_size)
    rows, grids, indices, stamps = [], [], [], []
    for v in videos:
        if isinstance(v, (str, Path)):
            info = probe(v)
            idx = sample_indices(info.total_frames, info.fps, sample_fps=sample_fps, max_duration=max_duration)
            h, w = video_size(len(idx), info.height, info.width, **size_kw)
            small = torch.from_numpy(read_frames(v, idx, (h, w))).permute(0, 3, 1, 2)  # (T, 3, h, w) uint8
            fps = info.fps
        elif isinstance(v, SampledVideo):
            idx, fps = v.indices, v.fps
            h, w = video_size(len(idx), v.frames.shape[1], v.frames.shape[2], **size_kw)
            small = resize_frames(v.frames, h, w)
        else:
            raise VideoError(f"a video must be a file path or a SampledVideo (see video.from_frames for a list of "
                             f"frames with their fps), got {type(v).__name__}")
        r, grid = patchify(normalize_frames(small, mean, std), patch_size, temporal_patch_size, merge_size)
        ts = patch_timestamps(idx, fps, temporal_patch_size)
        if len(ts) != grid[0]:  # the prompt needs one timestamp per temporal patch
            raise VideoError(f"{len(ts)} timestamps for {grid[0]} temporal patches")
        rows.append(r)
        grids.append(grid)
        indices.append(list(idx))
        stamps.append(ts)
    return VideoInputs(torch.cat(rows), torch.tensor(grids, dtype=torch.int64), indices, stamps)


# ---------------------------------------------------------------------- the prompt

def frame_blocks_text(grid_thw: Sequence[int], timestamps: Sequence[float], merge_size: int = 2) -> str:
    """What a video's <|video|> becomes in the prompt (docs/glm41v.md §3.3): per temporal patch k,
    <|begin_of_image|> + <|image|> x (h*w/m^2) + <|end_of_image|> + whole seconds of timestamps[k]."""
    t, h, w = (int(v) for v in grid_thw)
    if len(timestamps) != t:
        raise VideoError(f"{len(timestamps)} timestamps for {t} temporal patches; give one per temporal patch")
    n = h * w // merge_size**2
    return "".join(f"<|begin_of_image|>{'<|image|>' * n}<|end_of_image|>{int(s)}" for s in timestamps)
