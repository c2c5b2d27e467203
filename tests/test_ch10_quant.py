"""Chapter 10: weight-only int8 / int4 quantization.

The math by hand on small matrices (codes, scales, error bounds, zero and constant rows), odd widths refused, the
packed kernels against the reference path, the documented checkpoint layout, quantizing while loading
(`load(quantize=...)`) equal to quantizing a loaded model, a saved quantized checkpoint read back exactly and broken
ones refused, generation (eager, static, compiled) on a quantized model, and the held-out TinyVQA accuracy of the
shipped model in fp32, bf16, int8 and int4.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from minglm4v import tinyvqa, tinyvqa_eval, weights
from minglm4v.checkpoint import iter_checkpoint, read_checkpoint
from minglm4v.errors import CheckpointError, QuantError
from minglm4v.fast import decode_step, generate_static
from minglm4v.generation import generate
from minglm4v.processor import load_processor
from minglm4v.quant import QuantLinear, model_bytes, prepare, quantization_config, quantize_model
from minglm4v.quant_kernels import cpu_tile_pack, cpu_tile_unpack, int4_layout, int8_mm_factored
from minglm4v.quant_load import load_quantized, save_quantized
from minglm4v.quant_math import (
    dequantize_int4,
    dequantize_int8,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    unpack_nibbles,
)
from minglm4v.train import TEST_SEED

CKPT = tinyvqa.CHECKPOINT  # data/tiny-glm4v: float32, text width 128, 3 layers, vocabulary 384


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- the math by hand


def test_int8_by_hand():
    w = torch.tensor([[0.0, 1.27, -0.635, 0.3], [0.5, -0.25, 0.125, 0.0]])
    q, s = quantize_int8(w)
    # row 0: s = 1.27 / 127 = 0.01; -0.635 / 0.01 = -63.5 rounds to the even -64; row 1: s = 0.5 / 127
    assert torch.allclose(s, torch.tensor([0.01, 0.5 / 127]))
    assert q.tolist() == [[0, 127, -64, 30], [127, -64, 32, 0]]  # row 1: -63.5 -> -64, 31.75 -> 32
    assert torch.allclose(dequantize_int8(q, s, torch.float32), torch.tensor([[0.0, 1.27, -0.64, 0.30],
                                                                            [0.5, -64 * 0.5 / 127, 32 * 0.5 / 127,
                                                                             0.0]]))


def test_int4_by_hand():
    """A group whose values are exactly min + k * step gets the codes k back and no error at all."""
    lo, step = -1.0, 0.25
    k = torch.arange(32) % 16  # every code twice
    w = (lo + step * k.double()).float()[None]  # (1, 32): min -1, max 2.75
    q, s, z = quantize_int4(w, 32)
    assert s.item() == step and z.item() == lo + 8 * step  # s = (max - min) / 15, z = value of code 8
    assert q[0].tolist() == k.tolist()
    assert torch.equal(dequantize_int4(q, s, z, torch.float32), w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_error_is_at_most_half_a_step(dtype):
    """|W - dequantize(quantize(W))| <= s / 2 per element, plus the compute dtype's rounding of the result."""
    w = (torch.randn(64, 256, generator=gen(1)) * torch.rand(64, 1, generator=gen(2)) + 0.3).to(dtype)
    eps = torch.finfo(dtype).eps
    q, s = quantize_int8(w)
    err = (dequantize_int8(q, s, torch.float32) - w.float()).abs()
    assert (err <= s.float()[:, None] / 2 * (1 + 1e-4) + eps * w.float().abs()).all()
    for G in (32, 64, 128):
        q, s, z = quantize_int4(w, G)
        err = (dequantize_int4(q, s, z, torch.float32) - w.float()).abs().view(64, 256 // G, G)
        bound = s.float()[..., None] / 2 + 2 * eps * w.float().abs().view(64, 256 // G, G).amax(-1, keepdim=True)
        assert (err <= bound).all(), (G, (err - bound).max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_and_constant_rows_are_exact(dtype):
    w = torch.zeros(4, 64, dtype=dtype)
    w[1] = 0.7
    w[2] = -3.1
    w[3, :32] = 5.0  # one constant group, then a zero group
    q, s = quantize_int8(w)
    assert torch.equal(dequantize_int8(q, s, dtype), w)
    q, s, z = quantize_int4(w, 32)
    assert torch.equal(dequantize_int4(q, s, z, dtype), w)
    assert torch.isfinite(s).all() and (s > 0).all()


def test_odd_widths_are_refused_clearly():
    with pytest.raises(QuantError, match="not a multiple of group_size=64.*group_size=32"):
        QuantLinear(96, 64, scheme="int4", group_size=64)
    with pytest.raises(QuantError, match="none divides it"):
        quantize_int4(torch.zeros(4, 40), 32)
    with pytest.raises(QuantError, match="groups are"):
        QuantLinear(128, 64, scheme="int4", group_size=16)
    with pytest.raises(QuantError, match="choose one of"):
        QuantLinear(128, 64, scheme="int3")
    QuantLinear(97, 5, scheme="int8")  # int8 takes any width


def test_nibbles_and_cpu_tiling_round_trip():
    codes = torch.randint(0, 16, (128, 256), generator=gen(3), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes)
    assert pack_nibbles(torch.tensor([[1, 2]], dtype=torch.uint8)).item() == 0x21  # column 0 low, column 1 high
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.int(), 1)
    assert torch.equal(cpu_tile_pack(codes), packed)  # the kernel's layout, as this module writes it down
    assert torch.equal(cpu_tile_unpack(packed), codes)


# ---------------------------------------------------------------------- QuantLinear: two paths


def _layer(K, N, dtype, bias=True, seed=4):
    lin = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=gen(seed)) / math.sqrt(K))
        if bias:
            lin.bias.copy_(torch.randn(N, generator=gen(seed + 1)))
    return lin.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("rows", [1, 3])
