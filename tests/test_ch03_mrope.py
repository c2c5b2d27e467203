"""Chapter 03: M-RoPE position ids and the multimodal rotary embedding (minglm4v/mrope.py).

Position ids are compared with transformers' `get_rope_index` (the oracle) and with the worked example of
docs/glm41v.md §6.2; the rotation with transformers' rotary embedding and with the formula written out by hand.
"""

from __future__ import annotations

import oracle
import pytest
import torch

from minglm4v import glm41v_9b, tiny
from minglm4v.errors import InputError
from minglm4v.mrope import (
    IMAGE,
    TEXT,
    VIDEO,
    apply_mrope,
    band_axis,
    decode_position_ids,
    get_rope_index,
    inv_freq,
    rotary_cos_sin,
    text_position_ids,
    token_types,
)

CFG = tiny()  # image placeholder 9, <|begin_of_image|> 7, <|end_of_image|> 8, video span 10 ... 11


class Prompt:
    """Builds an expanded prompt for the tiny config, recording mm_token_type_ids as it goes (the oracle needs them)."""

    def __init__(self, cfg=CFG, seed: int = 0):
        self.cfg, self.ids, self.types = cfg, [], []
        self.g = torch.Generator().manual_seed(seed)

    def text(self, n: int) -> "Prompt":
        first = max(self.cfg.video_end_token_id, self.cfg.image_token_id) + 10  # clear of the special ids
        self.ids += torch.randint(first, self.cfg.text_config.vocab_size, (n,), generator=self.g).tolist()
        self.types += [TEXT] * n
        return self

    def _block(self, n: int, kind: int) -> None:
        c = self.cfg
        self.ids += [c.image_start_token_id] + [c.image_token_id] * n + [c.image_end_token_id]
        self.types += [TEXT] + [kind] * n + [TEXT]

    def image(self, grid) -> "Prompt":
        t, h, w = grid
        self._block(t * h * w // self.cfg.vision_config.spatial_merge_size ** 2, IMAGE)
        return self

    def video(self, grid, timestamps=None) -> "Prompt":
        """<|begin_of_video|> then per temporal patch: an image block and its timestamp digits, <|end_of_video|>."""
        t, h, w = grid
        c = self.cfg
        self.ids.append(c.video_start_token_id)
        self.types.append(TEXT)
        for k in range(t):
            self._block(h * w // c.vision_config.spatial_merge_size ** 2, VIDEO)
            self.text(len(str(k)) if timestamps is None else timestamps[k])
        self.ids.append(c.video_end_token_id)
        self.types.append(TEXT)
        return self

    def tensors(self):
        return torch.tensor([self.ids]), torch.tensor([self.types])


def left_pad(rows: list[Prompt], pad_id: int = 0):
    """(ids, types, mask), each (B, L), rows padded on the left to the longest."""
    L = max(len(r.ids) for r in rows)
    ids = torch.tensor([[pad_id] * (L - len(r.ids)) + r.ids for r in rows])
    types = torch.tensor([[TEXT] * (L - len(r.types)) + r.types for r in rows])
    mask = torch.tensor([[0] * (L - len(r.ids)) + [1] * len(r.ids) for r in rows])
    return ids, types, mask


@pytest.fixture(scope="module")
def hf():
    return oracle.build_oracle(CFG, seed=0)


def _oracle_positions(hf, ids, types, image_grid_thw=None, video_grid_thw=None, attention_mask=None):
    return hf.model.get_rope_index(ids, types, image_grid_thw=image_grid_thw,
                                   video_grid_thw=None if video_grid_thw is None else video_grid_thw.clone(),
                                   attention_mask=attention_mask)


# ------------------------------------------------------------------------------------------------ position ids

def test_worked_example_of_docs_section_6_2():
    """[gMASK]<sop><|user|>\\n<|begin_of_image|> = 0..4; a 476x644 image (grid 1x34x46 -> 17x23 merged) gets
    t = 5, h = 5..21, w = 5..27; <|end_of_image|> gets 5 + max(17, 23) = 28."""
    cfg = glm41v_9b()
    n = 17 * 23
    ids = torch.tensor([[151331, 151333, 151336, 198, 151339] + [151343] * n + [151340, 1000]])
    pos, delta = get_rope_index(ids, cfg, image_grid_thw=torch.tensor([[1, 34, 46]]))
    assert pos[:, 0, :5].tolist() == [[0, 1, 2, 3, 4]] * 3
    img = pos[:, 0, 5:5 + n].reshape(3, 17, 23)
    assert (img[0] == 5).all()
    assert img[1, :, 0].tolist() == list(range(5, 22))
    assert img[2, 0, :].tolist() == list(range(5, 28))
    assert pos[:, 0, 5 + n].tolist() == [28, 28, 28] and pos[:, 0, -1].tolist() == [29, 29, 29]
    assert delta.tolist() == [[30 - ids.shape[1]]]


@pytest.mark.parametrize("case", ["text", "one_image", "two_images", "video", "two_videos"])
def test_positions_match_oracle(hf, case):
    p = Prompt(seed=1).text(4)
    images, videos = [], []
    if case in ("one_image", "two_images"):
        images.append([1, 4, 6])
        p.image(images[-1]).text(3)
    if case == "two_images":
        images.append([1, 8, 2])
        p.image(images[-1]).text(2)
    if case in ("video", "two_videos"):
        videos.append([3, 4, 4])
        p.video(videos[-1]).text(2)
    if case == "two_videos":
        videos.append([2, 2, 6])
        p.video(videos[-1], timestamps=[2, 1]).text(1)
    ids, types = p.tensors()
    assert torch.equal(token_types(ids[0], CFG), types[0])
    ig = torch.tensor(images) if images else None
    vg = torch.tensor(videos) if videos else None
    pos, delta = get_rope_index(ids, CFG, image_grid_thw=ig, video_grid_thw=vg)
    want_pos, want_delta = _oracle_positions(hf, ids, types, ig, vg)
    assert torch.equal(pos, want_pos)
    assert torch.equal(delta, want_delta)
    if case == "text":
        assert torch.equal(pos, text_position_ids(torch.ones_like(ids))[0])


def test_video_frames_share_time_through_the_offset_only():
    """Each temporal patch of a video starts at the running offset: t is constant inside a patch and jumps by
    max(h, w) + (marker and timestamp tokens) between patches."""
    p = Prompt().text(1).video([2, 4, 6], timestamps=[1, 1])
    ids, _ = p.tensors()
    pos, _ = get_rope_index(ids, CFG, video_grid_thw=torch.tensor([[2, 4, 6]]))
    t = pos[0, 0][ids[0] == CFG.image_token_id].view(2, 6)
    # 1 text + <|begin_of_video|> + <|begin_of_image|> = 3; then 3 + max(2, 3) = 6, <|end_of_image|>, digit,
    # <|begin_of_image|> -> 9
    assert t[:, 0].tolist() == [3, 9] and (t == t[:, :1]).all()


def test_left_padded_batch_matches_oracle(hf):
    a = Prompt(seed=2).text(3).image([1, 4, 4]).text(2)
    b = Prompt(seed=3).text(2).image([1, 2, 6]).text(1).image([1, 4, 2]).text(5)
    ids, types, mask = left_pad([a, b])
    grids = torch.tensor([[1, 4, 4], [1, 2, 6], [1, 4, 2]])
    pos, delta = get_rope_index(ids, CFG, image_grid_thw=grids, attention_mask=mask)
    want_pos, want_delta = _oracle_positions(hf, ids, types, grids, attention_mask=mask)
    assert torch.equal(pos, want_pos) and torch.equal(delta, want_delta)
    # the padded row's real tokens get the positions they get alone
    alone, _ = get_rope_index(torch.tensor([a.ids]), CFG, image_grid_thw=grids[:1])
    assert torch.equal(pos[:, 0][:, mask[0].bool()], alone[:, 0])


def test_text_positions_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos, delta = text_position_ids(mask)
    assert pos.shape == (3, 2, 5)
    assert pos[0].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]] and delta.tolist() == [[0], [0]]


