"""Generation: prefill the prompt once, then decode one token per step from the KV cache.

Mirrors what transformers' `generate` does for GLM-4.1V (greedy or sampled, several stop ids, left-padded batches):

    prefill:  logits, cache = model(prompt)                  all prompt tokens at once, positions from mrope
    step k:   token_k = sample(logits[:, -1])                sampling.py
              logits  = model(token_k, cache)                one token; position = real index + rope_delta
    stop:     when every row has produced a stop id, after max_new_tokens, or at the end of the context

A row that has stopped is filled with the pad id, like transformers. The result is the prompt plus the new tokens,
(B, L + n). The keywords are transformers' (generate_options.py). With `use_cache=False` nothing is cached: each
step runs the prompt's embeddings and every new token through the decoder again (slower, the same greedy tokens).
Shapes: B batch, L prompt length (with left padding), C width, V vocabulary.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import torch

from .cache import KVCache
from .errors import GenerationError, SamplingError
from .generate_options import GenerateOptions, parse_options
from .mrope import decode_position_ids
from .sampling import NAN_ADVICE, SamplingConfig, choose, overflow_message, overflows, processed_scores


def _stop_ids(model, ids: list[int] | None) -> list[int]:
    ids = model.config.text_config.eos_token_id if ids is None else ids
    ids = [ids] if isinstance(ids, int) else list(ids)
    vocab = model.config.text_config.vocab_size
    bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < vocab]
    if bad:
        raise GenerationError(f"stop ids {bad} are not token ids of this model (vocabulary of {vocab})")
    return ids


def check_attention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The (B, L) mask of a prompt to generate from: 0/1, the same shape as the ids, padding on the left only
    (0...0 1...1, new tokens are appended after the last real token), at least one real token per row."""
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if not isinstance(attention_mask, torch.Tensor):
        raise GenerationError(f"attention_mask must be a torch tensor of 0/1 like input_ids, got "
                              f"{type(attention_mask).__name__}")
    if attention_mask.shape != input_ids.shape:
        raise GenerationError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has "
                              f"{tuple(input_ids.shape)}; give one 0/1 per token")
    if attention_mask.is_complex() or not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
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
    options: GenerateOptions
    max_new_tokens: int  # what was asked for, or less where the context ends first
    stops: torch.Tensor  # (S,) stop ids
    pad: int  # what a row that has stopped gets
    attention_mask: torch.Tensor  # (B, L)
    logits: torch.Tensor  # (B, V): scores of the first new token
    position: torch.Tensor  # (B, 1): position of the first new token, the same on the t, h and w axes
    cache: KVCache | None  # None with use_cache=False
    seen: torch.Tensor | None  # (B, V) tokens already in each row, for the repetition penalty
    generator: torch.Generator | None
    embeds: torch.Tensor | None = None  # (B, L, C) with use_cache=False: the prompt, recomputed each step
    position_ids: torch.Tensor | None = None  # (3, B, L) with use_cache=False

    @property
    def cfg(self) -> SamplingConfig:
        return self.options.sampling


def _room(model, position_ids: torch.Tensor, asked: int) -> int:
    """New tokens that fit in the context: `asked`, or fewer with a warning; none left is an error."""
    context = model.config.text_config.max_position_embeddings
    longest = int(position_ids.max()) + 1  # positions the prompt uses (images use fewer than their tokens)
    room = context - longest
    if room <= 0:
        raise GenerationError(f"the prompt needs {longest} positions, but the model's context is {context} "
                              "(max_position_embeddings); shorten the prompt or use smaller images")
    if asked > room:
        warnings.warn(f"max_new_tokens={asked} goes past the end of the model's context ({context} positions, "
                      f"the prompt uses {longest}): generation stops after at most {room} new tokens",
                      UserWarning, stacklevel=4)
    return min(asked, room)


