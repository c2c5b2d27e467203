"""A fast decode path for GPUs: a static KV cache and a decode step with fixed shapes and no host syncs.

The eager loop (generation.py) is written to be read: every step slices the cache to the length so far, grows the
attention mask by a column and asks the host whether every row has stopped. Each of those is cheap on a CPU, but on
a GPU a step of the 9B model is ~5 ms of kernels, and a step that changes shape cannot be captured by
`torch.compile` (or replayed as a CUDA graph), while a `bool(tensor)` makes the CPU wait for the GPU every token.

Here a decode step has the same shapes every time:

    write   k, v of the new token at cache slot `slot`            index_copy_ at a *tensor* index, not a Python int
    attend  over all T = max_len slots, with a key mask (B, T)    unwritten slots are masked out, none sliced away
    rotate  at `position` (B,), a device tensor bumped by one     cos/sin from a precomputed frequency table
    pick    argmax (or sampling) on the device

so `torch.compile(decode_step, fullgraph=True)` captures it whole, and `mode="reduce-overhead"` can replay it as a
CUDA graph. The host looks at the tokens only every `sync_every` steps (to stop when every row is done, and to
raise on NaN logits); the steps in between are queued without waiting. The prefill is the eager one (it runs once,
with the prompt's own length). The tokens are exactly the eager path's (tests/test_ch09_fast.py).

Shapes: B batch, T cache slots (prompt + new tokens), Hkv key/value heads, D head dim, C width, V vocabulary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .cache import KVCache
from .errors import GenerationError, SamplingError
from .generation import generate_steps, only_tokens, prefill
from .mrope import inv_freq
from .sampling import NAN_ADVICE, choose, overflow_message, overflows, processed_scores


class StaticKVCache(KVCache):
    """A KVCache whose decode writes go to a device-side slot and whose reads return the whole (B, Hkv, T, D)
    buffers; `key_mask` (B, T) says which slots hold real keys. The prefill fills it like a KVCache."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, head_dim: int, max_len: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        super().__init__(num_layers, batch, num_kv_heads, head_dim, max_len, dtype, device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # (1,): where the next token is written
        self.key_mask = torch.zeros(batch, max_len, dtype=torch.bool, device=device)  # (B, T)
        self.decoding = False  # False during the prefill (KVCache behaviour), True for decode steps
        if torch.device(device).type == "cuda":  # fixed addresses: what CUDA graphs need
            for t in self.keys + self.values + [self.slot, self.key_mask]:
                torch._dynamo.mark_static_address(t)

    def start_decoding(self, attention_mask: torch.Tensor) -> None:
        """After the prefill: the prompt's real slots become visible keys, the next write goes after the prompt."""
        L = self.length
        self.key_mask[:, :L] = attention_mask.bool()
        self.slot.fill_(L)
        self.decoding = True

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.decoding:
            return super().update(layer, k, v)
        self.keys[layer].index_copy_(2, self.slot, k)  # k (B, Hkv, 1, D) into slot `slot`
        self.values[layer].index_copy_(2, self.slot, v)
        return self.keys[layer], self.values[layer]  # (B, Hkv, T, D): unwritten slots are masked out


def decode_step(model, token: torch.Tensor, position: torch.Tensor, cache: StaticKVCache,
                inv_freq_pairs: torch.Tensor) -> torch.Tensor:
    """One token per row through the decoder with fixed shapes. token (B,), position (B,) -> logits (B, V).

    Updates the cache in place (keys, values, key_mask, slot); no Python value depends on a tensor here."""
    lm = model.language_model
    x = lm.embed_tokens(token[:, None])  # (B, 1, C)
    # a new token has the same position on the t, h and w axes, so angle_j = position * inv_freq[j] for every j
    angles = position[:, None, None].float() * inv_freq_pairs  # (B, 1, R)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    cache.key_mask.index_fill_(1, cache.slot, True)  # the new token sees itself
    mask = (cache.key_mask[:, None, None, :], False)  # (B, 1, 1, T): every real key so far, nothing after
    for i, layer in enumerate(lm.layers):
        x = layer(x, cos, sin, mask, cache, i)
    cache.slot += 1
    return model.lm_head(lm.norm(x))[:, -1]  # (B, V)