def test_fast_path_agrees_with_reference(scheme, dtype, rows):
    K, N = 256, 192
    q = QuantLinear.from_linear(_layer(K, N, dtype), scheme, 64)
    if scheme == "int4":
        assert q.layout == "cpu"  # the packed kernel is in use
    x = torch.randn(2, rows, K, generator=gen(5)).to(dtype)
    fast = q(x)
    q.fast = False
    ref = q(x)
    assert fast.shape == ref.shape == (2, rows, N) and fast.dtype == dtype
    # two roundings of the output in `dtype` apart (the kernels accumulate in float32, the reference may not)
    tol = 4 * torch.finfo(dtype).eps * (1 if dtype == torch.bfloat16 else math.sqrt(K))
    rel = (fast.float() - ref.float()).norm() / ref.float().norm()
    assert rel <= tol, (rel, tol)


@pytest.mark.parametrize("scheme,G,bound", [("int8", 128, 0.01), ("int4", 32, 0.1), ("int4", 128, 0.12)])
def test_output_error_against_the_float_layer(scheme, G, bound):
    lin = _layer(512, 256, torch.float32, bias=False)
    x = torch.randn(8, 512, generator=gen(6))
    y, yq = lin(x), QuantLinear.from_linear(lin, scheme, G)(x)
    assert 0 < (yq - y).norm() / y.norm() < bound


def test_state_dict_is_the_documented_layout_and_moves_keep_the_result():
    lin = _layer(256, 128, torch.bfloat16)
    q = QuantLinear.from_linear(lin, "int4", 64)
    sd = q.state_dict()
    assert {k: (v.dtype, tuple(v.shape)) for k, v in sd.items()} == {
        "qweight": (torch.uint8, (128, 128)), "scales": (torch.bfloat16, (128, 4)),
        "zeros": (torch.bfloat16, (128, 4)), "bias": (torch.bfloat16, (128,))}
    codes, s, z = quantize_int4(lin.weight.detach(), 64)
    assert torch.equal(sd["qweight"], pack_nibbles(codes)) and torch.equal(sd["scales"], s)
    fresh = QuantLinear(256, 128, True, "int4", 64, torch.bfloat16)
    fresh.load_state_dict(sd)
    x = torch.randn(1, 256, generator=gen(7)).to(torch.bfloat16)
    assert torch.equal(fresh(x), q(x))
    moved = q.to("cpu", torch.float32)  # unpacked, converted, packed again
    assert moved.layout == "cpu" and moved.dtype == torch.float32
    assert torch.equal(moved.codes(), codes)


def test_loading_a_slice_of_rows_at_a_time_changes_nothing(monkeypatch):
    """load_weight and pack work on row slices (no full-size temporaries); the result is the one-piece one."""
    import minglm4v.quant_math as QM

    lin = _layer(256, 320, torch.bfloat16, bias=False)
    whole = QuantLinear.from_linear(lin, "int4", 64)
    monkeypatch.setattr(QM, "ROW_CHUNK_ELEMENTS", 64 * 256)  # 64 rows per slice: 5 slices
    sliced = QuantLinear.from_linear(lin, "int4", 64)
    codes, s, z = quantize_int4(lin.weight.detach(), 64)
    assert torch.equal(sliced.qweight, torch._convert_weight_to_int4pack_for_cpu(codes.int(), 1))
    assert torch.equal(sliced.qweight, whole.qweight) and torch.equal(sliced.scales, s)


