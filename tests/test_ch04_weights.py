"""Chapter 04: loading and saving checkpoints (minglm4v/weights.py).

Strict (unknown / missing / mis-shaped tensors and missing files are errors naming tensor and file), counted,
dtype-aware, sharded, and the 9B layout checked on the meta device against docs/glm41v.md (§4.1, §5.1).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import types
from pathlib import Path

import oracle
import pytest
import torch

import minglm4v
from minglm4v import glm41v_9b, tiny
from minglm4v.checkpoint import iter_checkpoint, read_checkpoint
from minglm4v.devices import resolve_device, resolve_device_map
from minglm4v.errors import CheckpointError, CheckpointNotFoundError, ConfigError, DeviceError
from minglm4v.hub import is_hub_id
from minglm4v.weights import build, parse_size, save


def expected_9b_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the published 9B checkpoint, written out from the tables of docs/glm41v.md §4.1 and §5.1."""
    s = {"model.visual.patch_embed.proj.weight": (1536, 3, 2, 14, 14), "model.visual.patch_embed.proj.bias": (1536,),
         "model.visual.post_conv_layernorm.weight": (1536,),
         "model.visual.embeddings.position_embedding.weight": (576, 1536),
         "model.visual.post_layernorm.weight": (1536,), "model.visual.downsample.weight": (4096, 1536, 2, 2),
         "model.visual.downsample.bias": (4096,), "model.visual.merger.proj.weight": (4096, 4096),
         "model.visual.merger.post_projection_norm.weight": (4096,),
         "model.visual.merger.post_projection_norm.bias": (4096,),
         "model.visual.merger.gate_proj.weight": (13696, 4096), "model.visual.merger.up_proj.weight": (13696, 4096),
         "model.visual.merger.down_proj.weight": (4096, 13696),
         "model.language_model.embed_tokens.weight": (151552, 4096), "model.language_model.norm.weight": (4096,),
         "lm_head.weight": (151552, 4096)}
    for i in range(24):
        b = f"model.visual.blocks.{i}."
        s.update({b + "norm1.weight": (1536,), b + "norm2.weight": (1536,), b + "attn.qkv.weight": (4608, 1536),
                  b + "attn.proj.weight": (1536, 1536), b + "mlp.gate_proj.weight": (4096, 1536),
                  b + "mlp.up_proj.weight": (4096, 1536), b + "mlp.down_proj.weight": (1536, 4096)})
    for i in range(40):
        b = f"model.language_model.layers.{i}."
        for norm in ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm"):
            s[b + norm + ".weight"] = (4096,)
        s.update({b + "self_attn.q_proj.weight": (4096, 4096), b + "self_attn.q_proj.bias": (4096,),
                  b + "self_attn.k_proj.weight": (256, 4096), b + "self_attn.k_proj.bias": (256,),
                  b + "self_attn.v_proj.weight": (256, 4096), b + "self_attn.v_proj.bias": (256,),
                  b + "self_attn.o_proj.weight": (4096, 4096), b + "mlp.gate_up_proj.weight": (27392, 4096),
                  b + "mlp.down_proj.weight": (4096, 13696)})
    return s


