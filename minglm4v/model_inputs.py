"""The tensors a model call takes, checked before any work: ids, token types, grids, pixels.

Mirrors what transformers' `Glm4vForConditionalGeneration.forward` expects (docs/glm41v.md §5, §6), with a clear
InputError where transformers would fail deep inside (an IndexError in the embedding, an AttributeError on a list):

    input_ids           (B, L) integer tensor, every id in [0, vocab_size)
    mm_token_type_ids   (B, L): 1 on image placeholders, 2 on placeholders inside a <|begin_of_video|> ...
                        <|end_of_video|> span, 0 elsewhere; what transformers' Glm4vProcessor returns. The ids already
                        say all of this, so it is only checked against them (a mismatch means the two do not belong
                        together)
    *_grid_thw          (n, 3) integer [t, h, w] rows
    pixel_values        (N, patch_dim) floating point, finite (checked in vision.py)

Shapes: B batch, L sequence, N patches.
"""

from __future__ import annotations

import torch

from .errors import InputError

TYPE_NAMES = {0: "text", 1: "image placeholder", 2: "video placeholder"}


def check_input_ids(input_ids, vocab_size: int) -> torch.Tensor:
    """(B, L) integer ids in the vocabulary -> the same ids as int64."""
    if input_ids is None:
        raise InputError("input_ids is missing; pass the ids the processor returned "
                         "(model.generate(**processor.apply_chat_template(messages)))")
    if not isinstance(input_ids, torch.Tensor):
        raise InputError(f"input_ids must be a torch tensor of token ids, shape (batch, length), got "
                         f"{type(input_ids).__name__}; e.g. torch.tensor([ids])")
    if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
        raise InputError(f"input_ids has dtype {input_ids.dtype}, but token ids are integers; pass a torch.long "
                         "tensor (the processor returns one)")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}"
                         + ("; use input_ids[None] for a single prompt" if input_ids.ndim == 1 else ""))
    outside = (input_ids < 0) | (input_ids >= vocab_size)
    if bool(outside.any()):
        where = outside.nonzero()[:3].tolist()
        ids = [int(input_ids[r, c]) for r, c in where]
        raise InputError(f"input_ids holds ids outside this model's vocabulary [0, {vocab_size}): {ids} at "
                         f"(row, position) {where}; the ids come from a tokenizer that does not match the model")
    return input_ids.long()


def expected_token_types(input_ids: torch.Tensor, image_token_id: int, video_start_id: int,
                         video_end_id: int) -> torch.Tensor:
    """(B, L) ids -> (B, L) types as transformers' processor makes them: a placeholder is video (2) when more
    <|begin_of_video|> than <|end_of_video|> come before it (itself included), else image (1); the rest is text (0)."""
    in_video = (input_ids == video_start_id).cumsum(-1) > (input_ids == video_end_id).cumsum(-1)  # (B, L)
    placeholder = input_ids == image_token_id
    return torch.where(placeholder, torch.where(in_video, 2, 1), 0)


def check_mm_token_type_ids(mm_token_type_ids, input_ids: torch.Tensor, config) -> None:
    """Refuse token types that disagree with the ids (InputError naming the first disagreement)."""
    if mm_token_type_ids is None:
        return
    if not isinstance(mm_token_type_ids, torch.Tensor):
        raise InputError(f"mm_token_type_ids must be a torch tensor like input_ids, got "
                         f"{type(mm_token_type_ids).__name__}; pass what the processor returned")
    m = mm_token_type_ids
    if m.dtype == torch.bool or m.is_floating_point() or m.is_complex() or m.shape != input_ids.shape:
        raise InputError(f"mm_token_type_ids must be an integer tensor of input_ids' shape {tuple(input_ids.shape)},"
                         f" got dtype {m.dtype} and shape {tuple(m.shape)}")
    want = expected_token_types(input_ids, config.image_token_id, config.video_start_token_id,
                                config.video_end_token_id)
    wrong = m.to(want.device) != want
    if bool(wrong.any()):
        r, c = wrong.nonzero()[0].tolist()
        got = int(m[r, c])
        raise InputError(f"mm_token_type_ids[{r}, {c}] = {got} ({TYPE_NAMES.get(got, 'not a type')}), but "
                         f"input_ids there is {int(input_ids[r, c])}, a {TYPE_NAMES[int(want[r, c])]} token; the "
                         "token types must be 1 on image placeholders, 2 on video placeholders and 0 elsewhere: "
                         "pass the mm_token_type_ids the processor returned with these input_ids, or leave them out")


def grid_tensor(grid, what: str) -> torch.Tensor | None:
    """A grid given as a tensor, array or nested list -> (n, 3) int64 tensor; anything else is an InputError."""
    if grid is None:
        return None
    try:
        g = torch.as_tensor(grid)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise InputError(f"{what}_grid_thw must be a (n, 3) tensor of [t, h, w] rows, got {grid!r:.60}") from e
    if g.ndim != 2 or g.shape[1] != 3 or g.is_floating_point() or g.is_complex() or g.dtype == torch.bool:
        raise InputError(f"{what}_grid_thw must be a (n, 3) integer tensor of [t, h, w] rows, got shape "
                         f"{tuple(g.shape)} and dtype {g.dtype}; pass the grid the preprocessor returned")
    return g.long()