def test_decode_positions_continue_after_the_prompt():
    """Token k generated after a prefill whose largest position is P gets P + 1 + k on all three axes."""
    ids, _ = Prompt().text(2).image([1, 4, 6]).text(1).tensors()
    pos, delta = get_rope_index(ids, CFG, image_grid_thw=torch.tensor([[1, 4, 6]]))
    L, P = ids.shape[1], int(pos.max())
    new = decode_position_ids(delta, torch.ones(1, L + 3, dtype=torch.long), 3)
    assert new.shape == (3, 1, 3) and new[:, 0].tolist() == [[P + 1, P + 2, P + 3]] * 3


def test_decode_positions_of_a_padded_batch_match_the_oracle(hf):
    """Left-padded rows continue from their own largest position; transformers' cached path agrees."""
    a = Prompt(seed=2).text(2).image([1, 4, 4]).text(1)
    b = Prompt(seed=3).text(6).image([1, 2, 6]).text(4)
    ids, types, mask = left_pad([a, b])
    grids = torch.tensor([[1, 4, 4], [1, 2, 6]])
    pos, delta = get_rope_index(ids, CFG, image_grid_thw=grids, attention_mask=mask)
    full_mask = torch.cat([mask, torch.ones(2, 2, dtype=torch.long)], dim=1)  # two new tokens per row
    new = decode_position_ids(delta, full_mask, 2)
    assert new[0].tolist() == [[int(pos[:, r].max()) + 1 + k for k in range(2)] for r in range(2)]

    class Cache:  # what transformers asks of its cache here: how many tokens it holds
        def get_seq_length(self):
            return ids.shape[1]

    hf.model.rope_deltas = delta
    want = hf.model.compute_3d_position_ids(input_ids=None, inputs_embeds=torch.zeros(2, 2, 1),
                                            attention_mask=full_mask, cache=Cache())
    hf.model.rope_deltas = None
    assert torch.equal(new, want[:, :, -2:])


