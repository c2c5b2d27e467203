"""Chapter 09: the static-cache decode path gives the eager path's tokens exactly and compiles whole; the loader
reads tensors into place (device check, staging, memory); the 9B checkpoint is found, or the reason why not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import oracle
import pytest
import torch
from test_ch06_generation import CASES  # the same prompts as chapter 06

import minglm4v
from minglm4v import checkpoint, glm41v_9b, hub, safetensors_io, tiny, weights
from minglm4v.cache import kv_bytes_per_token
from minglm4v.errors import CheckpointError, CheckpointNotFoundError, DeviceError
from minglm4v.fast import StaticKVCache, decode_step, generate_static, timed_generate
from minglm4v.generation import generate
from minglm4v.mrope import inv_freq
from minglm4v.processor import load_processor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tiny_processor_dir):
    folder, _ = tiny_checkpoint
    return minglm4v.load(folder), load_processor(tiny_processor_dir)


PROMPTS = {"padded_batch" if k == "text_batch" else k: v for k, v in CASES.items()}  # test_ch06_generation's prompts
SETTINGS = {
    "greedy_no_stop": dict(eos_token_id=[999], pad_token_id=0),
    "greedy_stops": dict(eos_token_id=[0, 1], pad_token_id=0),
    "sampled": dict(do_sample=True, temperature=1.3, top_k=40, top_p=0.9, seed=7, eos_token_id=[999]),
    "penalty": dict(repetition_penalty=1.5, eos_token_id=[999], pad_token_id=0),
}


@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_static_cache_tokens_equal_eager(setup, prompt, setting):
    model, proc = setup
    inputs = proc.apply_chat_template(PROMPTS[prompt])
    kw = dict(max_new_tokens=40, **SETTINGS[setting])
    eager = generate(model, **inputs, **kw)
    for sync_every in (1, 16):  # checking for stops every step or every 16 steps gives the same result
        assert generate_static(model, **inputs, sync_every=sync_every, **kw).tolist() == eager.tolist()


def test_stops_early_like_eager(setup):
    model, proc = setup
    inputs = proc.apply_chat_template(PROMPTS["text"])
    eager = generate(model, **inputs, max_new_tokens=40, eos_token_id=[999], pad_token_id=0)
    stop = int(eager[0, inputs["input_ids"].shape[1] + 5])  # the 6th new token becomes a stop id
    kw = dict(max_new_tokens=40, eos_token_id=[stop], pad_token_id=0)
    want = generate(model, **inputs, **kw)
    got = generate_static(model, **inputs, sync_every=16, **kw)
    assert got.tolist() == want.tolist() and want.shape[1] <= inputs["input_ids"].shape[1] + 6


def test_decode_step_compiles_whole_and_keeps_its_buffers(setup):
    """fullgraph=True fails on any graph break, e.g. a `bool(tensor)` or `.item()` (a host sync) in the step."""
    model, proc = setup
    inputs = proc.apply_chat_template(PROMPTS["padded_batch"])
    kw = dict(max_new_tokens=12, eos_token_id=[999], pad_token_id=0)
    torch._dynamo.reset()
    step = torch.compile(decode_step, fullgraph=True, backend="eager")
    assert generate_static(model, **inputs, step_fn=step, **kw).tolist() == generate(model, **inputs, **kw).tolist()

    cfg = model.config.text_config
    cache = StaticKVCache(cfg.num_hidden_layers, 2, cfg.num_key_value_heads, cfg.head_dim, 8, model.dtype)
    cache.length, cache.decoding = 3, True
    cache.slot.fill_(3)
    cache.key_mask[:, :3] = True
    buffers = [t.data_ptr() for t in cache.keys + cache.values]
    inv = inv_freq(cfg).repeat_interleave(2)
    logits = decode_step(model, torch.tensor([5, 6]), torch.tensor([3, 3]), cache, inv)
    assert logits.shape == (2, cfg.vocab_size)
    assert [t.data_ptr() for t in cache.keys + cache.values] == buffers  # written in place, never reallocated
    assert int(cache.slot) == 4 and cache.key_mask[:, :4].all() and not cache.key_mask[:, 4:].any()


def test_timed_generate_reports_what_it_measured(setup):
    model, proc = setup
    inputs = proc.apply_chat_template(PROMPTS["image"])
    for static in (True, False):
        out, t = timed_generate(model, inputs, static=static, max_new_tokens=8, eos_token_id=[999])
        assert out.shape[1] == inputs["input_ids"].shape[1] + 8 and t.new_tokens == 8
        assert t.ttft_s > 0 and t.decode_tokens_per_s > 0 and t.peak_gpu_bytes is None


# ------------------------------------------------------------------------------------------------ loading

def test_memory_plan_of_the_9b_model():
    assert weights.weight_bytes(glm41v_9b()) == (10_292_777_472, 20_585_554_944)
    assert kv_bytes_per_token(glm41v_9b()) == 2 * 40 * 2 * 128 * 2 == 40_960


def test_cuda_without_a_gpu_is_a_clear_error(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA GPU, but torch sees none"):
        minglm4v.load(tiny_checkpoint[0], device="cuda")
    with pytest.raises(DeviceError, match="not a torch device"):
        minglm4v.load(tiny_checkpoint[0], device="gpu0")


def test_conversion_through_a_small_staging_buffer(tmp_path, monkeypatch):
    hf = oracle.save_oracle(tiny(), tmp_path, seed=3, dtype=torch.bfloat16, max_shard_size="200KB")
    monkeypatch.setattr(safetensors_io, "STAGING_BYTES", 4096)  # many slices per tensor
    model = minglm4v.load(tmp_path, dtype=torch.float32)
    assert len(model.load_report.files) > 1
    assert model.load_report.bytes_read == sum(t.numel() * 2 for t in hf.state_dict().values())
    for name, t in hf.state_dict().items():
        assert torch.equal(model.state_dict()[name], t.float()), name


def test_truncated_or_garbled_shard_is_an_error(tiny_checkpoint, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    src = tiny_checkpoint[0]
    (folder / "config.json").write_bytes((src / "config.json").read_bytes())
    data = (src / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="do not fit"):
        minglm4v.load(folder)
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        minglm4v.load(folder)


PEAK = """
import sys, torch
from minglm4v import tiny, weights
weights.build(tiny(), "meta")  # one-off costs of torch and the package (about 80 MB), not proportional to the weights
def status(key):  # VmRSS: now; VmHWM: peak of this process (ru_maxrss would include the parent's size at fork)
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
before = status("VmRSS")
model = weights.load(sys.argv[1], mmap=sys.argv[2] == "mmap")
at_load = status("VmHWM") - before
with torch.no_grad():  # touch every page of every weight, as a forward pass does
    sum(float(p.reshape(-1)[::1024].sum()) for p in model.parameters())
