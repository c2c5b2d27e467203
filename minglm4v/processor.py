"""Messages -> model inputs: the chat format, the tokenizer and the image and video preprocessors together.

Mirrors transformers' `Glm4vProcessor.apply_chat_template(..., tokenize=True, return_dict=True,
return_tensors="pt")`:

    messages --chat.render_chat--> "[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|><|end_of_image|>What...?"
             --tokenizer--> ids with one <|image|> per image and one <|video|> per video
             --expand--> each <|image|> repeated t*h*w/m^2 times (its image's token count, docs/glm41v.md §2.4);
                         each <|video|> replaced, per temporal patch k, by
                         <|begin_of_image|> <|image|> x h*w/m^2 <|end_of_image|> "{seconds of patch k}" (docs/glm41v.md §3.3)
    images   --patchify.preprocess--> pixel_values (N, 1176), image_grid_thw (n, 3)
    videos   --video.preprocess_videos--> pixel_values_videos (N', 1176), video_grid_thw (n', 3)

A video item is `{"type": "video", "video": "clip.mp4"}` (or "path": ...), a `video.SampledVideo`, or frames with
their rate: `{"type": "video", "video": [frame, ...] or a (T, H, W, 3) uint8 array, "fps": 12}`. Images and videos
in one request are refused: GLM-4.1V gives both the same placeholder id (docs/glm41v.md §5), and the reference mixes them up.

A list of conversations gives a left-padded batch (`attention_mask` 0 on the padding), which is how batched
generation wants it. Shapes: B conversations, L longest prompt, N patch rows, n images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import chat
from . import video as V
from .errors import ImageError, ProcessorError
from .patchify import IMAGE_MEAN, IMAGE_STD, MAX_PIXELS, MIN_PIXELS, load_image, num_image_tokens, preprocess
from .tokenizer import Tokenizer


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
        return _read_settings(cls, path)

    def to_dict(self) -> dict[str, Any]:
        return {**_common_settings(self), "image_processor_type": "Glm4vImageProcessor",
                "processor_class": "Glm4vProcessor"}


@dataclass(frozen=True)
class VideoProcessorConfig:
    """The fields of `video_preprocessor_config.json` (docs/glm41v.md §3), with the published values and the class defaults
    of transformers' Glm4vVideoProcessor (fps 2, max_duration 300) as defaults."""
    min_pixels: int = V.VIDEO_MIN_PIXELS  # "size": {"shortest_edge": ...}: pixels over all frames of a clip
    max_pixels: int = V.VIDEO_MAX_PIXELS  # "size": {"longest_edge": ...}
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, ...] = IMAGE_MEAN
    image_std: tuple[float, ...] = IMAGE_STD
    fps: float = V.SAMPLE_FPS  # frames kept per second
    max_duration: float = V.MAX_DURATION  # seconds sampled at `fps`; longer clips get fps*max_duration frames

    _FIXED = {**ImageProcessorConfig._FIXED, "do_sample_frames": True, "do_center_crop": False}
    # "num_frames" is not read by GLM's sampler; "max_image_size" is not used by its resize (docs/glm41v.md §3)
    _IGNORED = ImageProcessorConfig._IGNORED | {"num_frames", "max_image_size", "return_metadata"}

    @classmethod
    def from_file(cls, path: Path) -> "VideoProcessorConfig":
        return _read_settings(cls, path, floats=("fps", "max_duration"))

    @classmethod
    def matching(cls, image: ImageProcessorConfig) -> "VideoProcessorConfig":
        """For a folder without video_preprocessor_config.json: the published video settings, with patch, merge
        and temporal sizes and mean/std taken from the image settings (the vision tower fixes those)."""
        return cls(patch_size=image.patch_size, temporal_patch_size=image.temporal_patch_size,
                   merge_size=image.merge_size, image_mean=image.image_mean, image_std=image.image_std)

    def to_dict(self) -> dict[str, Any]:
        return {**_common_settings(self), "fps": self.fps, "max_duration": self.max_duration,
                "video_processor_type": "Glm4vVideoProcessor", "processor_class": "Glm4vProcessor"}


