"""The processor's settings files, read strictly: preprocessor_config.json, video_preprocessor_config.json and the chat
template (chat_template.jinja, or "chat_template" in tokenizer_config.json).

Mirrors the fields transformers' `Glm4vImageProcessor` and `Glm4vVideoProcessor` read from those files
(docs/glm41v.md §2 and §3). Every file goes through `jsonfile.read_json` (UTF-8, valid JSON, no duplicate keys, sane
nesting); every field through `jsonfile.expect`, so a wrong type names the file and the field. A key we do not know
is refused, never dropped; a key whose value we cannot honour (`do_normalize: false`) is refused too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProcessorError
from .jsonfile import expect, read_json
from .patchify import IMAGE_MEAN, IMAGE_STD, MAX_PIXELS, MIN_PIXELS
from .video import MAX_DURATION, SAMPLE_FPS, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS

MAX_TEMPLATE_BYTES = 1 << 20  # the published chat_template.jinja is 922 bytes


@dataclass(frozen=True)
class ImageProcessorConfig:
    """The fields of `preprocessor_config.json` (docs/glm41v.md §2), with the published values as defaults."""
    min_pixels: int = MIN_PIXELS  # "size": {"shortest_edge": ...} (a pixel count)
    max_pixels: int = MAX_PIXELS  # "size": {"longest_edge": ...} (a pixel count)
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = IMAGE_MEAN
    image_std: tuple[float, ...] = IMAGE_STD

    # Keys whose only value we implement; a file asking for anything else is refused, not ignored.
    _FIXED = {"do_rescale": True, "do_normalize": True, "do_resize": True, "do_convert_rgb": True, "resample": 3,
              "rescale_factor": 1 / 255}
    _IGNORED = {"image_processor_type", "processor_class", "video_processor_type", "_processor_class"}

    @classmethod
    def from_file(cls, path: Path) -> "ImageProcessorConfig":
        return _read_settings(cls, Path(path))

    def to_dict(self) -> dict[str, Any]:
        return {**_common_settings(self), "image_processor_type": "Glm4vImageProcessor",
                "processor_class": "Glm4vProcessor"}


@dataclass(frozen=True)
class VideoProcessorConfig:
    """The fields of `video_preprocessor_config.json` (docs/glm41v.md §3), with the published values and the class
    defaults of transformers' Glm4vVideoProcessor (fps 2, max_duration 300) as defaults."""
    min_pixels: int = VIDEO_MIN_PIXELS  # "size": {"shortest_edge": ...}: pixels over all frames of a clip
    max_pixels: int = VIDEO_MAX_PIXELS  # "size": {"longest_edge": ...}
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = IMAGE_MEAN
    image_std: tuple[float, ...] = IMAGE_STD
    fps: float = SAMPLE_FPS  # frames kept per second
    max_duration: float = MAX_DURATION  # seconds sampled at `fps`; longer clips get fps*max_duration frames

    _FIXED = {**ImageProcessorConfig._FIXED, "do_sample_frames": True, "do_center_crop": False}
    # "num_frames" is not read by GLM's sampler; "max_image_size" is not used by its resize (docs/glm41v.md §3)
    _IGNORED = ImageProcessorConfig._IGNORED | {"num_frames", "max_image_size", "return_metadata"}

    @classmethod
    def from_file(cls, path: Path) -> "VideoProcessorConfig":
        return _read_settings(cls, Path(path), floats=("fps", "max_duration"))

    @classmethod
    def matching(cls, image: ImageProcessorConfig) -> "VideoProcessorConfig":
        """For a folder without video_preprocessor_config.json: the published video settings, with patch, merge
        and temporal sizes and mean/std taken from the image settings (the vision tower fixes those)."""
        return cls(patch_size=image.patch_size, temporal_patch_size=image.temporal_patch_size,
                   merge_size=image.merge_size, image_mean=image.image_mean, image_std=image.image_std)

    def to_dict(self) -> dict[str, Any]:
        return {**_common_settings(self), "fps": self.fps, "max_duration": self.max_duration,
                "video_processor_type": "Glm4vVideoProcessor", "processor_class": "Glm4vProcessor"}


def _positive_int(value, path, field: str) -> int:
    expect(value, int, path, field, ProcessorError)
    if value <= 0:
        raise ProcessorError(f"{path}: field {field!r} must be a positive integer, got {value}")
    return value