def test_meta_module_refuses_to_run_and_load_weight_checks_shape():
    q = QuantLinear(128, 64, False, "int8", dtype=torch.float32, device="meta")
    with pytest.raises(QuantError, match="no weights yet"):
        q(torch.zeros(1, 128))
    with pytest.raises(QuantError, match="shape"):
        q.load_weight(torch.zeros(64, 64))
    q.load_weight(torch.ones(64, 128))
    assert q(torch.ones(1, 128)).allclose(torch.full((1, 64), 128.0))


# ---------------------------------------------------------------------- the model


def test_quantize_model_replaces_the_decoder_and_lm_head_only():
    model = weights.load(CKPT)
    before = model_bytes(model)
    report = quantize_model(model, "int4", 128)
    n_layers = model.config.text_config.num_hidden_layers
    assert len(report.layers) == 6 * n_layers + 1 and report.layers[-1] == "lm_head"
    assert not any(isinstance(m, QuantLinear) for m in model.visual.modules())
    assert isinstance(model.language_model.embed_tokens, nn.Embedding)
    assert report.model_bytes_before == before > report.model_bytes_after == model_bytes(model)
    assert report.quant_bytes < 0.2 * report.float_bytes  # float32 -> 4 bits and a scale and zero per 128
    assert model.quantization_config == quantization_config("int4", 128, False, torch.float32)
    with pytest.raises(QuantError, match="already quantized"):
        quantize_model(model, "int8")


def test_quantize_vision_and_a_width_it_cannot_take():
    model = weights.load(CKPT)  # vision width 96: groups of 64 do not divide it
    with pytest.raises(QuantError, match="model.visual.*group_size=32"):
        quantize_model(model, "int4", 64, quantize_vision=True)
    assert not any(isinstance(m, QuantLinear) for m in model.modules())  # nothing was half-done
    report = quantize_model(model, "int4", 32, quantize_vision=True)
    assert any(n.startswith("model.visual.") for n in report.layers)


def test_prepare_on_meta_names_the_layers():
    model = weights.build(weights.Glm4vConfig.from_pretrained(CKPT), "meta")
    names = prepare(model, "int8")
    assert all(isinstance(model.get_submodule(n), QuantLinear) and model.get_submodule(n).qweight.is_meta
               for n in names)


def _group(scheme: str, G: int = 64) -> int | None:
    return G if scheme == "int4" else None  # int8 has one scale per row: no group size to give


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]) for k in x)


def _logits(model) -> torch.Tensor:
    ids = torch.randint(13, 384, (2, 12), generator=gen(11))  # text ids (the specials are 0..12)
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("scheme,dtype,mmap", [("int8", torch.float32, True), ("int8", torch.bfloat16, False),
                                               ("int4", torch.float32, True), ("int4", torch.bfloat16, True)])
def test_quantizing_while_loading_equals_quantizing_a_loaded_model(scheme, dtype, mmap):
    """float32 with mmap: each weight is a view of the file, quantized, its pages released; bfloat16: converted."""
    want = weights.load(CKPT, dtype=dtype)
    quantize_model(want, scheme, 64)
    got = weights.load(CKPT, dtype=dtype, mmap=mmap, quantize=scheme, group_size=_group(scheme))
    assert _same_state(want, got)
    names = read_checkpoint(CKPT).tensors()
    assert got.load_report.tensors == len(names) and got.load_report.dtype == dtype
    assert got.quantization_config == got.config.quantization_config == quantization_config(scheme, 64, False, dtype)
    assert torch.equal(_logits(got), _logits(want))


def test_released_file_pages_read_back_the_same_values():
    """Quantizing while loading gives a weight's file pages back to the kernel; a page touched again is re-read from
    the file, and a tensor that is not a view of the file is left alone."""
    from minglm4v.quant_load import _release

    name, view = max(iter_checkpoint(CKPT), key=lambda kv: kv[1].numel())  # a view of the mapped file
    assert view.numel() * 4 > 4 * 4096 and not view.untyped_storage().resizable()
    before = view.clone()
    _release(view)
    assert torch.equal(view, before), name
    own = torch.randn(64, 1024, generator=gen(12))
    kept = own.clone()
    _release(own)
    assert torch.equal(own, kept)