@torch.no_grad()
def prefill(model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
            pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
            mm_token_type_ids=None, *, cache_cls=KVCache, **options) -> Prefill:
    """Check the request, run the prompt once into a fresh cache of `cache_cls`, set up the sampler."""
    opts = parse_options(options)
    input_ids, image_grid_thw, video_grid_thw = model.check_inputs(
        input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw,
        mm_token_type_ids)
    attention_mask = check_attention_mask(input_ids, attention_mask)
    dev = input_ids.device
    t = model.config.text_config
    stops = _stop_ids(model, opts.eos_token_id)
    pad = t.pad_token_id if opts.pad_token_id is None else opts.pad_token_id
    if pad is None:  # a row that stops is filled with its stop id (without stop ids no row stops)
        pad = stops[0] if stops else 0
    if not 0 <= pad < t.vocab_size:
        raise GenerationError(f"pad_token_id={pad!r} is not a token id of this model (vocabulary of {t.vocab_size})")
    B, L = input_ids.shape

    position_ids, rope_deltas = model.position_ids(input_ids, attention_mask, image_grid_thw, video_grid_thw)
    n = _room(model, position_ids, opts.new_tokens(L))
    cache = None
    if opts.use_cache:
        cache = cache_cls(t.num_hidden_layers, B, t.num_key_value_heads, t.head_dim, L + n, model.dtype,
                          model.device)
    x = model.embed(input_ids, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw)  # (B, L, C)
    logits = model.logits(x, position_ids, attention_mask, cache, last_only=True)[:, -1]  # (B, V)
    seen = None
    if opts.sampling.repetition_penalty != 1.0:  # tokens already in each row, prompt and padding included
        seen = torch.zeros(B, t.vocab_size, dtype=torch.bool, device=dev)
        seen.scatter_(1, input_ids, True)
    # the first new token's position, the same on all three axes; each later one is one more
    with_next = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)  # (B, L + 1)
    position = decode_position_ids(rope_deltas.to(dev), with_next, 1)[0]  # (B, 1)
    generator = torch.Generator(device=dev).manual_seed(opts.seed) if opts.seed is not None else None
    return Prefill(opts, n, torch.tensor(stops, dtype=torch.long, device=dev), pad, attention_mask, logits,
                   position, cache, seen, generator, None if opts.use_cache else x,
                   None if opts.use_cache else position_ids)


