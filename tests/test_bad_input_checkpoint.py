"""Hostile checkpoints fail clearly, and saving never loses weights (issue 12: items 1, 2, 4 and 7, checkpoint side).

Every forged safetensors header, config.json and index below raises one minglm4v error naming the file (and the
tensor or field); nothing hangs, allocates what a header declares, or raises a raw TypeError/RecursionError. A save
that fails midway (an exception, a file-size limit) leaves the previous checkpoint byte for byte as it was.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import minglm4v
from minglm4v import checkpoint, safetensors_io, weights
from minglm4v.errors import CheckpointError, ConfigError, MinGlmError

ROOT = Path(__file__).resolve().parent.parent


def expect(fn, *needles, error=MinGlmError):
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, MinGlmError) and isinstance(info.value, (ValueError, FileNotFoundError))
    for n in needles:
        assert n in str(info.value), f"{n!r} not in {str(info.value)!r}"
    return str(info.value)


@pytest.fixture()
def ckpt(tmp_path, tiny_checkpoint):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint[0], folder)
    return folder


def raw_safetensors(path: Path, header, data: bytes) -> Path:
    """A safetensors file from a header (a dict, or the JSON text itself) and the data bytes, as the format lays
    them out: 8-byte little-endian length, header, data."""
    text = header if isinstance(header, (str, bytes)) else json.dumps(header)
    raw = text.encode() if isinstance(text, str) else text
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def f32(name="a", shape=(4,), offsets=(0, 16), dtype="F32"):
    return {name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


# ---------------------------------------------------------------------- the header, checked as the format says

def test_our_reader_agrees_with_the_safetensors_library(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(3, 5, generator=g), "b": torch.randn(7, generator=g).bfloat16(),
               "i": torch.arange(6, dtype=torch.int8).view(2, 3), "e": torch.zeros(0, 4)}
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt"})
    h = safetensors_io.read_header(tmp_path / "x.safetensors")
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert sorted(h.tensors) == sorted(f.keys()) and h.metadata == f.metadata() == {"format": "pt"}
        for name in f.keys():
            assert h.tensors[name]["shape"] == list(f.get_slice(name).get_shape())
    offsets = [tuple(i["data_offsets"]) for i in h.tensors.values()]
    assert offsets == sorted(offsets) and offsets[0][0] == 0  # file order


HEADERS = {  # case: (header, data bytes, what the message must name besides the file)
    "overlapping ranges": ({**f32("a", (4,), (0, 16)), **f32("b", (4,), (8, 24))}, 24, ["'b'", "overlaps"]),
    "a gap between tensors": ({**f32("a", (4,), (0, 16)), **f32("b", (4,), (20, 36))}, 36, ["'b'", "unused"]),
    "end before begin": (f32("a", (4,), (16, 0)), 16, ["'a'", "data_offsets"]),
    "offsets past the file": (f32("a", (400,), (0, 1600)), 16, ["'a'", "do not fit"]),
    "shape x dtype != bytes": (f32("a", (5,), (0, 16)), 16, ["'a'", "do not fit"]),
    "float shape": (f32("a", (4.0,), (0, 16)), 16, ["'a'", "shape"]),
    "negative shape": (f32("a", (-4,), (0, 16)), 16, ["'a'", "shape"]),
    "bool in shape": (f32("a", (True,), (0, 4)), 4, ["'a'", "shape"]),
    "string offsets": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, 16, ["'a'", "offsets"]),
    "three offsets": ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, 16, ["'a'", "offsets"]),
    "unknown dtype": (f32("a", dtype="F99"), 16, ["'a'", "F99"]),
    "dtype not a string": (f32("a", dtype=["F32"]), 16, ["'a'", "dtype"]),
    "extra key in an entry": ({"a": {**f32()["a"], "offset": 0}}, 16, ["'a'", "exactly"]),
    "entry not an object": ({"a": [1, 2]}, 16, ["'a'"]),
    "bytes after the last tensor": (f32(), 20, ["cover 16", "20"]),
    "__metadata__ not str -> str": ({**f32(), "__metadata__": {"format": 1}}, 16, ["__metadata__"]),
    "header is a list": ("[1, 2]", 0, ["not a JSON object"]),
    "duplicate tensor names": ('{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
                               '"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', 16, ["'a'", "twice"]),
    "deeply nested": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", 0, ["nests"]),
    "not UTF-8": (b'{"\xff": 1}', 0, ["UTF-8"]),
    "not JSON": ("{oops", 0, ["not valid JSON"]),
}


@pytest.mark.parametrize("case", list(HEADERS))
def test_forged_headers_are_refused_with_file_and_tensor_named(ckpt, case):
    header, nbytes, needles = HEADERS[case]
    raw_safetensors(ckpt / "model.safetensors", header, bytes(nbytes))
    expect(lambda: minglm4v.load(ckpt), "model.safetensors", *needles, error=CheckpointError)


def test_a_huge_declared_header_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "model.safetensors"
    with open(path, "wb") as fh:  # a sparse 200 MB file whose header claims 150 MB: nothing may be allocated for it
        fh.write(struct.pack("<Q", 150_000_000))
        fh.truncate(200_000_000)
    expect(lambda: safetensors_io.read_header(path), "model.safetensors", "150,000,000", error=CheckpointError)
    path.write_bytes(struct.pack("<Q", 12 * 10**9) + b"{}")  # 12 GB declared in a 10-byte file
    expect(lambda: safetensors_io.read_header(path), "not a safetensors file", error=CheckpointError)


def test_integer_tensors_are_read_as_stored_but_are_not_model_weights(ckpt):
    edit = {"lm_head.weight": torch.zeros(1000, 64, dtype=torch.int8)}
    from oracle import edit_tensors

    edit_tensors(ckpt, lambda t: t.update(edit))
    expect(lambda: minglm4v.load(ckpt, dtype="float32"), "lm_head.weight", "I8", "floating point")


# ---------------------------------------------------------------------- config.json and the index

CONFIGS = {  # case: (edit of the parsed config.json or raw bytes, needles)
    "not UTF-8": (b'{"model_type": "glm4v\xff"}', ["UTF-8"]),
    "nested 100 deep": (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", ["nested"]),
    "duplicate key": (b'{"model_type": "glm4v", "model_type": "glm4v"}', ["twice"]),
    "top level a list": (b"[1]", ["JSON object"]),
    "bool for a width": (lambda d: d["text_config"].__setitem__("hidden_size", True), ["text_config.hidden_size"]),
    "string for a float": (lambda d: d["text_config"].__setitem__("rms_norm_eps", "1e-5"), ["rms_norm_eps"]),
    "fraction for an int": (lambda d: d["vision_config"].__setitem__("depth", 2.5), ["vision_config.depth",
                                                                                       "whole number"]),
    "string for a special id": (lambda d: d.__setitem__("image_token_id", "9"), ["config.image_token_id"]),
    "number for a flag": (lambda d: d.__setitem__("tie_word_embeddings", 0), ["tie_word_embeddings"]),
    "string eos ids": (lambda d: d["text_config"].__setitem__("eos_token_id", "01"), ["eos_token_id"]),
    "string in mrope_section": (lambda d: d["text_config"]["rope_parameters"].__setitem__("mrope_section", [2, 1, "1"]),
                                ["mrope_section"]),
    "list for vision_config": (lambda d: d.__setitem__("vision_config", []), ["vision_config"]),
    "string head_dim": (lambda d: d["text_config"].__setitem__("head_dim", "16"), ["head_dim"]),
    "number for quantization_config": (lambda d: d.__setitem__("quantization_config", 8), ["quantization_config"]),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_malformed_config_json_names_file_and_field(ckpt, case):
    edit, needles = CONFIGS[case]
    path = ckpt / "config.json"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        d = json.loads(path.read_text())
        edit(d)
        path.write_text(json.dumps(d))
    expect(lambda: minglm4v.load(ckpt), "config.json", *needles, error=ConfigError)


@pytest.fixture()
def sharded(tmp_path, tiny_config):
    import oracle

    folder = tmp_path / "sharded"
    oracle.save_oracle(tiny_config, folder, seed=2, max_shard_size="300KB")
    return folder


def _edit_index(folder: Path, edit) -> None:
    path = folder / checkpoint.INDEX
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


INDEXES = {
    "weight_map missing": (lambda d: d.pop("weight_map"), ["weight_map", "dict"]),
    "weight_map a list": (lambda d: d.__setitem__("weight_map", []), ["weight_map", "dict"]),
    "a shard name that is a number": (lambda d: d["weight_map"].__setitem__("lm_head.weight", 3),
                                      ["weight_map['lm_head.weight']", "str"]),
    "metadata a string": (lambda d: d.__setitem__("metadata", "x"), ["metadata"]),
    "total_size a string": (lambda d: d["metadata"].__setitem__("total_size", "1GB"), ["metadata.total_size"]),
}


@pytest.mark.parametrize("case", list(INDEXES))
def test_malformed_index_names_file_and_field(sharded, case):
    edit, needles = INDEXES[case]
    _edit_index(sharded, edit)
    expect(lambda: minglm4v.load(sharded), checkpoint.INDEX, *needles, error=CheckpointError)


@pytest.mark.parametrize("entry", ["../outside.safetensors", "/etc/hostname", "sub/../../outside.safetensors",
                                   "link.safetensors"])
def test_index_entries_outside_the_folder_are_refused_before_anything_is_opened(sharded, entry, monkeypatch):
    first = sorted(sharded.glob("model-*.safetensors"))[0]
    shutil.copy(first, sharded.parent / "outside.safetensors")
    (sharded / "link.safetensors").symlink_to(sharded.parent / "outside.safetensors")
    _edit_index(sharded, lambda d: d["weight_map"].update({k: entry for k, v in d["weight_map"].items()
                                                           if v == first.name}))
    opened = []
    monkeypatch.setattr(checkpoint, "read_header", lambda p: opened.append(p))
    expect(lambda: minglm4v.load(sharded), repr(entry), "inside" if entry != "link.safetensors" else "outside",
           error=CheckpointError)
    assert opened == []


def test_hugging_face_cache_links_into_blobs_are_allowed(sharded, tmp_path):
    """A cache snapshot's files are symlinks to ../../blobs: inside the repo, so they load."""
    repo = tmp_path / "cache" / "models--me--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for f in sharded.iterdir():
        shutil.copy(f, repo / "blobs" / f.name)
        (snap / f.name).symlink_to(Path("../../blobs") / f.name)
    ref = minglm4v.load(sharded)
    model = minglm4v.load(snap)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_the_loader_modules_never_unpickle():
    import inspect

    from minglm4v import atomic_save, hub

    for module in (weights, checkpoint, safetensors_io, hub, atomic_save):
        source = inspect.getsource(module)
        assert "torch.load" not in source and "pickle" not in source, module.__name__


