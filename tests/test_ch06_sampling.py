"""Chapter 06: samplers. Each filter against transformers' logits processor of the same name, and by hand."""

from __future__ import annotations

import pytest
import torch

from minglm4v.errors import SamplingError
from minglm4v.sampling import SamplingConfig, apply_repetition_penalty, next_token, warp


def scores(seed=0, B=3, V=50):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * 3


def hf_warp(s, cfg):
    import transformers

    procs = [transformers.TemperatureLogitsWarper(cfg.temperature)]
    if cfg.top_k:
        procs.append(transformers.TopKLogitsWarper(cfg.top_k))
    if cfg.top_p < 1:
        procs.append(transformers.TopPLogitsWarper(cfg.top_p))
    if cfg.min_p > 0:
        procs.append(transformers.MinPLogitsWarper(cfg.min_p))
    ids = torch.zeros(s.shape[0], 1, dtype=torch.long)
    for p in procs:
        s = p(ids, s.clone())
    return s


@pytest.mark.parametrize("cfg", [
    SamplingConfig(do_sample=True, temperature=0.7),
    SamplingConfig(do_sample=True, top_k=5),
    SamplingConfig(do_sample=True, top_p=0.6),
    SamplingConfig(do_sample=True, min_p=0.2),
    SamplingConfig(do_sample=True, temperature=1.3, top_k=10, top_p=0.9, min_p=0.05),
])
def test_warpers_match_transformers(cfg):
    for seed in range(3):
        s = scores(seed)
        ours, ref = warp(s, cfg), hf_warp(s, cfg)
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))
        assert torch.allclose(ours[~torch.isinf(ours)], ref[~torch.isinf(ref)])


def test_repetition_penalty_matches_transformers():
    import transformers

    s = scores(4)
    ids = torch.tensor([[1, 2, 2, 7], [0, 49, 3, 3], [5, 5, 5, 5]])
    seen = torch.zeros_like(s, dtype=torch.bool).scatter(1, ids, True)
    ref = transformers.RepetitionPenaltyLogitsProcessor(1.3)(ids, s.clone())
    assert torch.allclose(apply_repetition_penalty(s, seen, 1.3), ref)


def test_top_k_and_top_p_by_hand():
    s = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda cfg: (~torch.isinf(warp(s, cfg))).int().tolist()  # noqa: E731
    assert kept(SamplingConfig(do_sample=True, top_k=2)) == [[1, 1, 0, 0]]
    assert kept(SamplingConfig(do_sample=True, top_p=0.8)) == [[1, 1, 0, 0]]  # 0.5 + 0.3 reaches 0.8
    assert kept(SamplingConfig(do_sample=True, top_p=0.81)) == [[1, 1, 1, 0]]
    assert kept(SamplingConfig(do_sample=True, min_p=0.5)) == [[1, 1, 0, 0]]  # >= 0.5 * 0.5


def test_greedy_and_seeded_sampling():
    s = scores(5)
    assert next_token(s, SamplingConfig()).tolist() == s.argmax(-1).tolist()
    cfg = SamplingConfig(do_sample=True, temperature=0.9, top_k=20)
    a = next_token(s, cfg, generator=torch.Generator().manual_seed(1))
    b = next_token(s, cfg, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # the draw follows the distribution: 4000 draws of a 2-token distribution
    two = torch.log(torch.tensor([[0.8, 0.2]])).expand(4000, 2)
    draws = next_token(two, SamplingConfig(do_sample=True), generator=torch.Generator().manual_seed(0))
    assert abs(draws.float().mean().item() - 0.2) < 0.03


@pytest.mark.parametrize("kw, message", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=0.0), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(min_p=1.0), "min_p"), (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(temperature=float("nan")), "temperature"), (dict(do_sample="yes"), "do_sample"),
])
def test_invalid_settings_fail_clearly(kw, message):
    with pytest.raises(SamplingError, match=message):
        SamplingConfig(**kw)


def test_nan_logits_are_reported():
    s = scores(6)
    s[1, 3] = float("nan")
    with pytest.raises(SamplingError, match=r"NaN or inf logits \(batch rows \[1\]\).*float16"):
        next_token(s, SamplingConfig())


def test_settings_that_greedy_decoding_ignores_are_announced():
    with pytest.warns(UserWarning, match="only shape sampling"):
        SamplingConfig(temperature=0.5, top_k=3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SamplingConfig()  # defaults: nothing to say
        SamplingConfig(do_sample=True, temperature=0.5)
