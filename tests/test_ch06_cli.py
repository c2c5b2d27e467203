"""Chapter 06: the command line streams an answer; user errors are one line and exit code 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from oracle import checkpoint_with_processor
from PIL import Image

import minglm4v
from minglm4v.processor import load_processor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_checkpoint, tiny_processor_dir):
    """A complete checkpoint folder: the oracle's weights and config plus the tiny processor files."""
    return checkpoint_with_processor(tmp_path_factory.mktemp("cli_model"), tiny_checkpoint[0], tiny_processor_dir)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "minglm4v", *args], capture_output=True, text=True, timeout=300,
                          env=None if env is None else {**os.environ, **env})


def test_generate_streams_the_greedy_answer(data_dir):
    # the trained checkpoint: a random model's ids may fall outside its tokenizer, which decoding refuses
    folder, scene = data_dir / "tiny-glm4v", data_dir / "scene.png"
    r = run("generate", "--image", str(scene), "--prompt", "What colour is the triangle?", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    model, proc = minglm4v.load(folder), load_processor(folder)
    inputs = proc.apply_chat_template([{"role": "user", "content": [
        {"type": "image", "image": str(scene)}, {"type": "text", "text": "What colour is the triangle?"}]}])
    out = model.generate(**inputs, max_new_tokens=12)
    assert r.stdout == proc.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True) + "\n"
    assert r.stdout == "yellow\n"


def one_line_error(r, *needles):
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_model_folder(tmp_path, image_path):
    one_line_error(run("generate", "--model", str(tmp_path / "nope"), "--image", str(image_path), "--prompt", "x"),
                   "not found", "--model")


def test_unreadable_image(model_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG but not really")
    one_line_error(run("generate", "--model", str(model_dir), "--image", str(bad), "--prompt", "x"),
                   "cannot read image", "bad.png")
    one_line_error(run("generate", "--model", str(model_dir), "--image", str(tmp_path / "missing.jpg"),
                       "--prompt", "x"), "missing.jpg")


def test_prompt_that_does_not_fit_the_context(model_dir):
    long_prompt = "cat " * 2500  # the tiny model's context is 2048 positions
    one_line_error(run("generate", "--model", str(model_dir), "--prompt", long_prompt, "--max-new-tokens", "4"),
                   "context")


def test_bad_sampling_option(model_dir):
    one_line_error(run("generate", "--model", str(model_dir), "--prompt", "x", "--sample", "--top-p", "0"), "top_p")
    one_line_error(run("generate", "--model", str(model_dir), "--prompt", "x", "--top-k", "5"), "--top-k", "--sample")
    one_line_error(run("generate", "--model", str(model_dir), "--prompt", "x", "--max-new-tokens", "0"),
                   "max_new_tokens")


def test_demo_draws_the_grid_and_the_trained_model_answers(tmp_path, capsys):
    from minglm4v.__main__ import main

    assert main(["demo", "--out", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    assert "image_grid_thw [[1, 22, 32]]" in out and "176 <|image|> placeholders" in out
    answers = [line.rsplit("-> ", 1)[1] for line in out.splitlines() if "-> " in line]
    assert answers == ["3", "yellow", "square", "left", "below", "no"]  # data/scene.png, worked out by eye


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout == f"minglm4v {minglm4v.__version__}\n", r


def test_text_that_is_not_utf8(model_dir):
    # argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)
    for flag in ("--prompt", "--system"):
        args = ["generate", "--model", str(model_dir), "--prompt", "x", "--system", "be brief"]
        args[args.index(flag) + 1] = b"caf\xe9 \xff?"
        r = subprocess.run([sys.executable, "-m", "minglm4v", *args], capture_output=True, text=True, timeout=300)
        one_line_error(r, flag, "UTF-8", "caf\\xe9")


def test_argparse_errors_are_one_line(model_dir):
    one_line_error(run("generate", "--model", str(model_dir)), "--prompt", "--help")
    one_line_error(run("generate", "--prompt", "x", "--max-new-tokens", "lots"), "--max-new-tokens", "lots")
    one_line_error(run("frobnicate"), "frobnicate")


def test_sampling_values_that_overflow(model_dir):
    for flags, needle in (
            (("--temperature", "1e-300"), "temperature"),
            (("--seed", str(2**70)), "seed"),
            (("--seed", "-1"), "seed")):
        one_line_error(run("generate", "--model", str(model_dir), "--prompt", "x", "--sample", "--max-new-tokens",
                           "2", *flags), needle)


def test_demo_out_names(tmp_path):
    one_line_error(run("demo", "--model", "", "--out", str(tmp_path / "grid.xyz")), "--out", ".xyz", ".png")
    assert not (tmp_path / "grid.xyz").exists()
    for given, written in ((tmp_path, tmp_path / "patch_grid.png"), (tmp_path / "noext", tmp_path / "noext.png"),
                           (tmp_path / "sub" / "g.jpg", tmp_path / "sub" / "g.jpg")):
        r = run("demo", "--model", "", "--out", str(given))
        assert r.returncode == 0, r.stderr
        assert f"wrote      {written}\n" in r.stdout
        assert written.is_file() and written.stat().st_size > 10_000


def test_train_writes_into_the_current_directory_and_never_overwrites(tmp_path):
    def train(*args):
        return subprocess.run([sys.executable, "-m", "minglm4v.train", "--steps", "1", "--batch-size", "2",
                               "--video-every", "0", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)

    r = train()
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "tiny-glm4v"
    assert minglm4v.load(folder).load_report.tensors > 0 and load_processor(folder).tokenizer.vocab_size > 0
    weights = (folder / "model.safetensors").read_bytes()
    one_line_error(train(), "--overwrite", "config.json", "model.safetensors")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.json").write_text("{}")
    one_line_error(train("--out", str(tmp_path / "elsewhere")), "--overwrite", "config.json")
    assert (folder / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["config.json"]


def test_model_as_file_url_or_hub_id(data_dir, tmp_path):
    r = run("generate", "--model", (data_dir / "tiny-glm4v").as_uri(), "--image", str(data_dir / "scene.png"),
            "--prompt", "How many shapes are there?", "--max-new-tokens", "4")
    assert (r.returncode, r.stdout) == (0, "3\n"), r.stderr
    empty_cache = {"HF_HUB_CACHE": str(tmp_path), "HF_HOME": str(tmp_path)}
    one_line_error(run("generate", "--model", "zai-org/GLM-4.1V-9B-Thinking", "--prompt", "x", env=empty_cache),
                   "zai-org/GLM-4.1V-9B-Thinking", "Hugging Face cache", "download")