# ---------------------------------------------------------------------- paths: local files stay local

@pytest.mark.parametrize("url", ["https://huggingface.co/zai-org/GLM-4.1V-9B-Thinking", "s3://bucket/ckpt",
                                 "hf://zai-org/GLM-4.1V-9B-Thinking", "data:application/octet-stream;base64,AAAA",
                                 "file://example.com/ckpt"])
def test_checkpoint_urls_are_refused(url, tmp_path):
    expect(lambda: minglm4v.load(url), "URL", error=CheckpointError)
    expect(lambda: weights.save(weights.build(minglm4v.tiny(), "cpu"), url), "URL", error=CheckpointError)


def test_file_urls_are_local_paths(tiny_checkpoint):
    folder = tiny_checkpoint[0]
    model = minglm4v.load(f"file://{folder}")
    assert model.load_report.folder == folder
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny_checkpoint[1].state_dict().items())


# ---------------------------------------------------------------------- saving never loses weights

def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def saved_with_extras(tmp_path, tiny_checkpoint):
    """A saved sharded checkpoint plus files no save of ours wrote."""
    folder = tmp_path / "out"
    weights.save(minglm4v.load(tiny_checkpoint[0]), folder, max_shard_size="300KB")
    save_file({"x": torch.ones(3)}, folder / "model_ema.safetensors")
    save_file({"x": torch.zeros(3)}, folder / "model-backup.safetensors")
    (folder / "notes.txt").write_text("mine\n")
    return folder


