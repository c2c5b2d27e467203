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

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .cache import KVCache
from .errors import GenerationError, SamplingError
from .mrope import decode_position_ids
from .sampling import SamplingConfig, next_token


def _stop_ids(model, eos_token_id) -> list[int]:
    ids = model.config.text_config.eos_token_id if eos_token_id is None else eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids)
    V = model.config.text_config.vocab_size
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < V]
    if bad:
        raise GenerationError(f"stop ids {bad} are not token ids of this model (vocabulary of {V})")
    return ids


def check_attention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The (B, L) mask of a prompt to generate from: 0/1, the same shape as the ids, padding on the left only
    (0...0 1...1, new tokens are appended after the last real token), at least one real token per row."""
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise GenerationError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                              f"{tuple(input_ids.shape)}; give one 0/1 per token")
    if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        raise GenerationError("attention_mask must hold only 0 (padding) and 1 (real token)")
    m = attention_mask.long()
    if not bool(m.any(-1).all()):
        raise GenerationError(f"rows {(~m.bool().any(-1)).nonzero().flatten().tolist()} of the batch are all "
                              "padding; every prompt needs at least one token")
    if not bool((m.cummax(-1).values == m).all()):
        raise GenerationError("generation needs left padding (each row 0...0 1...1), but the attention_mask has "
                              "padding after real tokens; pad on the left, as processor.apply_chat_template does")
    return m


@dataclass
class Prefill:
    """Everything a decode loop starts from, after the prompt has run once through the model."""
    cfg: SamplingConfig
    stops: torch.Tensor  # (S,) stop ids
    pad: int  # what a row that has stopped gets
    attention_mask: torch.Tensor  # (B, L)
    logits: torch.Tensor  # (B, V): scores of the first new token
    position: torch.Tensor  # (B, 1): position of the first new token, the same on the t, h and w axes
    cache: KVCache
    seen: torch.Tensor | None  # (B, V) tokens already in each row, for the repetition penalty
    generator: torch.Generator | None


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, pixel_values=None,
            image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None, *, max_new_tokens: int = 32,
            eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
            seed: int | None = None, cache_cls=KVCache, **sampling) -> Prefill:
    """Check the request, run the prompt once into a fresh cache of `cache_cls`, set up the sampler."""
    cfg = SamplingConfig(**sampling)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens <= 0:
        raise GenerationError(f"max_new_tokens={max_new_tokens!r} must be a positive integer")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise GenerationError(f"input_ids must be (batch, length) with length >= 1, got {tuple(input_ids.shape)}")
    attention_mask = check_attention_mask(input_ids, attention_mask)
    dev = input_ids.device
    t = model.config.text_config
    stops = _stop_ids(model, eos_token_id)
    pad = t.pad_token_id if pad_token_id is None else pad_token_id
    if pad is None:  # a row that stops is filled with its stop id (without stop ids no row stops)
        pad = stops[0] if stops else 0
    if not isinstance(pad, int) or not 0 <= pad < t.vocab_size:
        raise GenerationError(f"pad_token_id={pad!r} is not a token id of this model (vocabulary of {t.vocab_size})")
    B, L = input_ids.shape

    position_ids, rope_deltas = model.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
    longest = int(position_ids.max()) + 1
    if longest + max_new_tokens > t.max_position_embeddings:
        raise GenerationError(f"the prompt needs {longest} positions and max_new_tokens={max_new_tokens} more, "
                              f"but the model's context is {t.max_position_embeddings} (max_position_embeddings); "
                              "shorten the prompt, use smaller images, or ask for fewer new tokens")
    cache = cache_cls(t.num_hidden_layers, B, t.num_key_value_heads, t.head_dim, L + max_new_tokens, model.dtype,
                      model.device)
    x = model.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)  # (B, L, C)
    logits = model.logits(x, position_ids, attention_mask, cache, last_only=True)[:, -1]  # (B, V)
    seen = None
    if cfg.repetition_penalty != 1.0:  # tokens already in each row, prompt and padding included (as transformers)
        seen = torch.zeros(B, t.vocab_size, dtype=torch.bool, device=dev)
        seen.scatter_(1, input_ids, True)
    # the first new token's position, the same on all three axes; each later one is one more
    with_next = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)  # (B, L + 1)
    position = decode_position_ids(rope_deltas.to(dev), with_next, 1)[0]  # (B, 1)
    generator = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    return Prefill(cfg, torch.tensor(stops, dtype=torch.long, device=dev), pad, attention_mask, logits, position,
                   cache, seen, generator)


@torch.no_grad()
def generate_steps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None, *,
                   max_new_tokens: int = 32, **kwargs) -> Iterator[torch.Tensor]:
    """Yield the (B,) next tokens step by step (stopped rows get the pad id); ends when all rows stopped.

    Options: eos_token_id, pad_token_id, seed, and the sampling settings of sampling.SamplingConfig."""
    p = prefill(model, input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                video_grid_thw, max_new_tokens=max_new_tokens, **kwargs)
    B = input_ids.shape[0]
    # Without padding every key is visible to a new token, so decode steps need no mask at all; with padding the
    # mask grows by one column (a real token) per step.
    padded = not bool(p.attention_mask.all())
    attention_mask, logits, position = p.attention_mask, p.logits, p.position
    unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)
    for step in range(max_new_tokens):
        token = next_token(logits, p.cfg, p.seen, p.generator)  # (B,)
        token = torch.where(unfinished, token, torch.full_like(token, p.pad))
        yield token
        unfinished &= (token[:, None] != p.stops).all(-1)  # a row stops once it produced a stop id
        if not bool(unfinished.any()) or step == max_new_tokens - 1:
            return
        if p.seen is not None:
            p.seen.scatter_(1, token[:, None], True)
        if padded:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)  # (B, L+k)
        x = model.language_model.embed_tokens(token[:, None])  # (B, 1, C)
        logits = model.logits(x, position.expand(3, B, 1), attention_mask if padded else None, p.cache,
                              last_only=True)[:, -1]  # (B, V)
        position = position + 1


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