print(at_load, status("VmHWM") - before, model.load_report.bytes_read)
"""


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    """~103 MB of float32 in 3 shards: embeddings and lm_head of 200k x 64."""
    folder = tmp_path_factory.mktemp("big")
    model = weights.build(tiny(vocab_size=200_000), "cpu")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.normal_(generator=torch.Generator().manual_seed(i))  # real pages, not shared zeros
    weights.save(model, folder, max_shard_size="40MB")
    return folder


@pytest.mark.parametrize("how", ["mmap", "read"])
def test_loading_holds_the_weights_once(big_checkpoint, how):
    """Peak RSS of a fresh process that loads ~100 MB and touches every weight stays within 10% of the bytes."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(PEAK), str(big_checkpoint), how],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    at_load, touched, nbytes = map(int, out.stdout.split())
    assert nbytes > 100e6
    assert touched <= 1.10 * nbytes, f"RSS grew by {touched / 1e6:.0f} MB to load {nbytes / 1e6:.0f} MB"
    if how == "mmap":  # nothing is read until it is used
        assert at_load < 0.1 * nbytes
    else:
        assert at_load > 0.9 * nbytes


def test_mmap_weights_are_copy_on_write(big_checkpoint):
    model = minglm4v.load(big_checkpoint)
    shards = sorted(big_checkpoint.glob("model-*.safetensors"))
    before = [f.read_bytes() for f in shards]
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
        model.model.language_model.embed_tokens.weight.zero_()
    assert [f.read_bytes() for f in shards] == before  # the files never change
    again = minglm4v.load(big_checkpoint, mmap=False)
    assert torch.equal(again.lm_head.weight + 1.0, model.lm_head.weight)


