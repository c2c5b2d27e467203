"""The whole GLM-4.1V model: embed the prompt, splice vision features into the placeholders, decode, project.

Mirrors transformers' `Glm4vForConditionalGeneration.forward` and `Glm4vModel.forward` (docs/glm41v.md §5, §6):
the module tree is `model.visual` (vision.py), `model.language_model` (decoder.py) and `lm_head`, so `state_dict()`
keys are exactly the checkpoint's keys. Inputs are checked first (model_inputs.py).

Forward, for a prompt whose placeholders were already expanded (docs/glm41v.md §2.4, §3.3):
    x = embed_tokens(input_ids)                                   (B, L, C)
    x[input_ids == image_token_id] = visual(pixels, grid)         (n_placeholders, C), in order
    pos = get_rope_index(input_ids, grids, attention_mask)        (3, B, L)
    logits = lm_head(language_model(x, pos, attention_mask))      (B, L, V)

Images and video share the placeholder id; a prompt with both is refused (see mrope.py).

Shapes: B batch, L sequence, C width, V vocabulary, N patches (rows of pixel_values).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Glm4vConfig
from .decoder import TextModel
from .errors import InputError
from .model_inputs import check_input_ids, check_mm_token_type_ids, grid_tensor
from .mrope import get_rope_index, text_position_ids
from .vision import VisionModel


class Glm4vModel(nn.Module):
    """`model.*` of the checkpoint: the vision tower and the language model."""

    def __init__(self, config: Glm4vConfig):
        super().__init__()
        self.visual = VisionModel(config.vision_config)
        self.language_model = TextModel(config.text_config)


class Glm4vForConditionalGeneration(nn.Module):
    """GLM-4.1V. `model(input_ids, ...)` returns logits (B, L, V); `model.config` is the Glm4vConfig."""

    def __init__(self, config: Glm4vConfig):
        super().__init__()
        self.config = config
        self.model = Glm4vModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)

    @property
    def visual(self) -> VisionModel:
        return self.model.visual

    @property
    def language_model(self) -> TextModel:
        return self.model.language_model

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (of the embeddings, which are never quantized; quant.py)."""
        return self.language_model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.language_model.embed_tokens.weight.device

    def check_inputs(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None,
                     pixel_values_videos=None, video_grid_thw=None, mm_token_type_ids=None, check_pixels: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Check a model call's inputs before any work (model_inputs.py; with `check_pixels` also vision.py's check
        of the pixels against their grids). -> (input_ids as int64, image_grid_thw, video_grid_thw: (n, 3) int64 or
        None)."""
        input_ids = check_input_ids(input_ids, self.config.text_config.vocab_size)
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            raise InputError(f"attention_mask must be a torch tensor of 0/1 like input_ids, got "
                             f"{type(attention_mask).__name__}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise InputError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                             f"{tuple(input_ids.shape)}; give one 0/1 per token")
        check_mm_token_type_ids(mm_token_type_ids, input_ids, self.config)
        image_grid_thw, video_grid_thw = grid_tensor(image_grid_thw, "image"), grid_tensor(video_grid_thw, "video")
        if pixel_values is not None and pixel_values_videos is not None:
            raise InputError("got both pixel_values and pixel_values_videos: GLM-4.1V cannot mix images and videos "
                             "in one prompt (they share the placeholder id); send them in separate calls")
        for pixels, grid, what in ((pixel_values, image_grid_thw, "image"),
                                   (pixel_values_videos, video_grid_thw, "video")):
            if pixels is None and grid is not None:
                raise InputError(f"{what}_grid_thw given without the pixels; pass "
                                 f"{'pixel_values' if what == 'image' else 'pixel_values_videos'} too")
            if pixels is not None and grid is None:
                raise InputError(f"{what} pixels given without {what}_grid_thw; pass the grid the preprocessor "
                                 "returned with them")
            if pixels is not None and check_pixels:
                self.visual.check_inputs(pixels, grid)  # rows against sum(t*h*w), dtype, NaN: before any allocation
        return input_ids, image_grid_thw, video_grid_thw

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              image_grid_thw: torch.Tensor | None = None, pixel_values_videos: torch.Tensor | None = None,
              video_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the vision features written over the placeholder tokens. -> (B, L, C)."""
        input_ids, image_grid_thw, video_grid_thw = self.check_inputs(  # the vision tower checks the pixels itself
            input_ids, None, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw, check_pixels=False)
        x = self.language_model.embed_tokens(input_ids)  # (B, L, C)
        for pixels, grid, what in ((pixel_values, image_grid_thw, "image"),
                                   (pixel_values_videos, video_grid_thw, "video")):
            if pixels is not None:
                feats = self.visual(pixels, grid)  # (N/m^2, C), in the vision tower's dtype
                x = self._splice(input_ids, x, feats, what)
        return x

    def _splice(self, input_ids: torch.Tensor, x: torch.Tensor, feats: torch.Tensor, what: str) -> torch.Tensor:
        """Write feats over the placeholder positions, in reading order (row 0 first)."""
        slots = input_ids == self.config.image_token_id  # (B, L)
        n = int(slots.sum())
        if n != feats.shape[0]:
            raise InputError(f"the prompt holds {n} {what} placeholder tokens (id {self.config.image_token_id}) but "
                             f"the vision tower returned {feats.shape[0]} {what} features; expand each placeholder "
                             "to grid_t*grid_h*grid_w/merge_size^2 tokens (preprocess/the prompt builder do this)")
        x = x.clone()
        x[slots] = feats.to(x.dtype)  # (n, C) into the masked rows, in order
        return x

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """3-D positions (3, B, L) and rope_deltas (B, 1) for a prefill (mrope.py)."""
        image_grid_thw, video_grid_thw = grid_tensor(image_grid_thw, "image"), grid_tensor(video_grid_thw, "video")
        if image_grid_thw is None and video_grid_thw is None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            pos, deltas = text_position_ids(attention_mask)
            n = int((input_ids == self.config.image_token_id).sum())
            if n:
                raise InputError(f"the prompt holds {n} image placeholder tokens (id {self.config.image_token_id}) "
                                 "but no image_grid_thw/video_grid_thw; pass the pixels and grids for them")
            return pos, deltas
        return get_rope_index(input_ids, self.config, image_grid_thw, video_grid_thw, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                pixel_values_videos: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                mm_token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        """input_ids (B, L) -> logits (B, L, V). attention_mask (B, L): 1 real token, 0 (left) padding.

        mm_token_type_ids (B, L), as transformers' processor returns it, is checked against the ids.
        position_ids (3, B, L) may be given (e.g. while decoding); by default they are computed from the prompt."""
        input_ids, image_grid_thw, video_grid_thw = self.check_inputs(
            input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw,
            mm_token_type_ids)
        x = self.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)  # (B, L, C)
        if position_ids is None:
            position_ids, _ = self.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
        return self.logits(x, position_ids.to(x.device), attention_mask)  # (B, L, V)

    def logits(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None, cache=None, last_only: bool = False) -> torch.Tensor:
        """Decoder + lm_head on embeddings. With `last_only`, only the last position is projected onto the
        vocabulary (all generation needs; it saves a (B, L, V) matrix)."""
        h = self.language_model(inputs_embeds, position_ids, attention_mask, cache)  # (B, L, C)
        return self.lm_head(h[:, -1:] if last_only else h)  # (B, L or 1, V)

    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 **kwargs):
        """Prompt plus new tokens, (B, L + n), called as transformers' is: `model.generate(**inputs,
        max_new_tokens=..., do_sample=..., temperature=...)`. Every keyword is in generate_options.py (sampling,
        stop ids, seed, use_cache, return_dict_in_generate, ...); an unknown one is a GenerationError."""
        from .generation import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "Glm4vForConditionalGeneration":
        """transformers' spelling of `minglm4v.load`: torch_dtype=/dtype=, device_map=, ... (auto.py)."""
        from .auto import model_from_pretrained

        return model_from_pretrained(pretrained_model_name_or_path, **kwargs)
