"""Chapter 04: the GLM-4 decoder and the whole forward pass (minglm4v/decoder.py, model.py, debug.py).

Tiny random transformers models are saved with `save_pretrained`, loaded with `minglm4v.load`, and their logits are
compared with the oracle's in float32 within 1e-4, for several configs and prompts.
"""

from __future__ import annotations

import oracle
import pytest
import torch
from test_ch03_mrope import Prompt, left_pad

import minglm4v
from minglm4v import tiny
from minglm4v.debug import compare
from minglm4v.decoder import DecoderLayer, attention_mask_4d
from minglm4v.errors import InputError
from minglm4v.mrope import get_rope_index, rotary_cos_sin

ATOL = 1e-4  # float32 logits (the bound)

CONFIGS = {
    "half_211": tiny(),  # head_dim 16, rotary 8 dims, section (2, 1, 1)
    "full_233": tiny(partial_rotary_factor=1.0, mrope_section=(2, 3, 3)),  # rotary on all 16 dims
    "hd32_mqa_143": tiny(num_attention_heads=2, num_key_value_heads=1, mrope_section=(1, 4, 3)),  # one KV head
}
MEASURED: dict[tuple[str, str], float] = {}  # (config, case) -> max abs diff, printed with -s


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    """(name, ours, oracle) for one config; ours loaded from the oracle's save_pretrained folder."""
    cfg = CONFIGS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    hf = oracle.save_oracle(cfg, folder, seed=7)
    return request.param, minglm4v.load(folder), hf