# ------------------------------------------------------------------------------------------------ finding the 9B

def _fake_checkpoint(folder: Path, shards=("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / checkpoint.INDEX).write_text(json.dumps({"weight_map": {f"t{i}": s for i, s in enumerate(shards)}}))
    for s in shards:
        (folder / s).write_bytes(b"")
    return folder


def test_find_checkpoint_from_the_environment(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "glm")
    assert hub.find_checkpoint({"MINGLM4V_9B": str(ckpt)}) == (ckpt, "from $MINGLM4V_9B")
    assert hub.find_checkpoint({"GLM41V_PATH": str(ckpt)}) == (ckpt, "from $GLM41V_PATH")
    with pytest.raises(CheckpointNotFoundError, match="MINGLM4V_9B=.*does not exist"):
        hub.find_checkpoint({"MINGLM4V_9B": str(tmp_path / "nowhere")})
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002"):
        hub.find_checkpoint({"MINGLM4V_9B": str(ckpt)})


def test_find_checkpoint_in_the_hugging_face_cache(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    hub_dir = tmp_path / "hf" / "hub"
    assert hub.hub_cache(env) == hub_dir and hub.hub_cache({"HF_HUB_CACHE": "/x"}) == Path("/x")
    path, why = hub.find_checkpoint(env)
    assert path is None and "MINGLM4V_9B" in why and "MINGLM4V_DOWNLOAD=1" in why
    # an incomplete snapshot is reported, not used
    repo = hub_dir / "models--THUDM--GLM-4.1V-9B-Thinking"
    partial = _fake_checkpoint(repo / "snapshots" / "aaa")
    (partial / "model-00001-of-00002.safetensors").unlink()
    path, why = hub.find_checkpoint(env)
    assert path is None and "incomplete snapshots" in why and "model-00001-of-00002" in why
    # a complete one under the current name wins; refs/main picks among several snapshots
    repo = hub_dir / "models--zai-org--GLM-4.1V-9B-Thinking"
    _fake_checkpoint(repo / "snapshots" / "old")
    new = _fake_checkpoint(repo / "snapshots" / "new")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("new\n")
    assert hub.find_checkpoint(env) == (new, "from the Hugging Face cache (zai-org/GLM-4.1V-9B-Thinking)")


def test_download_only_when_asked(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo, cache_dir: calls.append((repo, cache_dir)) or str(tmp_path / "dl")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    env = {"HF_HUB_CACHE": str(tmp_path / "cache")}
    assert hub.find_checkpoint(env)[0] is None and calls == []
    path, why = hub.find_checkpoint({**env, "MINGLM4V_DOWNLOAD": "1"})
    assert calls == [("zai-org/GLM-4.1V-9B-Thinking", str(tmp_path / "cache"))]
    assert path == tmp_path / "dl" and why.startswith("downloaded")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(CheckpointNotFoundError, match="pip install huggingface_hub"):
        hub.find_checkpoint({**env, "MINGLM4V_DOWNLOAD": "1"})


def test_nothing_in_the_package_imports_huggingface_hub_at_module_level():
    for f in (ROOT / "minglm4v").glob("*.py"):
        for line in f.read_text().splitlines():
            if line.startswith(("import huggingface_hub", "from huggingface_hub")):
                raise AssertionError(f"{f.name}: {line}")