def _read_settings(cls, path: Path, floats: tuple[str, ...] = ()):
    """Read preprocessor_config.json / video_preprocessor_config.json strictly into `cls`: known keys are
    converted, `cls._FIXED` keys must have the one value we implement, anything else except `cls._IGNORED` is an
    error (never dropped)."""
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ProcessorError(f"cannot read {path}: {e}") from e
    if not isinstance(d, dict):
        raise ProcessorError(f"{path} must hold a JSON object, got {type(d).__name__}")
    kw: dict[str, Any] = {}
    for k, v in d.items():
        try:
            if k == "size":
                if not isinstance(v, dict) or set(v) != {"shortest_edge", "longest_edge"}:
                    raise ProcessorError(f"{path}: 'size' must be {{'shortest_edge': min_pixels, 'longest_edge': "
                                         f"max_pixels}} (pixel counts), got {v!r}")
                kw["min_pixels"], kw["max_pixels"] = int(v["shortest_edge"]), int(v["longest_edge"])
            elif k in ("patch_size", "temporal_patch_size", "merge_size"):
                kw[k] = int(v)
            elif k in floats:
                kw[k] = float(v)
            elif k in ("image_mean", "image_std"):
                kw[k] = tuple(float(x) for x in v)
            elif k in cls._FIXED:
                if v != cls._FIXED[k]:
                    raise ProcessorError(f"{path}: {k}={v!r} is not supported (only {cls._FIXED[k]!r} is)")
            elif k not in cls._IGNORED:
                raise ProcessorError(f"{path}: unknown key {k!r}; minglm4v does not know what it would change")
        except (TypeError, ValueError) as e:
            if isinstance(e, ProcessorError):
                raise
            raise ProcessorError(f"{path}: {k}={v!r} is not a valid value ({e})") from e
    return cls(**kw)


def _common_settings(c) -> dict[str, Any]:
    return {"size": {"shortest_edge": c.min_pixels, "longest_edge": c.max_pixels}, "do_rescale": True,
            "patch_size": c.patch_size, "temporal_patch_size": c.temporal_patch_size, "merge_size": c.merge_size,
            "image_mean": list(c.image_mean), "image_std": list(c.image_std)}