def _other_model(seed: int):
    model = weights.build(minglm4v.tiny(), "cpu")
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.normal_(generator=torch.Generator().manual_seed(seed + i))
    return model


def test_an_exception_midway_leaves_the_old_checkpoint(saved_with_extras, monkeypatch):
    folder = saved_with_extras
    before, ref = _bytes(folder), minglm4v.load(folder, mmap=False)
    calls = []

    def failing(tensors, path):
        calls.append(path.name)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        save_file(tensors, str(path))

    monkeypatch.setattr(weights, "_write_shard", failing)
    with pytest.raises(RuntimeError, match="injected"):
        weights.save(_other_model(1), folder, max_shard_size="300KB")
    assert len(calls) == 2 and _bytes(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(before)  # no temporary folder left behind
    again = minglm4v.load(folder)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.state_dict().items())


SAVE_UNDER_LIMIT = """
import resource, signal, sys
import torch
from minglm4v import tiny, weights
model = weights.build(tiny(), "cpu")
with torch.no_grad():
    for p in model.parameters():
        p.fill_(0.5)
# Python ignores SIGXFSZ, so the write fails with EFBIG and save reports it; with the signal's default action the
# process is killed mid-write instead
signal.signal(signal.SIGXFSZ, signal.SIG_IGN if sys.argv[2] == "ignore" else signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    weights.save(model, sys.argv[1])
except Exception as e:
    print(type(e).__name__, e)
"""