def _decode(model, p: Prefill) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (token (B,), logits (B, V), processed scores (B, V)) per step; ends when every row has stopped."""
    B = p.attention_mask.shape[0]
    # Without padding every key is visible to a new token, so cached decode steps need no mask at all; with padding
    # (or without a cache) the mask grows by one column (a real token) per step.
    keep_mask = p.cache is None or not bool(p.attention_mask.all())
    attention_mask, logits, position = p.attention_mask, p.logits, p.position
    unfinished = torch.ones(B, dtype=torch.bool, device=logits.device)
    for step in range(p.max_new_tokens):
        if not torch.isfinite(logits).all():
            bad = (~torch.isfinite(logits)).any(-1).nonzero().flatten().tolist()
            raise SamplingError(f"the model produced NaN or inf logits (batch rows {bad}); {NAN_ADVICE}")
        if p.cfg.do_sample and bool(overflows(logits, p.cfg)):  # (greedy never divides: no check, no sync)
            raise SamplingError(overflow_message(p.cfg))
        scores = processed_scores(logits, p.cfg, p.seen)  # (B, V)
        token = choose(scores, p.cfg, p.generator)  # (B,)
        token = torch.where(unfinished, token, torch.full_like(token, p.pad))
        yield token, logits, scores
        unfinished &= (token[:, None] != p.stops).all(-1)  # a row stops once it produced a stop id
        if not bool(unfinished.any()) or step == p.max_new_tokens - 1:
            return
        if p.seen is not None:
            p.seen.scatter_(1, token[:, None], True)
        if keep_mask:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)  # (B, L+k)
        x = model.language_model.embed_tokens(token[:, None])  # (B, 1, C)
        if p.cache is not None:
            logits = model.logits(x, position.expand(3, B, 1), attention_mask if keep_mask else None, p.cache,
                                  last_only=True)[:, -1]  # (B, V)
        else:  # no cache: the whole sequence again, the prompt's embeddings (images spliced in) and every new token
            p.embeds = torch.cat([p.embeds, x], dim=1)  # (B, L + k, C)
            p.position_ids = torch.cat([p.position_ids, position.expand(3, B, 1)], dim=2)  # (3, B, L + k)
            logits = model.logits(p.embeds, p.position_ids, attention_mask, None, last_only=True)[:, -1]
        position = position + 1


@torch.no_grad()
def generate_steps(model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                   pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                   mm_token_type_ids=None, **options) -> Iterator[torch.Tensor]:
    """Yield the (B,) next tokens step by step (stopped rows get the pad id); ends when all rows stopped.

    Options: those of generate_options.py but the output ones (return_dict_in_generate, output_*)."""
    only_tokens(options, "generate_steps")
    p = prefill(model, input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                video_grid_thw, mm_token_type_ids, **options)
    for token, _, _ in _decode(model, p):
        yield token


def only_tokens(options: dict, where: str) -> None:
    """Refuse the output keywords of `generate` in a function that returns or yields only tokens."""
    asked = [k for k in ("return_dict_in_generate", "output_scores", "output_logits") if options.get(k)]
    if asked:
        raise GenerationError(f"{where} yields tokens one by one, so {asked} do not apply; use "
                              "generate(..., return_dict_in_generate=True) for them")


@dataclass(frozen=True)
class GenerateOutput:
    """What `generate(..., return_dict_in_generate=True)` returns, as transformers' GenerateDecoderOnlyOutput.

    sequences  (B, L + n): the prompt and the new tokens (what generate returns otherwise)
    scores     with output_scores=True: n tensors (B, V), the processed scores each token was picked from
               (repetition penalty, then when sampling temperature / top-k / top-p / min-p; removed tokens -inf)
    logits     with output_logits=True: n tensors (B, V), the model's raw logits at each step
    Attentions, hidden states and the cache are not returned."""
    sequences: torch.Tensor
    scores: tuple[torch.Tensor, ...] | None = None
    logits: tuple[torch.Tensor, ...] | None = None


def generate(model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
             pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
             mm_token_type_ids=None, **options) -> torch.Tensor | GenerateOutput:
    """The prompt plus the new tokens, (B, L + n), like transformers' `generate`; with
    return_dict_in_generate=True a GenerateOutput. Keywords: generate_options.py."""
    with torch.no_grad():
        p = prefill(model, input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                    video_grid_thw, mm_token_type_ids, **options)
        tokens, raw, processed = [], [], []
        for token, logits, scores in _decode(model, p):
            tokens.append(token)
            if p.options.output_logits:
                raw.append(logits.float())
            if p.options.output_scores:
                processed.append(scores)
    sequences = torch.cat([input_ids.long(), torch.stack(tokens, dim=1)], dim=1)  # (B, L + n)
    if not p.options.return_dict_in_generate:
        return sequences
    return GenerateOutput(sequences, tuple(processed) if p.options.output_scores else None,
                          tuple(raw) if p.options.output_logits else None)


def stream(model, processor, inputs: dict, skip_special_tokens: bool = True, **options) -> Iterator[str]:
    """Text pieces of a single prompt's answer as they are generated (for a terminal or a notebook)."""
    ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.shape[0] != 1:
        raise GenerationError("stream() takes one prompt: the inputs of processor.apply_chat_template(messages), "
                              "whose input_ids are (1, length); use generate() for a batch")
    answer: list[int] = []
    printed = ""
    for token in generate_steps(model, **inputs, **options):
        answer.append(int(token[0]))
        text = processor.decode(answer, skip_special_tokens=skip_special_tokens)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the rest of its bytes
            continue
        if len(text) > len(printed):
            yield text[len(printed):]
            printed = text
    text = processor.decode(answer, skip_special_tokens=skip_special_tokens)
    if len(text) > len(printed):  # bytes that never completed a character: show them as they decode
        yield text[len(printed):]


__all__ = ["GenerateOutput", "generate", "generate_steps", "stream"]
