"""Generation: prefill the prompt once, then decode one token per step from the KV cache.

Mirrors what transformers' `generate` does for GLM-4.1V (greedy or sampled, several stop ids, left-padded batches):

    prefill:  logits, cache = model(prompt)                  all prompt tokens at once, positions from mrope
    step k:   token_k = sample(logits[:, -1])                sampling.py
              logits  = model(token_k, cache)                one token; position = real index + rope_delta
    stop:     when every row has produced a stop id, or after max_new_tokens

A row that has stopped is filled with the pad id, like transformers. The result is the prompt plus the new tokens,
(B, L + n). Shapes: B batch, L prompt length (with left padding), V vocabulary.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from .cache import KVCache
from .errors import MinGlmError
from .sampling import SamplingConfig, SamplingError, next_token


class GenerationError(MinGlmError, ValueError):
    """Generation settings or a prompt that cannot be generated from."""


def _stop_ids(model, eos_token_id) -> list[int]:
    ids = model.config.text_config.eos_token_id if eos_token_id is None else eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids)
    V = model.config.text_config.vocab_size
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < V]
    if bad:
        raise GenerationError(f"stop ids {bad} are not token ids of this model (vocabulary of {V})")
    return ids


@torch.no_grad()
def generate_steps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None, *,
                   max_new_tokens: int = 32, eos_token_id: int | Sequence[int] | None = None,
                   pad_token_id: int | None = None, seed: int | None = None,
                   **sampling) -> Iterator[torch.Tensor]:
    """Yield the (B,) next tokens step by step (stopped rows get the pad id); ends when all rows stopped."""
    cfg = SamplingConfig(**sampling)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise GenerationError(f"input_ids must be (batch, length) with length >= 1, got {tuple(input_ids.shape)}")
    stops = torch.tensor(_stop_ids(model, eos_token_id), device=input_ids.device)
    t = model.config.text_config
    pad = t.pad_token_id if pad_token_id is None else pad_token_id
    if pad is None:
        pad = int(stops[0])
    B, L = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    limit = t.max_position_embeddings
    generator = torch.Generator(device=input_ids.device).manual_seed(seed) if seed is not None else None

    # prefill: the whole prompt, once
    position_ids, rope_deltas = model.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
    longest = int(position_ids.max()) + 1
    if longest + max_new_tokens > limit:
        raise GenerationError(f"the prompt needs {longest} positions and max_new_tokens={max_new_tokens} more, "
                              f"but the model's context is {limit} (max_position_embeddings); shorten the prompt, "
                              "use smaller images, or ask for fewer new tokens")
    cache = KVCache.for_model(model, B, L + max_new_tokens)
    x = model.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)  # (B, L, C)
    logits = model.logits(x, position_ids, attention_mask, cache, last_only=True)  # (B, 1, V)

    seen = None
    if cfg.repetition_penalty != 1.0:  # tokens already in each row, prompt and padding included (as transformers)
        seen = torch.zeros(B, t.vocab_size, dtype=torch.bool, device=input_ids.device)
        seen.scatter_(1, input_ids, True)
    # Without padding every key is visible to a new token, so decode steps need no mask at all; with padding the
    # mask grows by one column (a real token) per step. The k-th new token sits at (real tokens before it) +
    # rope_delta on all three axes (mrope.decode_position_ids), kept here as a running count.
    padded = not bool(attention_mask.all())
    position = attention_mask.long().sum(-1, keepdim=True) + rope_deltas.to(input_ids.device)  # (B, 1)
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = next_token(logits[:, -1], cfg, seen, generator)  # (B,)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        yield token
        unfinished &= (token[:, None] != stops).all(-1)  # a row stops once it produced a stop id
        if not bool(unfinished.any()) or step == max_new_tokens - 1:
            return
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        if padded:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)  # (B, L+k)
        position_ids = position.expand(3, B, 1)  # (3, B, 1)
        position = position + 1
        x = model.language_model.embed_tokens(token[:, None])  # (B, 1, C)
        logits = model.logits(x, position_ids, attention_mask if padded else None, cache, last_only=True)  # (B, 1, V)


def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """The prompt plus the new tokens, (B, L + n), like transformers' `generate`."""
    steps = list(generate_steps(model, input_ids, attention_mask, **kwargs))
    if not steps:
        return input_ids
    return torch.cat([input_ids, torch.stack(steps, dim=1)], dim=1)


def stream(model, processor, inputs: dict, skip_special_tokens: bool = True, **kwargs) -> Iterator[str]:
    """Text pieces of a single prompt's answer as they are generated (for a terminal or a notebook)."""
    if inputs["input_ids"].shape[0] != 1:
        raise GenerationError("stream() takes one prompt; use generate() for a batch")
    ids: list[int] = []
    printed = ""
    for token in generate_steps(model, **inputs, **kwargs):
        ids.append(int(token[0]))
        text = processor.decode(ids, skip_special_tokens=skip_special_tokens)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the rest of its bytes
            continue
        if len(text) > len(printed):
            yield text[len(printed):]
            printed = text
    text = processor.decode(ids, skip_special_tokens=skip_special_tokens)
    if len(text) > len(printed):  # bytes that never completed a character: show them as they decode
        yield text[len(printed):]


__all__ = ["generate", "generate_steps", "stream", "GenerationError", "SamplingError"]