def _three_floats(value, path, field: str) -> tuple[float, ...]:
    expect(value, list, path, field, ProcessorError)
    if len(value) != 3:
        raise ProcessorError(f"{path}: field {field!r} must hold 3 numbers (R, G, B), got {len(value)}")
    out = tuple(float(expect(x, (int, float), path, f"{field}[{i}]", ProcessorError)) for i, x in enumerate(value))
    if field == "image_std" and min(out) <= 0:
        raise ProcessorError(f"{path}: field 'image_std' must be positive (it divides the pixels), got {list(out)}")
    return out


def _same(value, fixed) -> bool:
    """`value` read from JSON is the one setting we implement (`true` is not 1, 3.0 is 3 only for a float field)."""
    if isinstance(fixed, bool) or isinstance(value, bool):
        return value is fixed
    if isinstance(fixed, float):
        return isinstance(value, (int, float)) and abs(value - fixed) <= 1e-12
    return type(value) is type(fixed) and value == fixed


def _read_settings(cls, path: Path, floats: tuple[str, ...] = ()):
    """Read a preprocessor settings file strictly into `cls`: known keys are type-checked and converted, `cls._FIXED`
    keys must have the one value we implement, anything else except `cls._IGNORED` is an error (never dropped)."""
    d = read_json(path, ProcessorError)
    kw: dict[str, Any] = {}
    for k, v in d.items():
        if k == "size":
            expect(v, dict, path, "size", ProcessorError)
            if set(v) != {"shortest_edge", "longest_edge"}:
                raise ProcessorError(f"{path}: 'size' must be {{'shortest_edge': min_pixels, 'longest_edge': "
                                     f"max_pixels}} (pixel counts), got keys {sorted(v)}")
            kw["min_pixels"] = _positive_int(v["shortest_edge"], path, "size.shortest_edge")
            kw["max_pixels"] = _positive_int(v["longest_edge"], path, "size.longest_edge")
            if kw["min_pixels"] > kw["max_pixels"]:
                raise ProcessorError(f"{path}: size.shortest_edge ({kw['min_pixels']}) is larger than "
                                     f"size.longest_edge ({kw['max_pixels']}); both are pixel counts, min <= max")
        elif k in ("patch_size", "temporal_patch_size", "merge_size"):
            kw[k] = _positive_int(v, path, k)
        elif k in floats:
            kw[k] = float(expect(v, (int, float), path, k, ProcessorError))
            if not 0 < kw[k] < float("inf"):
                raise ProcessorError(f"{path}: field {k!r} must be a positive number, got {v!r}")
        elif k in ("image_mean", "image_std"):
            kw[k] = _three_floats(v, path, k)
        elif k in cls._FIXED:
            if not _same(v, cls._FIXED[k]):
                raise ProcessorError(f"{path}: {k}={v!r} is not supported (only {cls._FIXED[k]!r} is)")
        elif k not in cls._IGNORED:
            raise ProcessorError(f"{path}: unknown key {k!r}; minglm4v does not know what it would change")
    return cls(**kw)


def _common_settings(c) -> dict[str, Any]:
    return {"size": {"shortest_edge": c.min_pixels, "longest_edge": c.max_pixels}, "do_rescale": True,
            "patch_size": c.patch_size, "temporal_patch_size": c.temporal_patch_size, "merge_size": c.merge_size,
            "image_mean": list(c.image_mean), "image_std": list(c.image_std)}


def read_chat_template(folder: Path) -> str | None:
    """The folder's chat template: chat_template.jinja if present, else "chat_template" in tokenizer_config.json,
    else None (GLM-4.1V's own format)."""
    f = folder / "chat_template.jinja"
    if f.is_file():
        if f.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ProcessorError(f"{f}: {f.stat().st_size:,} bytes is far larger than any chat template "
                                 f"({MAX_TEMPLATE_BYTES:,} at most)")
        try:
            return f.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProcessorError(f"{f}: not UTF-8 text (byte {e.start}); a chat template must be UTF-8") from None
    cfg = folder / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    template = read_json(cfg, ProcessorError).get("chat_template")
    if template is None:
        return None
    if isinstance(template, list):
        raise ProcessorError(f"{cfg}: field 'chat_template' is a list of named templates; minglm4v supports a "
                             "single template string (put it in chat_template.jinja)")
    expect(template, str, cfg, "chat_template", ProcessorError)
    if len(template.encode()) > MAX_TEMPLATE_BYTES:
        raise ProcessorError(f"{cfg}: field 'chat_template' is larger than any chat template "
                             f"({MAX_TEMPLATE_BYTES:,} bytes at most)")
    return template


def write_settings(folder: Path, image: ImageProcessorConfig, video: VideoProcessorConfig) -> None:
    (folder / "preprocessor_config.json").write_text(json.dumps(image.to_dict(), indent=4) + "\n")
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video.to_dict(), indent=4) + "\n")