def test_9b_on_meta_has_the_checkpoint_names_shapes_and_count():
    model = build(glm41v_9b(), "meta")
    sd = model.state_dict()
    assert all(t.is_meta for t in sd.values())  # nothing allocated
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected_9b_shapes()
    assert sum(p.numel() for p in model.parameters()) == 10_292_777_472
    assert sum(p.numel() for p in model.model.visual.parameters()) == 892_498_432
    assert sum(p.numel() for p in model.model.language_model.parameters()) == 8_779_522_048
    assert len(list(model.buffers())) == 0  # no persistent (or meta-stranded) buffers
    assert model.visual is model.model.visual and model.config == glm41v_9b()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, hf): the tiny oracle saved in float32 with save_pretrained."""
    folder = tmp_path_factory.mktemp("ckpt")
    return folder, oracle.save_oracle(tiny(), folder, seed=5)


def test_load_counts_every_tensor(saved):
    folder, hf = saved
    model = minglm4v.load(folder)
    r = model.load_report
    assert r.files == ("model.safetensors",) and r.dtype == torch.float32
    assert r.tensors == len(hf.state_dict()) == len(model.state_dict())
    assert r.parameters == sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in model.parameters())
    for name, t in hf.state_dict().items():
        assert torch.equal(model.state_dict()[name], t), name
    assert not model.training and model.config == tiny()


def test_bf16_stays_bf16_unless_asked(tmp_path):
    import transformers

    hf = oracle.save_oracle(tiny(), tmp_path, seed=6, dtype=torch.bfloat16)
    model = minglm4v.load(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and model.load_report.dtype == torch.bfloat16
    assert torch.equal(model.lm_head.weight, hf.lm_head.weight)
    as32 = minglm4v.load(tmp_path, dtype=torch.float32)
    assert {p.dtype for p in as32.parameters()} == {torch.float32}
    assert torch.equal(as32.lm_head.weight, hf.lm_head.weight.float())
    # the in-memory oracle was cast with .to(bfloat16), which also rounds its rotary inv_freq buffer to bf16;
    # transformers' own bf16 loading keeps inv_freq in float32, as we do, so compare with that
    theirs = transformers.Glm4vForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ids = torch.randint(20, 1000, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert model(ids).dtype == torch.bfloat16
        oracle.assert_close(model(ids).float(), theirs(input_ids=ids).logits.float(), atol=0, what="bf16 logits")


def _copy(saved, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved[0], folder)
    return folder, folder / "model.safetensors"


def test_unknown_tensor_is_an_error(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    oracle.edit_tensors(folder, lambda sd: sd.__setitem__("model.language_model.layers.0.self_attn.o_proj.bias",
                                                          torch.zeros(64)))
    with pytest.raises(CheckpointError, match=r"o_proj\.bias.*model\.safetensors.*not a parameter"):
        minglm4v.load(folder)


def test_missing_tensor_is_an_error(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    oracle.edit_tensors(folder, lambda sd: sd.pop("model.language_model.layers.1.post_mlp_layernorm.weight"))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\).*layers\.1\.post_mlp_layernorm\.weight"):
        minglm4v.load(folder)


def test_wrong_shape_is_an_error(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    oracle.edit_tensors(folder, lambda sd: sd.__setitem__("lm_head.weight", sd["lm_head.weight"][:999].contiguous()))
    with pytest.raises(CheckpointError, match=r"lm_head\.weight.*shape \[999, 64\].*\[1000, 64\]"):
        minglm4v.load(folder)


def test_mixed_dtypes_need_an_explicit_dtype(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    oracle.edit_tensors(folder, lambda sd: sd.__setitem__("lm_head.weight", sd["lm_head.weight"].bfloat16()))
    with pytest.raises(CheckpointError, match="mixes dtypes"):
        minglm4v.load(folder)
    assert minglm4v.load(folder, dtype=torch.float32).lm_head.weight.dtype == torch.float32


def test_missing_files_are_errors(saved, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        minglm4v.load(tmp_path / "nowhere")
    folder, file = _copy(saved, tmp_path)
    file.unlink()
    with pytest.raises(CheckpointNotFoundError, match="neither model.safetensors nor"):
        minglm4v.load(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        minglm4v.load(folder)


def test_config_that_does_not_fit_the_weights(saved, tmp_path):
    folder, _ = _copy(saved, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 96
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate_up|down)_proj\.weight.*expects"):
        minglm4v.load(folder)
    cfg["text_config"]["no_such_field"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="no_such_field"):
        minglm4v.load(folder)


def test_sharded_checkpoint_strictness(tmp_path):
    folder = tmp_path / "sharded"
    oracle.save_oracle(tiny(), folder, seed=8, max_shard_size="300KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    model = minglm4v.load(folder)
    assert model.load_report.files == tuple(shards) and model.load_report.tensors == len(index["weight_map"])
    # the index points a tensor at the wrong shard
    name, first = next(iter(index["weight_map"].items()))
    other = next(s for s in shards if s != first)
    bad = {**index, "weight_map": {**index["weight_map"], name: other}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(bad))
    with pytest.raises(CheckpointError, match=f"{name}"):
        minglm4v.load(folder)
    # a shard is missing
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / shards[-1]).unlink()
    with pytest.raises(CheckpointNotFoundError, match=shards[-1]):
        minglm4v.load(folder)


@pytest.mark.parametrize("max_shard_size", ["5GB", 250_000])
def test_save_round_trip_ours_and_transformers(saved, tmp_path, max_shard_size):
    import transformers

    _, hf = saved
    ours = minglm4v.load(saved[0])
    written = save(ours, tmp_path, max_shard_size=max_shard_size)
    names = sorted(p.name for p in written)
    if max_shard_size == "5GB":
        assert names == ["config.json", "model.safetensors"]
    else:
        n = len(names) - 2
        assert n > 1 and names == ["config.json"] + [f"model-{k:05d}-of-{n:05d}.safetensors" for k in
                                                     range(1, n + 1)] + ["model.safetensors.index.json"]
        index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
        assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in ours.state_dict().values())
    again = minglm4v.load(tmp_path)
    assert again.config == ours.config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())
    theirs = transformers.Glm4vForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids = torch.randint(20, 1000, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        oracle.assert_close(theirs(input_ids=ids).logits, hf(input_ids=ids).logits, atol=0, what="reloaded by HF")


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2MiB") == 2 * 2**20 and parse_size(123) == 123
    with pytest.raises(CheckpointError, match="max_shard_size"):
        parse_size("five gigs")


# ---------------------------------------------------------------------- dtype, device and device_map

def test_dtype_auto_keeps_the_stored_dtype_and_names_work(tmp_path):
    oracle.save_oracle(tiny(), tmp_path, seed=9, dtype=torch.bfloat16)
    for dtype in ("auto", None):
        assert minglm4v.load(tmp_path, dtype=dtype).load_report.dtype == torch.bfloat16
    for dtype in (torch.float16, "float16", "torch.float16"):
        model = minglm4v.load(tmp_path, dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {torch.float16}
    with pytest.raises(CheckpointError, match="'auto'"):
        minglm4v.load(tmp_path, dtype="float64")


def _pretend_gpus(monkeypatch, cuda: int = 0, mps: bool = False):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, want", [(2, True, "cuda:0"), (0, True, "mps"), (0, False, "cpu")])
def test_device_auto_picks_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, want):
    _pretend_gpus(monkeypatch, cuda, mps)
    assert resolve_device("auto") == torch.device(want) == resolve_device_map("auto")


def test_device_auto_loads_here(saved):
    want = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert minglm4v.load(saved[0], device="auto").lm_head.weight.device.type == want


@pytest.mark.parametrize("device_map, want", [(None, "cpu"), ("cpu", "cpu"), (torch.device("cpu"), "cpu"),
                                              (0, "cuda:0"), ("cuda:1", "cuda:1"), ({"": 1}, "cuda:1"),
                                              ({"model.visual": "cuda:0", "model.language_model": 0,
                                                "lm_head": torch.device("cuda", 0)}, "cuda:0"),
                                              ({"model.visual": "cuda", "lm_head": "cuda:0"}, "cuda")])
def test_device_map_naming_one_device(monkeypatch, device_map, want):
    _pretend_gpus(monkeypatch, cuda=2)
    assert resolve_device_map(device_map) == torch.device(want)


@pytest.mark.parametrize("device_map, message", [
    ({"model.visual": 0, "model.language_model": 1}, "spreads the model over 2 devices"),
    ({"model.visual": "cpu", "lm_head": "cuda:0"}, "spreads the model over 2 devices"),
    ({"model.language_model": "disk"}, "'disk'"),
    ({}, "names no device"),
    ("balanced", "several GPUs"),
    ("cuda:7", "this machine has 2 GPU(s)"),
    ("gpu0", "not a torch device"),
    (True, "not a torch device"),
])
def test_device_maps_this_library_cannot_honour(monkeypatch, device_map, message):
    _pretend_gpus(monkeypatch, cuda=2)
    with pytest.raises(DeviceError, match=re.escape(message)):
        resolve_device_map(device_map)


# ---------------------------------------------------------------------- Hub ids through the local cache

def _cache_entry(cache, repo: str, src, commit: str = "0123abcd") -> None:
    """The layout huggingface_hub writes: blobs named by hash, snapshot files linking to them, refs/main."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for i, f in enumerate(sorted(src.iterdir())):
        shutil.copy(f, root / "blobs" / f"blob{i}")
        (root / "snapshots" / commit / f.name).symlink_to(f"../../blobs/blob{i}")


