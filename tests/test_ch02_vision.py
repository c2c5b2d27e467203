"""Chapter 02: the vision tower (minglm4v/vision.py, vision_attention.py) against transformers' Glm4vVisionModel.

Every test builds a seeded random oracle (tests/oracle.py), copies its `model.visual` weights into our VisionModel,
and compares one component at a time, then the whole tower, so that a failure names the piece that broke.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from oracle import assert_close, build_oracle

from minglm4v.config import VisionConfig, tiny
from minglm4v.errors import ConfigError, VisionInputError
from minglm4v.vision import PatchMerger, VisionBlock, VisionModel, interpolate_pos_table, position_embeddings
from minglm4v.vision_attention import patch_coords, segment_lengths, vision_rotary_angles


def _wide():
    """A second shape: 3 heads of 32, merge size 1, temporal patch 1, an 8 x 8 table, out_hidden 48 != hidden 96."""
    vision = VisionConfig(depth=2, hidden_size=96, num_heads=3, intermediate_size=80, out_hidden_size=48,
                          image_size=112, patch_size=14, spatial_merge_size=1, temporal_patch_size=1)
    base = tiny()
    text = dataclasses.replace(base.text_config, hidden_size=48, mrope_section=(1, 1, 1))  # head_dim 12, rotary 6
    return dataclasses.replace(base, text_config=text, vision_config=vision)


CONFIGS = {"tiny": tiny, "wide": _wide}
# Several images of different, non-square sizes, some smaller and some larger than the position table.
GRIDS = {"tiny": [[1, 4, 6], [1, 8, 4], [1, 6, 10]], "wide": [[1, 3, 5], [1, 7, 2], [1, 4, 9], [1, 10, 3]]}


@pytest.fixture(scope="module")
def pair():
    """pair(name, dtype) -> (cfg, hf model, our VisionModel with the oracle's weights), cached per module."""
    cache = {}

    def get(name, dtype=torch.float32):
        if (name, dtype) not in cache:
            cfg = CONFIGS[name]()
            hf = build_oracle(cfg, seed=0, dtype=dtype)
            ours = VisionModel(cfg.vision_config).to(dtype)
            ours.load_state_dict(hf.model.visual.state_dict(), strict=True)
            cache[name, dtype] = cfg, hf, ours
        return cache[name, dtype]

    return get


def _pixels(cfg, grid, seed=1):
    n = int(torch.tensor(grid).prod(-1).sum())
    return torch.randn(n, cfg.vision_config.patch_dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- components

@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_keys_are_checkpoint_keys(pair, name):
    cfg, hf, ours = pair(name)
    theirs = {k: tuple(v.shape) for k, v in hf.model.visual.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs


@pytest.mark.parametrize("name", CONFIGS)
def test_patch_embed_equals_conv3d(pair, name):
    cfg, hf, ours = pair(name)
    px = _pixels(cfg, GRIDS[name])
    proj = ours.patch_embed.proj
    with torch.no_grad():
        mine, theirs = ours.patch_embed(px), hf.model.visual.patch_embed(px)
        w64 = proj.weight.double().reshape(proj.out_channels, -1)  # (C, patch_dim)
        exact = torch.nn.functional.linear(px.double(), w64, proj.bias.double())
        # Each output sums patch_dim (1176) products; float32 rounding noise is ~eps * sum|w x| (the oracle draws
        # this weight with std 0.5, so sum|w x| reaches ~400 and the noise ~5e-5 even where y is small).
        noise = 2**-23 * (px.double().abs() @ w64.abs().T).max().item()
    assert_close(mine, exact, atol=noise, what="patch_embed vs float64")
    assert_close(mine, theirs, atol=3 * noise, what="patch_embed vs the oracle's Conv3d")  # it has noise too
    assert mine.abs().max() > 10


@pytest.mark.parametrize("name", CONFIGS)
def test_patch_coords_match_oracle(pair, name):
    from transformers.vision_utils import get_vision_position_ids

    m = CONFIGS[name]().vision_config.spatial_merge_size
    grid = torch.tensor(GRIDS[name] + [[2, 2 * m, 3 * m]])
    assert torch.equal(patch_coords(grid, m), get_vision_position_ids(grid, m))
    assert segment_lengths(grid) == [h * w for t, h, w in grid.tolist() for _ in range(t)]


@pytest.mark.parametrize("name", CONFIGS)
def test_position_table_resampling_matches_oracle(pair, name):
    cfg, hf, ours = pair(name)
    vis, m = hf.model.visual, cfg.vision_config.spatial_merge_size
    grid = torch.tensor(GRIDS[name])
    coords, lengths = patch_coords(grid, m), torch.tensor(segment_lengths(grid))
    with torch.no_grad():
        zeros = torch.zeros(len(coords), cfg.vision_config.hidden_size)
        theirs = vis.embeddings(zeros, lengths, grid, coords[:, 0], coords[:, 1])  # 0 + resampled table
        mine = position_embeddings(ours.embeddings.position_embedding.weight, grid, m)
    assert_close(mine, theirs, atol=1e-5, what="resampled position table")


def test_position_table_at_its_own_size_is_itself():
    table = torch.randn(36, 5, generator=torch.Generator().manual_seed(0))
    assert_close(interpolate_pos_table(table, 6, 6), table.view(6, 6, 5), atol=1e-6, what="identity resampling")
    with pytest.raises(VisionInputError, match="square"):
        interpolate_pos_table(table[:35], 6, 6)


@pytest.mark.parametrize("name", CONFIGS)
def test_rotary_tables_match_oracle(pair, name):
    cfg, hf, ours = pair(name)
    m, D = cfg.vision_config.spatial_merge_size, cfg.vision_config.head_dim
    grid = torch.tensor(GRIDS[name])
    angles = vision_rotary_angles(grid, D, m)
    assert angles.shape == (len(patch_coords(grid, m)), D) and angles.dtype == torch.float32
    cos, sin = hf.model.visual.rotary_pos_emb(torch.zeros(1), patch_coords(grid, m))
    assert_close(angles.cos(), cos, atol=1e-6, what="rotary cos")
    assert_close(angles.sin(), sin, atol=1e-6, what="rotary sin")


@pytest.mark.parametrize("name", CONFIGS)
def test_one_block_matches_oracle(pair, name):
    cfg, hf, _ = pair(name)
    vc = cfg.vision_config
    grid = torch.tensor(GRIDS[name])
    block = VisionBlock(vc)
    block.load_state_dict(hf.model.visual.blocks[1].state_dict(), strict=True)
    lengths = segment_lengths(grid)
    x = torch.randn(sum(lengths), vc.hidden_size, generator=torch.Generator().manual_seed(2))
    angles = vision_rotary_angles(grid, vc.head_dim, vc.spatial_merge_size)
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    with torch.no_grad():
        mine = block(x, angles.cos(), angles.sin(), lengths)
        theirs = hf.model.visual.blocks[1](x, cu_seqlens=cu, position_embeddings=(angles.cos(), angles.sin()))
    assert_close(mine, theirs, atol=1e-5, what="vision block 1")


@pytest.mark.parametrize("name", CONFIGS)
def test_merger_matches_oracle(pair, name):
    cfg, hf, _ = pair(name)
    merger = PatchMerger(cfg.vision_config)
    merger.load_state_dict(hf.model.visual.merger.state_dict(), strict=True)
    x = torch.randn(7, cfg.vision_config.out_hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_close(merger(x), hf.model.visual.merger(x), atol=1e-5, what="patch merger")


# ---------------------------------------------------------------------- the whole tower

@pytest.mark.parametrize("name", CONFIGS)
def test_tower_matches_oracle_float32(pair, name):
    cfg, hf, ours = pair(name)
    grid = torch.tensor(GRIDS[name])
    px = _pixels(cfg, GRIDS[name])
    with torch.no_grad():
        mine = ours(px, grid)
        theirs = hf.model.visual(px, grid_thw=grid).pooler_output
    m = cfg.vision_config.spatial_merge_size
    assert mine.shape == (len(px) // m**2, cfg.vision_config.out_hidden_size) and mine.dtype == torch.float32
    assert_close(mine, theirs, atol=1e-5, what=f"{name} vision features, float32")


@pytest.mark.parametrize("name", CONFIGS)
def test_tower_matches_oracle_bfloat16(pair, name):
    """bfloat16 keeps 8 significant bits: every matmul output, norm and residual add is rounded to a relative 2^-9.

    Two implementations that round at slightly different places (Linear vs Conv3d accumulation order, interpolate vs
    grid_sample, batched vs single SDPA) therefore disagree by about as much as either one differs from float32.
    So the tolerance is calibrated on the oracle itself, with the *same* bf16 weights run in float32 as the truth:
      * max |ours - oracle| <= 2 x max |oracle - truth| (measured over 12 seeds: 0.8-1.2x);
      * RMS(ours - truth) <= 1.2 x RMS(oracle - truth): we round no worse than the oracle on average (measured:
        0.94-1.04x; the max error alone is too noisy a statistic for this, it ranged 0.8-1.6x).
    On these features (max ~0.3-0.5) the first bound is ~6e-3 to 9e-3 absolute. The float32 tests pin down the
    computation; this one checks that the bf16 path stays in bf16 end to end and agrees with the oracle's bf16 run to
    within bf16 rounding. (At this size, moving the rotary or the RMSNorm statistics from float32 to bf16 stays
    inside that noise, so it is not what this test is for; a wrong weight, order or formula is far outside it.)"""
    cfg, hf, ours = pair(name, torch.bfloat16)
    truth_model = VisionModel(cfg.vision_config)
    truth_model.load_state_dict({k: v.float() for k, v in hf.model.visual.state_dict().items()}, strict=True)
    grid = torch.tensor(GRIDS[name])
    px = _pixels(cfg, GRIDS[name])
    with torch.no_grad():
        mine = ours(px, grid)
        theirs = hf.model.visual(px.bfloat16(), grid_thw=grid).pooler_output
        truth = truth_model(px, grid)
    assert mine.dtype == torch.bfloat16
    oracle_err = (theirs.float() - truth).abs().max().item()
    assert 0 < oracle_err < 0.05 * truth.abs().max().item()
    assert_close(mine.float(), theirs.float(), atol=2 * oracle_err, what=f"{name} bf16 features vs oracle bf16")
    rms = lambda x: x.float().pow(2).mean().sqrt().item()  # noqa: E731
    ours_rms, oracle_rms = rms(mine.float() - truth), rms(theirs.float() - truth)
    assert ours_rms <= 1.2 * oracle_rms, f"{name}: our bf16 RMS error {ours_rms:.3g} vs the oracle's {oracle_rms:.3g}"


def test_video_temporal_patches_match_oracle(pair):
    """A [t, h, w] = [2, 4, 6] video is two temporal patches; transformers expands it to two [1, 4, 6] rows."""
    cfg, hf, ours = pair("tiny")
    grid = torch.tensor([[1, 6, 4], [2, 4, 6], [3, 2, 2]])
    expanded = torch.tensor([[1, h, w] for t, h, w in grid.tolist() for _ in range(t)])
    px = _pixels(cfg, grid.tolist())
    with torch.no_grad():
        mine = ours(px, grid)
        theirs = hf.model.visual(px, grid_thw=expanded).pooler_output
    assert_close(mine, theirs, atol=1e-5, what="video features, float32")


def test_attention_never_crosses_images(pair):
    cfg, hf, ours = pair("tiny")
    grid = torch.tensor([[1, 4, 6], [1, 8, 4], [1, 4, 6]])  # images 1 and 3 have equal size: batched together
    px = _pixels(cfg, grid.tolist())
    changed = px.clone()
    changed[24:56] = torch.randn(32, px.shape[1], generator=torch.Generator().manual_seed(9))  # image 2 only
    with torch.no_grad():
        a, b = ours(px, grid), ours(changed, grid)
        alone = torch.cat([ours(px[s:e], grid[i:i + 1]) for i, (s, e) in enumerate([(0, 24), (24, 56), (56, 80)])])
    keep = torch.cat([torch.arange(0, 6), torch.arange(14, 20)])  # merged rows of images 1 and 3
    assert torch.equal(a[keep], b[keep]), "changing image 2 changed another image's features"
    assert (a[6:14] - b[6:14]).abs().max() > 1e-3, "image 2's own features did not change"
    assert_close(a, alone, atol=1e-6, what="images together vs one at a time")


def test_attention_weights_path_gives_same_features(pair):
    cfg, hf, ours = pair("tiny")
    grid = torch.tensor([[2, 4, 6], [1, 6, 10]])
    px = _pixels(cfg, grid.tolist())
    with torch.no_grad():
        fast = ours(px, grid)
        slow, attn = ours(px, grid, return_attentions=True)
    assert_close(slow, fast, atol=1e-6, what="features with return_attentions=True")
    H = cfg.vision_config.num_heads
    assert len(attn) == cfg.vision_config.depth
    assert [tuple(a.shape) for a in attn[0]] == [(H, 24, 24), (H, 24, 24), (H, 60, 60)]
    assert_close(attn[1][2].sum(-1), torch.ones(H, 60), atol=1e-5, what="softmax rows sum to 1")


def test_meta_device_then_assign(pair):
    cfg, hf, ours = pair("tiny")
    with torch.device("meta"):
        lazy = VisionModel(cfg.vision_config)
    lazy.load_state_dict(hf.model.visual.state_dict(), strict=True, assign=True)
    grid = torch.tensor(GRIDS["tiny"])
    px = _pixels(cfg, GRIDS["tiny"])
    with torch.no_grad():
        assert torch.equal(lazy(px, grid), ours(px, grid))


@pytest.mark.parametrize("bad, match", [
    (lambda px, g: (px[:, :100], g), "patch_dim"),
    (lambda px, g: (px[:-1], g), "rows"),
    (lambda px, g: (px, torch.tensor([[1, 4, 6], [1, 8, 4], [1, 5, 12]])), "multiples of spatial_merge_size"),
    (lambda px, g: (px, g.float()), "integer"),
    (lambda px, g: (px, g[:, :2]), r"\(items, 3\)"),
    (lambda px, g: (px[0], g), "2-D"),
    (lambda px, g: (px, torch.tensor([[1, 4, 6], [0, 8, 4], [1, 6, 10]])), "zero or negative"),
    (lambda px, g: ((px * 255).to(torch.uint8), g), "dtype torch.uint8.*floating point"),
    (lambda px, g: (px.index_fill(0, torch.tensor([30]), float("nan")), g), "1176 NaN and 0 inf .*row 30"),
    (lambda px, g: (px.index_fill(0, torch.tensor([2]), float("inf")), g), "0 NaN and 1176 inf .*row 2"),
])
def test_bad_inputs_raise_clear_errors(pair, bad, match):
    cfg, hf, ours = pair("tiny")
    px, grid = bad(_pixels(cfg, GRIDS["tiny"]), torch.tensor(GRIDS["tiny"]))
    with pytest.raises(VisionInputError, match=match):
        ours(px, grid)
    assert issubclass(VisionInputError, ValueError)


def test_vision_attention_bias_is_refused():
    with pytest.raises(ConfigError, match="attention_bias"):
        VisionModel(dataclasses.replace(tiny().vision_config, attention_bias=True))