@torch.no_grad()
def generate_static(model, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                    mm_token_type_ids=None, *, sync_every: int = 16, step_fn=None, on_first_token=None,
                    **options) -> torch.Tensor:
    """Like generation.generate (same keywords, same tokens), with a static cache and sync-free decode steps.

    step_fn: the decode step to call, e.g. `torch.compile(decode_step, fullgraph=True)` (default: decode_step).
    on_first_token: called once the first new token exists on the host (for time-to-first-token).
    Returns the prompt plus the new tokens, (B, L + n). use_cache=False and the output keywords do not apply."""
    if not isinstance(sync_every, int) or isinstance(sync_every, bool) or sync_every <= 0:
        raise GenerationError(f"sync_every={sync_every!r} must be a positive integer")
    only_tokens(options, "generate_static")
    if options.get("use_cache") is False:
        raise GenerationError("generate_static always decodes from its static cache; use "
                              "generate(..., use_cache=False) to recompute every step")
    step_fn = step_fn or decode_step
    p = prefill(model, input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos,
                video_grid_thw, mm_token_type_ids, cache_cls=StaticKVCache, **options)
    cfg, stops, pad, seen, generator, cache, logits = p.cfg, p.stops, p.pad, p.seen, p.generator, p.cache, p.logits
    input_ids = input_ids.long()  # an integer tensor (checked by prefill), (B, L)
    dev, B, n_max = input_ids.device, input_ids.shape[0], p.max_new_tokens
    cache.start_decoding(p.attention_mask)
    inv_pairs = inv_freq(model.config.text_config).repeat_interleave(2).to(dev)  # (R,): dims 2j, 2j+1 share one
    position = p.position[:, 0]  # (B,) position of the first new token

    out = torch.full((B, n_max), pad, dtype=input_ids.dtype, device=dev)  # (B, n)
    all_done = torch.zeros(n_max, dtype=torch.bool, device=dev)  # step k: every row had stopped
    finite = torch.ones((), dtype=torch.bool, device=dev)
    fits = torch.ones((), dtype=torch.bool, device=dev)  # logits / temperature stayed inside float32
    unfinished = torch.ones(B, dtype=torch.bool, device=dev)
    for step in range(n_max):
        finite &= torch.isfinite(logits).all()
        fits &= ~overflows(logits, cfg)
        # bad logits are reported at the next sync; until then draw from zeros (a draw from NaN fails at once)
        logits = torch.where(finite & fits, logits, torch.zeros_like(logits))
        token = choose(processed_scores(logits, cfg, seen), cfg, generator)  # (B,)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        out[:, step] = token
        unfinished &= ~torch.isin(token, stops)
        all_done[step] = ~unfinished.any()
        if step == 0 and on_first_token is not None:
            on_first_token(token.tolist())
        last = step == n_max - 1
        if last or (step + 1) % sync_every == 0:  # the only host syncs of the loop
            if not bool(finite):
                raise SamplingError(f"the model produced NaN or inf logits; {NAN_ADVICE}")
            if not bool(fits):
                raise SamplingError(overflow_message(cfg))
            if last or bool(all_done[step]):
                break
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        logits = step_fn(model, token, position, cache, inv_pairs)  # (B, V)
        position = position + 1
    n = int(all_done.long().argmax()) + 1 if bool(all_done.any()) else n_max  # up to the all-stopped step
    return torch.cat([input_ids, out[:, :n]], dim=1)


@dataclass(frozen=True)
class Timing:
    """What a reader measures on their own machine."""
    prompt_tokens: int  # L (per row, with padding)
    new_tokens: int  # generated per row (the longest row)
    ttft_s: float  # time to first token: preprocessing done -> first new token on the host (prefill + vision)
    decode_tokens_per_s: float  # rows * (new_tokens - 1) / time after the first token
    peak_gpu_bytes: int | None  # torch.cuda.max_memory_allocated during the call (None on the CPU)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_generate(model, inputs: dict, *, static: bool = True, **kwargs) -> tuple[torch.Tensor, Timing]:
    """generate_static (or, with static=False, the eager generate) on processor outputs, timed.
    Returns (prompt + new tokens, Timing)."""
    dev = model.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    inputs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    B, L = inputs["input_ids"].shape
    first: list[float] = []
    _sync(dev)
    t0 = time.perf_counter()
    if static:
        out = generate_static(model, **inputs, on_first_token=lambda _: first.append(time.perf_counter()), **kwargs)
    else:
        steps = []
        for token in generate_steps(model, **inputs, **kwargs):
            steps.append(token)
            if not first:
                token.tolist()  # wait for it
                first.append(time.perf_counter())
        out = torch.cat([inputs["input_ids"], torch.stack(steps, 1)], 1)
    out.tolist()
    _sync(dev)
    t1 = time.perf_counter()
    n = out.shape[1] - L
    rate = B * (n - 1) / (t1 - first[0]) if n > 1 and t1 > first[0] else float("nan")
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    return out, Timing(L, n, first[0] - t0, rate, peak)


__all__ = ["StaticKVCache", "Timing", "decode_step", "generate_static", "timed_generate"]
