"""Messages -> model inputs: the chat format, the tokenizer and the image preprocessor together.

Mirrors transformers' `Glm4vProcessor.apply_chat_template(..., tokenize=True, return_dict=True,
return_tensors="pt")`:

    messages --chat.render_chat--> "[gMASK]<sop><|user|>\\n<|begin_of_image|><|image|><|end_of_image|>What...?"
             --tokenizer--> ids with one <|image|> per image
             --expand--> each <|image|> repeated t*h*w/m^2 times (its image's token count, facts §2.4)
    images   --patchify.preprocess--> pixel_values (N, 1176), image_grid_thw (n, 3)

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
from .errors import ImageError, MinGlmError
from .patchify import IMAGE_MEAN, IMAGE_STD, MAX_PIXELS, MIN_PIXELS, load_image, num_image_tokens, preprocess
from .tokenizer import Tokenizer


class ProcessorError(MinGlmError, ValueError):
    """A processor folder or a prompt that cannot be turned into model inputs."""


@dataclass(frozen=True)
class ImageProcessorConfig:
    """The fields of `preprocessor_config.json` (facts §2), with the published values as defaults."""
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
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ProcessorError(f"cannot read {path}: {e}") from e
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k == "size":
                if not isinstance(v, dict) or set(v) != {"shortest_edge", "longest_edge"}:
                    raise ProcessorError(f"{path}: 'size' must be {{'shortest_edge': min_pixels, 'longest_edge': "
                                         f"max_pixels}} (pixel counts), got {v!r}")
                kw["min_pixels"], kw["max_pixels"] = int(v["shortest_edge"]), int(v["longest_edge"])
            elif k in ("patch_size", "temporal_patch_size", "merge_size"):
                kw[k] = int(v)
            elif k in ("image_mean", "image_std"):
                kw[k] = tuple(float(x) for x in v)
            elif k in cls._FIXED:
                if v != cls._FIXED[k]:
                    raise ProcessorError(f"{path}: {k}={v!r} is not supported (only {cls._FIXED[k]!r} is)")
            elif k not in cls._IGNORED:
                raise ProcessorError(f"{path}: unknown key {k!r}; minglm4v does not know what it would change")
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {"size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                "do_rescale": True, "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
                "merge_size": self.merge_size, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std), "image_processor_type": "Glm4vImageProcessor",
                "processor_class": "Glm4vProcessor"}


class Processor:
    """`processor.apply_chat_template(messages)` -> dict of tensors ready for `model(**inputs)`."""

    def __init__(self, tokenizer: Tokenizer, image_config: ImageProcessorConfig | None = None,
                 chat_template: str | None = None):
        self.tokenizer = tokenizer
        self.image_config = image_config or ImageProcessorConfig()
        # None or GLM-4.1V's own template: the Python renderer (chat.py); any other template: rendered by jinja2
        self.chat_template = None if chat_template is None or chat.template_is_glm41v(chat_template) \
            else chat_template
        self.image_token_id = tokenizer.token_to_id("<|image|>")
        self.pad_token_id = tokenizer.token_to_id("<|endoftext|>")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Processor":
        folder = Path(folder)
        if not folder.is_dir():
            raise ProcessorError(f"processor folder {folder} not found")
        pre = folder / "preprocessor_config.json"
        if not pre.is_file():
            raise ProcessorError(f"{pre} not found: a checkpoint folder must contain preprocessor_config.json "
                                 "(the image preprocessing settings)")
        return cls(Tokenizer.from_pretrained(folder), ImageProcessorConfig.from_file(pre), _read_template(folder))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save(folder)
        (folder / "preprocessor_config.json").write_text(json.dumps(self.image_config.to_dict(), indent=4) + "\n")
        if self.chat_template is not None:
            (folder / "chat_template.jinja").write_text(self.chat_template)

    # ------------------------------------------------------------------ text

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        if self.chat_template is None:
            return chat.render_chat(messages, add_generation_prompt)
        return chat.render_with_template(self.chat_template, messages, add_generation_prompt)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in sequences]

    # ------------------------------------------------------------------ the whole thing

    def apply_chat_template(self, conversations, add_generation_prompt: bool = True) -> dict[str, torch.Tensor]:
        """One conversation (a list of messages) or a list of them -> input_ids, attention_mask (B, L) and, when
        there are images, pixel_values (N, 1176) and image_grid_thw (n, 3), images in reading order."""
        batch = _as_batch(conversations)
        texts, images = [], []
        for conv in batch:
            chat.check_messages(conv)
            texts.append(self.render(conv, add_generation_prompt))
            images.append([_image_of(item) for msg in conv if isinstance(msg["content"], (list, tuple))
                           for item in msg["content"] if chat.item_kind(item) == "image"])
        for conv in batch:
            if any(chat.item_kind(it) == "video" for m in conv if isinstance(m["content"], (list, tuple))
                   for it in m["content"]):
                raise ProcessorError("video input is not supported by this processor yet")
        out: dict[str, torch.Tensor] = {}
        flat = [im for ims in images for im in ims]
        counts: list[int] = []
        if flat:
            c = self.image_config
            pixel_values, grid = preprocess(flat, min_pixels=c.min_pixels, max_pixels=c.max_pixels,
                                            patch_size=c.patch_size, temporal_patch_size=c.temporal_patch_size,
                                            merge_size=c.merge_size, mean=c.image_mean, std=c.image_std)
            out["pixel_values"], out["image_grid_thw"] = pixel_values, grid
            counts = num_image_tokens(grid, c.merge_size).tolist()
        rows, start = [], 0
        for i, (text, ims) in enumerate(zip(texts, images)):
            rows.append(self._expand(self.tokenizer.encode(text), counts[start:start + len(ims)], i))
            start += len(ims)
        out["input_ids"], out["attention_mask"] = self._left_pad(rows)
        return {k: out[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw") if k in out}

    def _expand(self, ids: list[int], counts: list[int], which: int) -> list[int]:
        """Repeat the k-th <|image|> id counts[k] times."""
        slots = [j for j, t in enumerate(ids) if t == self.image_token_id]
        if len(slots) != len(counts):
            raise ProcessorError(f"conversation {which}: the prompt has {len(slots)} <|image|> placeholders but "
                                 f"{len(counts)} images were given; every image needs exactly one image item "
                                 "(and no literal '<|image|>' in the text)")
        out, prev = [], 0
        for j, n in zip(slots, counts):
            out += ids[prev:j] + [self.image_token_id] * n
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