@pytest.mark.parametrize("bad", ["too_few_tokens", "grid_without_tokens", "tokens_without_grid", "mixed"])
def test_inconsistent_inputs_are_refused(bad):
    p = Prompt().text(2).image([1, 4, 4]).text(1)
    grids = torch.tensor([[1, 4, 4]])
    vg = None
    if bad == "too_few_tokens":
        grids = torch.tensor([[1, 4, 6]])
    elif bad == "grid_without_tokens":
        grids = torch.tensor([[1, 4, 4], [1, 2, 2]])
    elif bad == "tokens_without_grid":
        p.image([1, 2, 2])
    else:
        p.video([1, 2, 2])
        vg = torch.tensor([[1, 2, 2]])
    ids, _ = p.tensors()
    with pytest.raises(InputError, match="grid|mix"):
        get_rope_index(ids, CFG, image_grid_thw=grids, video_grid_thw=vg)


# ------------------------------------------------------------------------------------------------ rotation

ROPE_CONFIGS = [tiny(), tiny(partial_rotary_factor=1.0, mrope_section=(2, 3, 3)),
                tiny(num_attention_heads=2, num_key_value_heads=1, mrope_section=(1, 4, 3))]


@pytest.mark.parametrize("cfg", ROPE_CONFIGS, ids=["half_211", "full_233", "hd32_half_143"])
def test_cos_sin_and_rotation_match_oracle(cfg):
    hf = oracle.build_oracle(cfg, seed=0)
    g = torch.Generator().manual_seed(4)
    pos = torch.randint(0, 50, (3, 2, 7), generator=g)  # three different rows: every band is exercised
    x = torch.randn(2, 7, cfg.text_config.hidden_size, generator=g)
    cos, sin = rotary_cos_sin(pos, cfg.text_config, torch.float32)
    want_cos, want_sin = hf.model.language_model.rotary_emb(x, pos)
    assert cos.shape == (2, 7, cfg.text_config.rotary_dim)
    oracle.assert_close(cos, want_cos, atol=0, what="cos")
    oracle.assert_close(sin, want_sin, atol=0, what="sin")
    from transformers.models.glm4v.modeling_glm4v import apply_rotary_pos_emb
    D = cfg.text_config.head_dim
    q, k = torch.randn(2, 3, 7, D, generator=g), torch.randn(2, 1, 7, D, generator=g)
    want_q, want_k = apply_rotary_pos_emb(q, k, want_cos, want_sin)
    oracle.assert_close(apply_mrope(q, cos, sin), want_q, atol=0, what="q")
    oracle.assert_close(apply_mrope(k, cos, sin), want_k, atol=0, what="k")


def test_rotation_by_hand():
    """One head of the tiny config (D 16, R 8, section (2, 1, 1)) rotated with the formula written out."""
    cfg = tiny().text_config
    assert band_axis(cfg).tolist() == [0, 0, 1, 2]
    pos = torch.tensor([3, 5, 7]).view(3, 1, 1)  # t = 3, h = 5, w = 7 for a single token
    x = torch.arange(1.0, 17.0).view(1, 1, 1, 16)
    cos, sin = rotary_cos_sin(pos, cfg, torch.float64)
    out = apply_mrope(x.double(), cos, sin)[0, 0, 0]
    f = inv_freq(cfg).double()  # 10000^(-2j/8), j = 0..3
    angles = torch.stack([3 * f[0], 3 * f[1], 5 * f[2], 7 * f[3]])
    for j in range(4):
        a, b, c, s = x[0, 0, 0, 2 * j], x[0, 0, 0, 2 * j + 1], angles[j].cos(), angles[j].sin()
        assert torch.isclose(out[2 * j], a * c - b * s, atol=1e-6)
        assert torch.isclose(out[2 * j + 1], b * c + a * s, atol=1e-6)
    assert torch.equal(out[8:], x[0, 0, 0, 8:].double())  # the non-rotary half passes through


def test_text_only_is_ordinary_rope():
    """Equal t, h, w rows: M-RoPE reduces to plain interleaved RoPE at position p."""
    cfg = tiny().text_config
    p = torch.arange(6)
    cos, sin = rotary_cos_sin(p.expand(3, 1, 6), cfg, torch.float32)
    angles = (p[:, None].float() * inv_freq(cfg)).repeat_interleave(2, -1)  # (L, R)
    assert torch.equal(cos[0], angles.cos()) and torch.equal(sin[0], angles.sin())