@pytest.mark.parametrize("signal_action", ["ignore", "kill"])
def test_a_file_size_limit_leaves_the_old_checkpoint(saved_with_extras, signal_action):
    folder = saved_with_extras
    before, ref = _bytes(folder), minglm4v.load(folder, mmap=False)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(SAVE_UNDER_LIMIT), str(folder), signal_action],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    if signal_action == "ignore":
        assert out.returncode == 0 and out.stdout.startswith("CheckpointError could not write"), out
        assert "unchanged" in out.stdout and "File too large" in out.stdout
        assert sorted(p.name for p in folder.iterdir()) == sorted(before)
    else:  # killed by SIGXFSZ mid-write: only the temporary folder is left over
        assert out.returncode == -signal.SIGXFSZ, out
        extra = sorted(set(p.name for p in folder.iterdir()) - set(before))
        assert len(extra) == 1 and extra[0].startswith(".minglm4v-save-")
    assert _bytes(folder) == before
    again = minglm4v.load(folder)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.state_dict().items())


def test_save_removes_only_what_the_previous_save_wrote(saved_with_extras):
    folder = saved_with_extras
    extras = {k: v for k, v in _bytes(folder).items() if k in ("model_ema.safetensors", "model-backup.safetensors",
                                                               "notes.txt")}
    model = _other_model(2)
    weights.save(model, folder)  # sharded -> single: the old shards and index go, nothing else
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["config.json", "model.safetensors", *extras])
    assert {k: v for k, v in _bytes(folder).items() if k in extras} == extras
    weights.save(model, folder, max_shard_size="300KB")  # single -> sharded: the old model.safetensors goes
    names = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" not in names and checkpoint.INDEX in names and set(extras) <= set(names)
    assert {k: v for k, v in _bytes(folder).items() if k in extras} == extras
    again = minglm4v.load(folder)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_save_refuses_an_index_it_cannot_trust(saved_with_extras):
    folder = saved_with_extras
    (folder.parent / "victim.safetensors").write_bytes(b"keep me")
    _edit_index(folder, lambda d: d["weight_map"].__setitem__("lm_head.weight", "../victim.safetensors"))
    before = _bytes(folder)
    expect(lambda: weights.save(_other_model(3), folder), "cannot save over", "victim", error=CheckpointError)
    assert _bytes(folder) == before and (folder.parent / "victim.safetensors").read_bytes() == b"keep me"


def test_save_into_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    expect(lambda: weights.save(_other_model(4), tmp_path / "f"), "is a file", error=CheckpointError)
    assert (tmp_path / "f").read_text() == "x"


def test_saving_over_the_files_a_mapped_model_reads_from(saved_with_extras):
    """New files replace the old names; the old inodes stay alive under the mapping, so no SIGBUS."""
    folder = saved_with_extras
    model = minglm4v.load(folder)  # parameters are views of the mapped shards
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    weights.save(model, folder)  # reads from the mapping while replacing the files it maps
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())
    again = minglm4v.load(folder)
    assert again.load_report.files == ("model.safetensors",)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ref.items())