@pytest.mark.parametrize("scheme,dtype,shard", [("int8", torch.float32, "5GB"), ("int4", torch.bfloat16, "200KB")])
def test_saved_quantized_checkpoint_reads_back_exactly(scheme, dtype, shard, tmp_path):
    model = weights.load(CKPT, dtype=dtype, quantize=scheme, group_size=_group(scheme))
    written = weights.save(model, tmp_path / "q", max_shard_size=shard)  # plain save: the layout and the record
    assert (len(written) > 3) == (shard == "200KB")  # config, shards and their index
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    assert cfg["quantization_config"] == quantization_config(scheme, 64, False, dtype)
    back = weights.load(tmp_path / "q")  # no quantize=: the record says how
    assert _same_state(model, back) and back.quantization_config == model.quantization_config
    assert torch.equal(_logits(back), _logits(model))
    for m in (weights.load(tmp_path / "q", mmap=False), load_quantized(tmp_path / "q", scheme, _group(scheme))):
        assert _same_state(model, m)  # the same scheme asked again is fine
    save_quantized(back, tmp_path / "again")  # save_quantized = weights.save for a quantized model
    assert _same_state(model, weights.load(tmp_path / "again"))
    with pytest.raises(QuantError, match="not quantized"):
        save_quantized(weights.load(CKPT), tmp_path / "float")


def test_a_quantized_checkpoint_is_not_quantized_again_differently(tmp_path):
    weights.save(weights.load(CKPT, quantize="int4", group_size=64), tmp_path / "q")
    for kw in ({"quantize": "int8"}, {"quantize": "int4", "group_size": 128}, {"quantize_vision": True}):
        with pytest.raises(QuantError, match="already quantized"):
            weights.load(tmp_path / "q", **kw)
    with pytest.raises(QuantError, match="quantized in torch.float32"):
        weights.load(tmp_path / "q", dtype="bfloat16")


def test_quantize_settings_are_checked(tmp_path):
    with pytest.raises(QuantError, match="int8 has one scale per output channel"):
        weights.load(CKPT, quantize="int8", group_size=64)
    with pytest.raises(QuantError, match="only apply when quantizing"):
        weights.load(CKPT, group_size=64)
    with pytest.raises(QuantError, match="int3"):
        weights.load(CKPT, quantize="int3")
    with pytest.raises(QuantError, match="True or False"):
        weights.load(CKPT, quantize="int8", quantize_vision="yes")
    with pytest.raises(QuantError, match="group"):
        weights.load(CKPT, quantize="int4", group_size=48)