def pixels(grids, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(t * h * w for t, h, w in grids)
    return torch.randn(n, tiny().vision_config.patch_dim, generator=g)


def check(name, case, ours, want, mask=None):
    if mask is not None:
        ours, want = ours[mask.bool()], want[mask.bool()]  # (real tokens, V)
    MEASURED[(name, case)] = oracle.assert_close(ours, want, atol=ATOL, what=f"{name}/{case} logits")


@torch.no_grad()
def test_text_only(pair):
    name, ours, hf = pair
    ids, _ = Prompt(seed=1).text(13).tensors()
    check(name, "text", ours(ids), hf(input_ids=ids).logits)


@torch.no_grad()
def test_one_image(pair):
    name, ours, hf = pair
    grids = [[1, 4, 6]]
    ids, types = Prompt(seed=2).text(5).image(grids[0]).text(4).tensors()
    pv, g = pixels(grids), torch.tensor(grids)
    check(name, "one_image", ours(ids, pixel_values=pv, image_grid_thw=g),
          hf(input_ids=ids, pixel_values=pv, image_grid_thw=g, mm_token_type_ids=types).logits)


@torch.no_grad()
def test_two_images_of_different_sizes(pair):
    name, ours, hf = pair
    grids = [[1, 6, 4], [1, 2, 8]]
    ids, types = Prompt(seed=3).text(3).image(grids[0]).text(2).image(grids[1]).text(3).tensors()
    pv, g = pixels(grids, seed=1), torch.tensor(grids)
    check(name, "two_images", ours(ids, pixel_values=pv, image_grid_thw=g),
          hf(input_ids=ids, pixel_values=pv, image_grid_thw=g, mm_token_type_ids=types).logits)


@torch.no_grad()
def test_left_padded_batch_of_two(pair):
    """Rows of different lengths with images, left padded; only real tokens are compared. Each padded row must
    also give the logits it gives alone."""
    name, ours, hf = pair
    a = Prompt(seed=4).text(2).image([1, 4, 4]).text(3)
    b = Prompt(seed=5).text(6).image([1, 2, 6]).text(1).image([1, 4, 2]).text(2)
    ids, types, mask = left_pad([a, b])
    grids = [[1, 4, 4], [1, 2, 6], [1, 4, 2]]
    pv, g = pixels(grids, seed=2), torch.tensor(grids)
    got = ours(ids, attention_mask=mask, pixel_values=pv, image_grid_thw=g)
    want = hf(input_ids=ids, attention_mask=mask, pixel_values=pv, image_grid_thw=g, mm_token_type_ids=types).logits
    check(name, "padded_batch", got, want, mask)
    alone = ours(torch.tensor([a.ids]), pixel_values=pv[:16], image_grid_thw=g[:1])[0]
    oracle.assert_close(got[0][mask[0].bool()], alone, atol=ATOL, what="padded row vs alone")


@torch.no_grad()
def test_left_padded_text_batch(pair):
    """Text only: positions count real tokens (transformers v5 counts pads too unless told), so the oracle gets
    the same position ids explicitly."""
    name, ours, hf = pair
    ids, _, mask = left_pad([Prompt(seed=6).text(4), Prompt(seed=7).text(9)])
    pos = (mask.cumsum(-1) - 1).clamp(min=0).expand(3, -1, -1)
    check(name, "padded_text", ours(ids, attention_mask=mask),
          hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits, mask)


@torch.no_grad()
def test_video(pair):
    name, ours, hf = pair
    grids = [[2, 4, 4]]
    ids, types = Prompt(seed=8).text(3).video(grids[0]).text(2).tensors()
    pv, g = pixels(grids, seed=3), torch.tensor(grids)
    check(name, "video", ours(ids, pixel_values_videos=pv, video_grid_thw=g),
          hf(input_ids=ids, pixel_values_videos=pv, video_grid_thw=g, mm_token_type_ids=types).logits)


@torch.no_grad()
def test_sharded_checkpoint(tmp_path):
    cfg = CONFIGS["half_211"]
    hf = oracle.save_oracle(cfg, tmp_path, seed=3, max_shard_size="300KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = minglm4v.load(tmp_path)
    assert len(ours.load_report.files) > 1 and ours.load_report.files[0] == "model-00001-of-%05d.safetensors" % len(
        ours.load_report.files)
    grids = [[1, 4, 4]]
    ids, types = Prompt(seed=9).text(3).image(grids[0]).text(3).tensors()
    pv, g = pixels(grids, seed=4), torch.tensor(grids)
    check("half_211", "sharded", ours(ids, pixel_values=pv, image_grid_thw=g),
          hf(input_ids=ids, pixel_values=pv, image_grid_thw=g, mm_token_type_ids=types).logits)


@torch.no_grad()
def test_decoder_layer_matches_oracle_layer(pair):
    """One layer alone, with padding, against transformers' layer holding the same weights."""
    name, ours, hf = pair
    cfg = ours.config.text_config
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 6, cfg.hidden_size, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    pos = (mask.cumsum(-1) - 1).clamp(min=0).expand(3, -1, -1)
    cos, sin = rotary_cos_sin(pos, cfg, x.dtype)
    layer = ours.model.language_model.layers[1]
    assert isinstance(layer, DecoderLayer)
    got = layer(x, cos, sin, attention_mask_4d(mask, 6))
    hf_layer = hf.model.language_model.layers[1]
    # transformers' additive mask: 0 where allowed, -inf where not
    add = torch.zeros(2, 1, 6, 6).masked_fill(~attention_mask_4d(mask, 6)[0], float("-inf"))
    want = hf_layer(x, position_embeddings=hf.model.language_model.rotary_emb(x, pos), attention_mask=add)
    want = want[0] if isinstance(want, tuple) else want
    oracle.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, what="layer 1")


def test_gqa_shapes():
    """9B: 32 query heads of 128, 2 KV heads; q_proj 4096 -> 4096, k/v 4096 -> 256, gate_up 4096 -> 2 * 13696."""
    from minglm4v import glm41v_9b
    with torch.device("meta"):
        layer = DecoderLayer(glm41v_9b().text_config)
    a = layer.self_attn
    assert (a.num_heads, a.num_kv_heads, a.head_dim) == (32, 2, 128)
    assert a.q_proj.weight.shape == (4096, 4096) and a.k_proj.weight.shape == (256, 4096)
    assert a.v_proj.bias.shape == (256,) and a.o_proj.bias is None
    assert layer.mlp.gate_up_proj.weight.shape == (27392, 4096)


def test_layer_debugger_names_the_first_divergence(pair):
    name, ours, hf = pair
    ids, _ = Prompt(seed=11).text(8).tensors()
    report = compare(ours, hf, lambda m: m(ids), lambda m: m(input_ids=ids))
    assert report.first_divergence is None and len(report.rows) == len(ours.model.language_model.layers) + 3
    w = ours.model.language_model.layers[1].post_mlp_layernorm.weight
    with torch.no_grad():  # break layer 1 on our side, compare, restore
        w += 0.5
        try:
            report = compare(ours, hf, lambda m: m(ids), lambda m: m(input_ids=ids))
        finally:
            w -= 0.5
    assert report.first_divergence == "model.language_model.layers.1", str(report)
    assert "<-- over atol (first)" in str(report)


@torch.no_grad()
def test_placeholder_count_must_match_features(pair):
    _, ours, _ = pair
    ids, _ = Prompt().text(2).image([1, 4, 4]).text(1).tensors()
    ids = torch.cat([ids, torch.tensor([[ours.config.image_token_id]])], dim=1)  # one placeholder too many
    with pytest.raises(InputError, match="placeholder"):
        ours(ids, pixel_values=pixels([[1, 4, 4]]), image_grid_thw=torch.tensor([[1, 4, 4]]))


@torch.no_grad()
def test_bad_combinations_are_refused(pair):
    _, ours, _ = pair
    ids, _ = Prompt().text(2).image([1, 2, 2]).video([1, 2, 2]).tensors()
    g = torch.tensor([[1, 2, 2]])
    with pytest.raises(InputError, match="mix"):
        ours(ids, pixel_values=pixels([[1, 2, 2]]), image_grid_thw=g, pixel_values_videos=pixels([[1, 2, 2]]),
             video_grid_thw=g)
    with pytest.raises(InputError, match="without"):
        ours(ids[:, :5], image_grid_thw=g)
    with pytest.raises(InputError, match="no image_grid_thw"):
        ours(ids[:, :5])


def test_positions_used_by_forward_are_the_oracles(pair):
    """The model's own position ids (used above) equal the oracle's get_rope_index on a two-image prompt."""
    _, ours, hf = pair
    ids, types = Prompt(seed=12).text(2).image([1, 2, 4]).text(1).image([1, 4, 2]).tensors()
    g = torch.tensor([[1, 2, 4], [1, 4, 2]])
    pos, _ = ours.position_ids(ids, image_grid_thw=g)
    assert torch.equal(pos, get_rope_index(ids, ours.config, g)[0])
    assert torch.equal(pos, hf.model.get_rope_index(ids, types, image_grid_thw=g)[0])


def teardown_module():
    if MEASURED:
        print("\nmax |logits - oracle| (float32):")
        for (name, case), d in sorted(MEASURED.items()):
            print(f"  {name:<14} {case:<14} {d:.2e}")


def test_attention_classes_share_names_and_constructors():
    """Both attention classes say num_heads / num_kv_heads / head_dim, and every module takes `config`."""
    import inspect

    from minglm4v import decoder, vision, vision_attention

    cfg = tiny()
    text, image = decoder.TextAttention(cfg.text_config), vision_attention.VisionAttention(cfg.vision_config)
    t, v = cfg.text_config, cfg.vision_config
    assert (text.num_heads, text.num_kv_heads, text.head_dim) == (t.num_attention_heads, t.num_key_value_heads,
                                                                  t.head_dim)
    assert (image.num_heads, image.num_kv_heads, image.head_dim) == (v.num_heads, v.num_heads, v.head_dim)
    modules = [c for m in (decoder, vision, vision_attention) for _, c in inspect.getmembers(m, inspect.isclass)
               if issubclass(c, torch.nn.Module) and c.__module__ == m.__name__]
    assert len(modules) >= 9
    for cls in modules:
        assert list(inspect.signature(cls.__init__).parameters)[1:] == ["config"], cls.__name__


def test_no_module_level_names_that_reuse_shape_letters():
    import ast
    from pathlib import Path

    # the shape legend's letters (F stays: `torch.nn.functional as F` is the convention, and no legend here uses it)
    legend = {"B", "L", "N", "t", "h", "w", "m", "H", "Hkv", "D", "C", "T", "V", "TR", "R", "I", "P", "S"}
    files = ["generation.py", "generate_options.py", "model_inputs.py", "sampling.py", "fast.py", "cache.py",
             "model.py", "decoder.py", "vision.py", "vision_attention.py", "mrope.py", "norms.py", "debug.py"]
    root = Path(minglm4v.__file__).parent
    for name in files:
        names = set()
        for node in ast.parse((root / name).read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {a.asname or a.name for a in node.names}
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {e.id for t in targets for e in ast.walk(t) if isinstance(e, ast.Name)}
        assert not names & legend, (name, names & legend)
