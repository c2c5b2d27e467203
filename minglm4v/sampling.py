"""From next-token logits to a token: penalties, temperature, top-k, top-p, min-p, then greedy or a draw.

Mirrors the logits processors transformers' `generate` applies, in the same order (repetition penalty, then
temperature, top-k, top-p, min-p), so the same settings mean the same distribution:

    repetition penalty r:  s_i <- s_i / r if s_i > 0 else s_i * r      for every token i already in the sequence
    temperature T:         s <- s / T
    top-k:                 keep the k largest scores
    top-p:                 keep the smallest set of most likely tokens whose probabilities sum to >= p
    min-p:                 keep tokens whose probability is >= min_p * (probability of the most likely token)

Removed tokens get score -inf. Shapes: B batch, V vocabulary; scores are (B, V) float32.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from dataclasses import dataclass

import torch

from .errors import SamplingError


@dataclass(frozen=True)
class SamplingConfig:
    do_sample: bool = False  # False: greedy (argmax); the other settings then only matter through the penalty
    temperature: float = 1.0  # > 0; lower is sharper
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # in (0, 1]; 1: off
    min_p: float = 0.0  # in [0, 1); 0: off
    repetition_penalty: float = 1.0  # > 0; 1: off; > 1 discourages repeats

    def __post_init__(self):
        if not isinstance(self.do_sample, bool):
            raise SamplingError(f"do_sample must be True or False, got {self.do_sample!r}")
        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):  # np.float32(0.9) -> 0.9
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and _finite(value):
                object.__setattr__(self, name, float(value))
        if not isinstance(self.top_k, (bool, float)) and hasattr(self.top_k, "__index__"):  # np.int64(50) -> 50
            try:
                object.__setattr__(self, "top_k", operator.index(self.top_k))
            except TypeError:  # a float tensor: refused below
                pass
        _check(_finite(self.temperature) and self.temperature > 0,
               f"temperature={self.temperature} must be a number > 0 (use do_sample=False for greedy decoding)")
        # logits are divided by the temperature in float32: one that rounds to 0 there divides by zero
        _check(torch.tensor(self.temperature, dtype=torch.float32).item() > 0,
               f"temperature={self.temperature} is smaller than the smallest float32 number (about 1.4e-45), so "
               "logits / temperature overflows; use a temperature of 1e-3 or more, or do_sample=False for greedy")
        _check(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
               f"top_k={self.top_k!r} must be an integer >= 0 (0 turns it off)")
        _check(_finite(self.top_p) and 0 < self.top_p <= 1, f"top_p={self.top_p} must be in (0, 1] (1 turns it off)")
        _check(_finite(self.min_p) and 0 <= self.min_p < 1, f"min_p={self.min_p} must be in [0, 1) (0 turns it off)")
        _check(_finite(self.repetition_penalty) and self.repetition_penalty > 0
               and 0 < torch.tensor(self.repetition_penalty, dtype=torch.float32).item() < math.inf,
               f"repetition_penalty={self.repetition_penalty} must be > 0 and within float32's range "
               "(1 turns it off)")
        unused = {k: v for k, v in (("temperature", self.temperature), ("top_k", self.top_k), ("top_p", self.top_p),
                                    ("min_p", self.min_p)) if v != getattr(SamplingConfig, k)}
        if unused and not self.do_sample:
            warnings.warn(f"{unused} only shape sampling; with do_sample=False (greedy) they are not used. "
                          "Pass do_sample=True to sample.", UserWarning, stacklevel=3)


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """scores (B, V); seen (B, V) bool: tokens already in each sequence (prompt included, like transformers)."""
    if penalty == 1.0:
        return scores
    penalised = torch.where(scores > 0, scores / penalty, scores * penalty)
    return torch.where(seen, penalised, scores)


def warp(scores: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p on (B, V) scores; removed entries become -inf."""
    scores = scores / cfg.temperature
    neg_inf = float("-inf")
    if cfg.top_k > 0:
        k = min(cfg.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (B, 1): the k-th largest score
        scores = scores.masked_fill(scores < kth, neg_inf)
    if cfg.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=False)  # ascending, like transformers
        cum = sorted_scores.softmax(-1).cumsum(-1)  # (B, V)
        drop_sorted = cum <= 1 - cfg.top_p  # the least likely tokens whose total mass is <= 1 - p
        drop_sorted[..., -1] = False  # always keep the most likely token
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, neg_inf)
    if cfg.min_p > 0:
        probs = scores.softmax(-1)
        threshold = cfg.min_p * probs.max(-1, keepdim=True).values  # (B, 1)
        scores = scores.masked_fill(probs < threshold, neg_inf)
    return scores


NAN_ADVICE = ("this usually means the weights overflowed in the chosen dtype: use bfloat16 or float32, "
              "not float16")


def processed_scores(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> the (B, V) float32 scores a token is picked from: the repetition penalty, then (when
    sampling) temperature, top-k, top-p and min-p. These are what transformers returns as `scores`."""
    scores = logits.float()
    if seen is not None:
        scores = apply_repetition_penalty(scores, seen, cfg.repetition_penalty)
    return warp(scores, cfg) if cfg.do_sample else scores


def choose(scores: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) processed scores -> (B,) tokens: the argmax (greedy) or a draw from softmax(scores)."""
    if not cfg.do_sample:
        return scores.argmax(-1)
    return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(-1)


def overflows(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """() bool tensor, on the logits' device: does logits / temperature leave float32's range (then every
    probability is NaN)? Always False for greedy decoding, which never divides."""
    if not cfg.do_sample or cfg.temperature >= 1:
        return torch.zeros((), dtype=torch.bool, device=logits.device)
    return ~torch.isfinite(logits.float().abs().amax() / cfg.temperature)


def overflow_message(cfg: SamplingConfig) -> str:
    return (f"temperature={cfg.temperature} is so small that logits / temperature overflows float32; use a "
            "temperature of 1e-3 or more, or do_sample=False for greedy decoding (the limit of a tiny temperature)")


def next_token(scores: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits of the last position -> (B,) token ids; NaN or inf logits, or a temperature that overflows
    them, raise SamplingError."""
    if not torch.isfinite(scores).all():
        bad = (~torch.isfinite(scores)).any(-1).nonzero().flatten().tolist()
        raise SamplingError(f"the model produced NaN or inf logits (batch rows {bad}); {NAN_ADVICE}")
    if bool(overflows(scores, cfg)):
        raise SamplingError(overflow_message(cfg))
    return pick(scores, cfg, seen, generator)


def pick(scores: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """`next_token` without the checks, which wait for the device (the fast path checks in bulk)."""
    return choose(processed_scores(scores, cfg, seen), cfg, generator)


def _finite(x) -> bool:
    """A real number (not a bool) with a finite float value."""
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise SamplingError(message)