def _rewrite(folder, edit) -> None:
    """Rewrite folder/model.safetensors with edit(tensors) applied."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


LAYER = "model.language_model.layers.0.self_attn.o_proj"


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.update({LAYER + ".qweight": t[LAYER + ".qweight"].to(torch.int16)}), "stored as I16"),
    (lambda t: t.update({LAYER + ".qweight": t[LAYER + ".qweight"].float()}), "stored as F32"),
    (lambda t: t.update({LAYER + ".scales": t[LAYER + ".scales"].to(torch.bfloat16)}), "stored as BF16"),
    (lambda t: t.update({LAYER + ".scales": t[LAYER + ".scales"][:, :1].contiguous()}), "has shape"),
    (lambda t: t.update({LAYER + ".qweight": t[LAYER + ".qweight"][:, :-1].contiguous()}), "has shape"),
    (lambda t: t.pop(LAYER + ".zeros"), "not in"),
    (lambda t: t.update({LAYER + ".weight": torch.zeros(128, 128)}), "not a parameter"),
])
def test_bad_quantized_checkpoints_fail_clearly(edit, match, tmp_path):
    weights.save(weights.load(CKPT, quantize="int4", group_size=64), tmp_path / "q")
    _rewrite(tmp_path / "q", edit)
    with pytest.raises(CheckpointError, match=match) as e:
        weights.load(tmp_path / "q")
    if match != "not in":
        assert LAYER in str(e.value) and "model.safetensors" in str(e.value)  # the tensor and the file named


@pytest.mark.parametrize("change,match", [
    ({"scheme": "int3"}, "int3"), ({"quant_method": "gptq"}, "another tool"), ({"group_size": 48}, "group_size|48"),
    ({"scale_dtype": "int8"}, "not a compute dtype"), ({"format_version": 2}, "format_version"),
])
def test_unknown_quantization_config_fails_clearly(change, match, tmp_path):
    weights.save(weights.load(CKPT, quantize="int4", group_size=64), tmp_path / "q")
    path = tmp_path / "q" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["quantization_config"].update(change)
    path.write_text(json.dumps(cfg))
    with pytest.raises(QuantError, match=match) as e:
        weights.load(tmp_path / "q")
    assert "config.json" in str(e.value)


def test_from_pretrained_quantizes_while_loading(tmp_path):
    pytest.importorskip("minglm4v.auto", reason="Glm4vForConditionalGeneration.from_pretrained lives in auto.py")
    from minglm4v.model import Glm4vForConditionalGeneration

    want = weights.load(CKPT, quantize="int4", group_size=64)
    got = Glm4vForConditionalGeneration.from_pretrained(CKPT, dtype="auto", quantize="int4", group_size=64)
    assert _same_state(want, got)
    weights.save(got, tmp_path / "q")
    assert _same_state(want, Glm4vForConditionalGeneration.from_pretrained(tmp_path / "q"))
    with pytest.raises(QuantError, match="already quantized"):
        Glm4vForConditionalGeneration.from_pretrained(tmp_path / "q", quantize="int8")


@pytest.mark.parametrize("scheme,dtype", [("int8", torch.float32), ("int4", torch.bfloat16)])
def test_generate_static_and_compiled_step_on_a_quantized_model(scheme, dtype):
    model = weights.load(CKPT, dtype=dtype, quantize=scheme, group_size=_group(scheme, 128))
    proc = load_processor(CKPT)
    e = tinyvqa.examples(TEST_SEED, 1, ["colour"])[0]
    inputs = proc.apply_chat_template([e.conversation()])
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=[383], pad_token_id=0)
    eager = generate(model, **inputs, **kw)
    assert generate_static(model, **inputs, **kw).tolist() == eager.tolist()
    torch._dynamo.reset()
    step = torch.compile(decode_step, fullgraph=True, backend="eager")
    assert generate_static(model, **inputs, step_fn=step, **kw).tolist() == eager.tolist()


# ---------------------------------------------------------------------- quality


def test_held_out_accuracy_fp32_bf16_int8_int4():
    """The 350 held-out TinyVQA questions (50 per kind, video included): int8 within 0.5 points of fp32, int4
    (groups of 128) within 3 points."""
    proc = load_processor(CKPT)
    kinds = tinyvqa.IMAGE_KINDS + tinyvqa.VIDEO_KINDS
    exs = tinyvqa.examples(TEST_SEED, 50 * len(kinds), kinds)
    acc = {}
    for name, dtype, scheme in (("fp32", torch.float32, None), ("bf16", torch.bfloat16, None),
                                ("int8", torch.float32, "int8"), ("int4", torch.float32, "int4")):
        model = weights.load(CKPT, dtype=dtype)
        if scheme:
            quantize_model(model, scheme, 128)
        acc[name] = tinyvqa_eval.accuracy(model, proc, exs)["all"]
    assert len(exs) == 350
    assert acc["int8"] >= acc["fp32"] - 0.005, acc
    assert acc["int4"] >= acc["fp32"] - 0.03, acc


def test_int4_int8_error_on_a_9b_width_layer():
    """y = W x on a random 4096 -> 4096 layer: int8 well under 1 %, int4 grows with the group size."""
    lin = _layer(4096, 4096, torch.bfloat16, bias=False, seed=8)
    x = torch.randn(4, 4096, generator=gen(9)).to(torch.bfloat16)
    y = lin(x).float()
    err = {}
    for scheme, G in (("int8", 128), ("int4", 32), ("int4", 64), ("int4", 128)):
        err[scheme, G] = ((QuantLinear.from_linear(lin, scheme, G)(x).float() - y).norm() / y.norm()).item()
    assert err["int8", 128] < 0.01
    assert err["int4", 32] < err["int4", 64] < err["int4", 128] < 0.12, err


def test_int8_without_a_kernel_factors_the_scale_out():
    """The GPU's int8 path, (x q^T) * s, run here on the CPU against the reference."""
    q = QuantLinear.from_linear(_layer(256, 64, torch.bfloat16, bias=False), "int8")
    x = torch.randn(3, 256, generator=gen(10)).to(torch.bfloat16)
    got, ref = int8_mm_factored(x, q.qweight, q.scales).float(), q.reference(x).float()
    assert got.shape == (3, 64)
    assert (got - ref).norm() / ref.norm() <= 4 * torch.finfo(torch.bfloat16).eps


def test_int4_kernel_is_chosen_only_where_it_exists():
    assert int4_layout(torch.device("cpu"), torch.bfloat16, 128, 256) == "cpu"
    assert int4_layout(torch.device("cpu"), torch.bfloat16, 100, 256) is None  # N not a multiple of 64
    q = QuantLinear.from_linear(_layer(128, 100, torch.float32), "int4", 32)
    assert q.layout == "rows" and q(torch.zeros(1, 128)).shape == (1, 100)  # the reference path