def test_hub_id_resolves_through_the_local_cache(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _cache_entry(tmp_path / "cache", "zai-org/tiny-test", saved[0])
    model = minglm4v.load("zai-org/tiny-test")
    assert model.load_report.folder == tmp_path / "cache" / "models--zai-org--tiny-test" / "snapshots" / "0123abcd"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved[1].state_dict().items())
    # a local folder of that name wins, as in transformers
    shutil.copytree(saved[0], tmp_path / "zai-org" / "tiny-test")
    assert minglm4v.load("zai-org/tiny-test").load_report.folder == Path("zai-org/tiny-test")


def test_hub_id_not_in_the_cache_says_how_to_download_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo, cache_dir: calls.append((repo, cache_dir)) or str(tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(CheckpointNotFoundError, match=r"hf download zai-org/GLM-4.1V-9B-Thinking.*allow_download"):
        minglm4v.load("zai-org/GLM-4.1V-9B-Thinking")
    assert calls == []
    with pytest.raises(CheckpointNotFoundError, match="nowhere"):  # opted in: downloaded (here: a fake folder)
        minglm4v.load("zai-org/GLM-4.1V-9B-Thinking", allow_download=True)
    assert calls == [("zai-org/GLM-4.1V-9B-Thinking", str(tmp_path / "cache"))]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(CheckpointNotFoundError, match="pip install huggingface_hub"):
        minglm4v.load("zai-org/GLM-4.1V-9B-Thinking", allow_download=True)


@pytest.mark.parametrize("value, hub_id", [("zai-org/GLM-4.1V-9B-Thinking", True), ("THUDM/glm_4.1v", True),
                                           ("a/b/c", False), ("/abs/path", False), ("./x/y", False),
                                           ("../x", False), ("x--y/z", False), ("owner/", False), ("name", False)])
def test_what_looks_like_a_hub_id(value, hub_id):
    assert is_hub_id(value) is hub_id


def test_an_incomplete_snapshot_is_named(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _cache_entry(tmp_path / "cache", "me/tiny", saved[0])
    (tmp_path / "cache" / "models--me--tiny" / "snapshots" / "0123abcd" / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="incomplete snapshots.*0123abcd"):
        minglm4v.load("me/tiny")


# ---------------------------------------------------------------------- the tensor stream and progress

def test_iter_checkpoint_streams_every_tensor_once_in_file_order(tmp_path):
    from safetensors.torch import load_file

    hf = oracle.save_oracle(tiny(), tmp_path, seed=4, dtype=torch.bfloat16, max_shard_size="300KB")
    ckpt = read_checkpoint(tmp_path)
    seen = list(iter_checkpoint(tmp_path, dtype=torch.float32, mmap=False))
    assert [n for n, _ in seen] == [n for h in ckpt.headers for n in h.tensors]
    assert sorted(n for n, _ in seen) == sorted(hf.state_dict())
    stored = {k: v for f in ckpt.files for k, v in load_file(f).items()}
    for name, t in seen:
        assert t.dtype == torch.float32 and torch.equal(t, stored[name].float()), name


def test_iter_checkpoint_checks_at_the_call_not_at_the_first_tensor(saved, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        iter_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="floating"):
        iter_checkpoint(saved[0], dtype=torch.int8)
    with pytest.raises(DeviceError, match="not a torch device"):
        iter_checkpoint(saved[0], device="gpu0")


def test_iter_checkpoint_passes_integer_tensors_through(tmp_path):
    from safetensors.torch import save_file

    q = torch.randint(-128, 128, (8, 16), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    scale = torch.rand(8, generator=torch.Generator().manual_seed(1))
    save_file({"w.qweight": q, "w.scale": scale}, tmp_path / "model.safetensors")
    for mmap in (True, False):
        got = dict(iter_checkpoint(tmp_path, dtype=torch.bfloat16, mmap=mmap))
        assert got["w.qweight"].dtype == torch.int8 and torch.equal(got["w.qweight"], q)
        assert got["w.scale"].dtype == torch.bfloat16 and torch.equal(got["w.scale"], scale.bfloat16())


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("progress, terminal, lines", [(None, True, True), (None, False, False),
                                                        (True, False, True), (False, True, False)])
def test_progress_one_line_per_shard_only_on_a_terminal(tmp_path, monkeypatch, progress, terminal, lines):
    oracle.save_oracle(tiny(), tmp_path, seed=4, max_shard_size="300KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    minglm4v.load(tmp_path, progress=progress)
    out = err.getvalue().splitlines()
    if lines:
        assert len(out) == len(shards) > 1
        assert all(f"shard {k}/{len(shards)} {s}" in line for k, (s, line) in enumerate(zip(shards, out), 1))
    else:
        assert out == []
