"""Token ids of tokenized prompts -> the model's id rows: placeholders expanded, token types, left padding.

Mirrors what transformers' `Glm4vProcessor.__call__` does after tokenizing (processing_glm4v.py: the placeholder
replacement of `replace_image_token` / `replace_video_token`, `create_mm_token_type_ids`, then the tokenizer's
left padding), on ids instead of text (docs/glm41v.md §2.4, §3.3). Shapes: B prompts, L longest prompt.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .errors import ProcessorError


def expand_placeholders(ids: list[int], image_id: int, video_id: int, counts: list[int], videos: list[list[int]],
                        which: int) -> list[int]:
    """Repeat the k-th image placeholder id counts[k] times; replace the k-th video placeholder id by videos[k]
    (its frames' ids). `which` numbers the prompt in errors."""
    slots = [j for j, t in enumerate(ids) if t == image_id]
    vslots = [j for j, t in enumerate(ids) if t == video_id]
    if len(slots) != len(counts):
        raise ProcessorError(f"conversation {which}: the prompt has {len(slots)} <|image|> placeholders but "
                             f"{len(counts)} images were given; every image needs exactly one image item "
                             "(and no literal '<|image|>' in the text)")
    if len(vslots) != len(videos):
        raise ProcessorError(f"conversation {which}: the prompt has {len(vslots)} <|video|> placeholders but "
                             f"{len(videos)} videos were given; every video needs exactly one video item "
                             "(and no literal '<|video|>' in the text)")
    fill = dict(zip(slots, ([image_id] * n for n in counts)))
    fill.update(zip(vslots, videos))
    out, prev = [], 0
    for j in sorted(fill):
        out += ids[prev:j] + fill[j]
        prev = j + 1
    return out + ids[prev:]


def token_types(ids: list[int], image_id: int, video_start_id: int, video_end_id: int) -> list[int]:
    """mm_token_type_ids of one row: 1 for an image's placeholder, 2 for a video frame's (an image placeholder
    between <|begin_of_video|> and <|end_of_video|>), 0 for everything else."""
    out, depth = [], 0
    for t in ids:
        depth += (t == video_start_id) - (t == video_end_id)
        out.append((2 if depth > 0 else 1) if t == image_id else 0)
    return out


def left_pad(rows: list[list[int]], pad_id: int, types: Callable[[list[int]], list[int]], padding: bool,
             return_tensors: str | None) -> dict:
    """input_ids, attention_mask, mm_token_type_ids (B, L), padded on the left to the longest row when `padding`;
    as int64 tensors ("pt"), numpy arrays ("np") or lists (None)."""
    if not rows or min(len(r) for r in rows) == 0:
        raise ProcessorError("a prompt has no tokens; give some text")
    lengths = sorted({len(r) for r in rows})
    if not padding and len(lengths) > 1 and return_tensors is not None:
        raise ProcessorError(f"the prompts have different lengths ({lengths}) and padding=False; pass padding=True, "
                             "or return_tensors=None for lists")
    L = lengths[-1]
    pad = [L - len(r) if padding else 0 for r in rows]
    text = {"input_ids": [[pad_id] * p + r for p, r in zip(pad, rows)],
            "attention_mask": [[0] * p + [1] * len(r) for p, r in zip(pad, rows)],
            "mm_token_type_ids": [[0] * p + types(r) for p, r in zip(pad, rows)]}
    if return_tensors == "pt":
        return {k: torch.tensor(v, dtype=torch.long) for k, v in text.items()}  # (B, L) each
    if return_tensors == "np":
        return {k: np.array(v, dtype=np.int64) for k, v in text.items()}
    return text