class Processor:
    """`processor.apply_chat_template(messages)` -> dict of tensors ready for `model(**inputs)`."""

    def __init__(self, tokenizer: Tokenizer, image_config: ImageProcessorConfig | None = None,
                 chat_template: str | None = None, video_config: VideoProcessorConfig | None = None):
        self.tokenizer = tokenizer
        self.image_config = image_config or ImageProcessorConfig()
        self.video_config = video_config or VideoProcessorConfig.matching(self.image_config)
        # None or GLM-4.1V's own template: the Python renderer (chat.py); any other template: rendered by jinja2
        self.chat_template = None if chat_template is None or chat.template_is_glm41v(chat_template) \
            else chat_template
        self.image_token_id = tokenizer.token_to_id("<|image|>")
        self.video_token_id = tokenizer.token_to_id("<|video|>")
        self.pad_token_id = tokenizer.token_to_id("<|endoftext|>")
        for token in ("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>"):
            tokenizer.token_to_id(token)  # the prompt format needs them: fail now, not halfway through a prompt

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Processor":
        folder = Path(folder)
        if not folder.is_dir():
            raise ProcessorError(f"processor folder {folder} not found")
        pre = folder / "preprocessor_config.json"
        if not pre.is_file():
            raise ProcessorError(f"{pre} not found: a checkpoint folder must contain preprocessor_config.json "
                                 "(the image preprocessing settings)")
        image_config = ImageProcessorConfig.from_file(pre)
        vpre = folder / "video_preprocessor_config.json"  # absent: published video settings (see `matching`)
        video_config = VideoProcessorConfig.from_file(vpre) if vpre.is_file() else None
        return cls(Tokenizer.from_pretrained(folder), image_config, _read_template(folder), video_config)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(self.image_config.to_dict(), indent=4) + "\n")
        (folder / "video_preprocessor_config.json").write_text(json.dumps(self.video_config.to_dict(), indent=4)
                                                               + "\n")
        if self.chat_template is not None:
            (folder / "chat_template.jinja").write_text(self.chat_template)

    # ------------------------------------------------------------------ text

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            return chat.render_chat(messages, add_generation_prompt)
        return chat.render_with_template(self.chat_template, messages, add_generation_prompt)

    def check_stop_ids(self, ids) -> list[int]:
        """Stop ids must be tokens of this tokenizer (a config from another model would never stop)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        missing = [i for i in ids if self.tokenizer.id_to_token(i) is None]
        if missing:
            raise ProcessorError(f"stop ids {missing} are not in the tokenizer ({self.tokenizer.source}, "
                                 f"{self.tokenizer.vocab_size} tokens); check eos_token_id in config.json or pass "
                                 "eos_token_id= explicitly")
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]

    # ------------------------------------------------------------------ the whole thing

    def apply_chat_template(self, conversations, add_generation_prompt: bool = True) -> dict[str, torch.Tensor]:
        """One conversation (a list of messages) or a list of them -> input_ids, attention_mask (B, L) and, when
        there are images, pixel_values (N, 1176) and image_grid_thw (n, 3), or, when there are videos,
        pixel_values_videos (N, 1176) and video_grid_thw (n, 3); images and videos each in reading order."""
        batch = _as_batch(conversations)
        texts, images, videos = [], [], []
        for conv in batch:
            chat.check_messages(conv)
            texts.append(self.render(conv, add_generation_prompt))
            items = [item for msg in conv if isinstance(msg["content"], (list, tuple)) for item in msg["content"]]
            images.append([item for item in items if chat.item_kind(item) == "image"])
            videos.append([item for item in items if chat.item_kind(item) == "video"])
        if any(images) and any(videos):
            raise ProcessorError("this request holds both images and videos; GLM-4.1V cannot take them together "
                                 "(a video's frames use the same <|image|> placeholder id as an image, and the "
                                 "reference model mixes up their features). Send images and videos in separate "
                                 "requests")
        out: dict[str, torch.Tensor] = {}
        image_counts: list[int] = []
        flat = [_image_of(item) for ims in images for item in ims]
        if flat:
            c = self.image_config
            pixel_values, grid = preprocess(flat, min_pixels=c.min_pixels, max_pixels=c.max_pixels,
                                            patch_size=c.patch_size, temporal_patch_size=c.temporal_patch_size,
                                            merge_size=c.merge_size, mean=c.image_mean, std=c.image_std)
            out["pixel_values"], out["image_grid_thw"] = pixel_values, grid
            image_counts = num_image_tokens(grid, c.merge_size).tolist()
        blocks: list[list[int]] = []
        flat_videos = [item for vids in videos for item in vids]
        if flat_videos:
            v = self.preprocess_videos([self._video_of(item) for item in flat_videos])
            out["pixel_values_videos"], out["video_grid_thw"] = v.pixel_values_videos, v.video_grid_thw
            blocks = [self._video_ids(g, ts) for g, ts in zip(v.video_grid_thw.tolist(), v.timestamps)]
        rows, i_start, v_start = [], 0, 0
        for b, (text, ims, vids) in enumerate(zip(texts, images, videos)):
            rows.append(self._expand(self.tokenizer.encode(text), image_counts[i_start:i_start + len(ims)],
                                     blocks[v_start:v_start + len(vids)], b))
            i_start += len(ims)
            v_start += len(vids)
        out["input_ids"], out["attention_mask"] = self._left_pad(rows)
        keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
                "video_grid_thw")
        return {k: out[k] for k in keys if k in out}

    # ------------------------------------------------------------------ video

    def preprocess_videos(self, videos) -> V.VideoInputs:
        """File paths / `video.SampledVideo`s -> `video.VideoInputs` with this processor's video settings (the
        pixels and grids, plus each video's frame indices and per-temporal-patch timestamps)."""
        c = self.video_config
        return V.preprocess_videos(videos, sample_fps=c.fps, max_duration=c.max_duration, min_pixels=c.min_pixels,
                                   max_pixels=c.max_pixels, patch_size=c.patch_size,
                                   temporal_patch_size=c.temporal_patch_size, merge_size=c.merge_size,
                                   mean=c.image_mean, std=c.image_std)

    def _video_of(self, item: dict):
        v = item.get("video", item.get("path"))
        if isinstance(v, V.SampledVideo):
            return v
        if isinstance(v, (str, Path)):
            if str(v).startswith(("http://", "https://")):
                raise V.VideoError(f"video {v}: minglm4v does not download; save the file and pass its path")
            return Path(v)
        if isinstance(v, (list, tuple, np.ndarray)):
            if item.get("fps") is None:
                raise V.VideoError("a video given as frames needs their frame rate: add 'fps': <frames per second> "
                                   "to the video item (timestamps and sampling depend on it)")
            c = self.video_config
            return V.from_frames(v, float(item["fps"]), sample_fps=c.fps, max_duration=c.max_duration)
        raise V.VideoError(f"a video item holds a {type(v).__name__}; give a file path, a list of frames (or a "
                           "(T, H, W, 3) uint8 array) with 'fps', or a minglm4v.video.SampledVideo")

    def _video_ids(self, grid: list[int], timestamps: list[float]) -> list[int]:
        """The ids that replace one <|video|>: per temporal patch, an image block and its whole seconds as text
        (video.frame_blocks_text), tokenized as transformers does after its text replacement."""
        return self.tokenizer.encode(V.frame_blocks_text(grid, timestamps, self.video_config.merge_size))

    # ------------------------------------------------------------------ placeholders

    def _expand(self, ids: list[int], counts: list[int], videos: list[list[int]], which: int) -> list[int]:
        """Repeat the k-th <|image|> id counts[k] times; replace the k-th <|video|> id by videos[k]."""
        slots = [j for j, t in enumerate(ids) if t == self.image_token_id]
        vslots = [j for j, t in enumerate(ids) if t == self.video_token_id]
        if len(slots) != len(counts):
            raise ProcessorError(f"conversation {which}: the prompt has {len(slots)} <|image|> placeholders but "
                                 f"{len(counts)} images were given; every image needs exactly one image item "
                                 "(and no literal '<|image|>' in the text)")
        if len(vslots) != len(videos):
            raise ProcessorError(f"conversation {which}: the prompt has {len(vslots)} <|video|> placeholders but "
                                 f"{len(videos)} videos were given; every video needs exactly one video item "
                                 "(and no literal '<|video|>' in the text)")
        fill = dict(zip(slots, ([self.image_token_id] * n for n in counts)))
        fill.update(zip(vslots, videos))
        out, prev = [], 0
        for j in sorted(fill):
            out += ids[prev:j] + fill[j]
            prev = j + 1
        return out + ids[prev:]

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), self.pad_token_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(rows), L), dtype=torch.long)  # (B, L)
        for b, r in enumerate(rows):
            ids[b, L - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[b, L - len(r):] = 1
        return ids, mask


def load_processor(path: str | Path) -> Processor:
    """The processor of a checkpoint folder (tokenizer.json, preprocessor_config.json, chat template)."""
    return Processor.from_pretrained(path)


def _read_template(folder: Path) -> str | None:
    f = folder / "chat_template.jinja"
    if f.is_file():
        return f.read_text()
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            template = json.loads(cfg.read_text()).get("chat_template")
        except json.JSONDecodeError as e:
            raise ProcessorError(f"{cfg} is not valid JSON: {e}") from e
        if template is not None and not isinstance(template, str):
            raise ProcessorError(f"{cfg}: only a single string chat_template is supported")
        return template
    return None


def _as_batch(conversations) -> list[list[dict]]:
    if isinstance(conversations, (list, tuple)) and conversations and all(
            isinstance(c, (list, tuple)) for c in conversations):
        return [list(c) for c in conversations]
    return [conversations]


def _image_of(item: dict):
    im = item.get("image", item.get("path"))
    if isinstance(im, (str, Path)):
        if str(im).startswith(("http://", "https://")):
            raise ImageError(f"image {im}: minglm4v does not download; save the file and pass its path")
        return load_image(im)
    if isinstance(im, (Image.Image, np.ndarray)):
        return im
    raise ImageError(f"an image item holds a {type(im).__name__}; give a PIL image, an HxWxC uint8 array or a "
                     "file path")
