"""Bad input fails clearly: every case raises a minglm4v error (catchable as MinGlmError and as ValueError or
FileNotFoundError) whose message names what was wrong, and never leaves a half-loaded model behind.

The cases are listed in tables; `test_the_suite_size` counts the collected cases (run with -s to see the number).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
import torch
from oracle import checkpoint_with_processor, edit_tensors, noise_photo
from PIL import Image

import minglm4v
from minglm4v.errors import MinGlmError
from minglm4v.patchify import load_image, num_image_tokens, preprocess
from minglm4v.processor import load_processor


def expect(fn, *needles, error=MinGlmError):
    """fn() must raise `error` (a MinGlmError) whose message holds every needle."""
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, MinGlmError), type(info.value)
    assert isinstance(info.value, (ValueError, FileNotFoundError)), type(info.value)
    message = str(info.value)
    for n in needles:
        assert n in message, f"{n!r} not in {message!r}"
    return message


# ---------------------------------------------------------------------- checkpoints

@pytest.fixture()
def ckpt(tmp_path, tiny_checkpoint):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint[0], folder)
    return folder


_edit_tensors = edit_tensors  # tests/oracle.py


def _old_layout(tensors):
    for k in list(tensors):
        if k.startswith("model.language_model."):
            tensors["model." + k[len("model.language_model."):]] = tensors.pop(k)
        elif k.startswith("model.visual."):
            tensors["visual." + k[len("model.visual."):]] = tensors.pop(k)


CHECKPOINT_CASES = {
    "missing config.json": (lambda f: (f / "config.json").unlink(), ["config.json"]),
    "impossible config": (lambda f: (f / "config.json").write_text(
        (f / "config.json").read_text().replace('"num_key_value_heads": 2', '"num_key_value_heads": 3')),
        ["config.json", "num_key_value_heads=3"]),
    "config not JSON": (lambda f: (f / "config.json").write_text("{oops"), ["config.json", "not valid JSON"]),
    "truncated safetensors": (lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:5000]), ["model.safetensors"]),
    "corrupt safetensors header": (lambda f: (f / "model.safetensors").write_bytes(
        b"\xff" * 64 + (f / "model.safetensors").read_bytes()[64:]), ["model.safetensors"]),
    "no weights file": (lambda f: (f / "model.safetensors").unlink(), ["model.safetensors"]),
    "wrong shape": (lambda f: _edit_tensors(f, lambda t: t.__setitem__(
        "lm_head.weight", torch.zeros(999, 64))), ["lm_head.weight", "shape"]),
    "wrong dtype": (lambda f: _edit_tensors(f, lambda t: t.__setitem__(
        "lm_head.weight", torch.zeros(1000, 64, dtype=torch.int32))), ["lm_head.weight"]),
    "extra tensor": (lambda f: _edit_tensors(f, lambda t: t.__setitem__(
        "model.visual.blocks.9.norm1.weight", torch.zeros(64))), ["model.visual.blocks.9.norm1.weight"]),
    "missing tensor": (lambda f: _edit_tensors(f, lambda t: t.pop("model.language_model.norm.weight")),
                       ["model.language_model.norm.weight"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoints(ckpt, case):
    break_it, needles = CHECKPOINT_CASES[case]
    break_it(ckpt)
    expect(lambda: minglm4v.load(ckpt), *needles)


def test_missing_shard_named_in_the_index(tmp_path, tiny_config):
    import oracle

    folder = tmp_path / "sharded"
    oracle.save_oracle(tiny_config, folder, seed=1, max_shard_size="300KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()
    expect(lambda: minglm4v.load(folder), shards[1].name)


def test_missing_folder(tmp_path):
    expect(lambda: minglm4v.load(tmp_path / "nowhere"), "nowhere", error=FileNotFoundError)


def test_old_layout_checkpoint_is_refused_or_loaded_exactly(ckpt, tiny_checkpoint):
    _edit_tensors(ckpt, _old_layout)
    try:
        model = minglm4v.load(ckpt)
    except MinGlmError as e:  # refusing is allowed, if the message says what the file is
        assert "layout" in str(e), str(e)
        return
    ref = minglm4v.load(tiny_checkpoint[0])
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


def test_only_safetensors_are_read(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save({"lm_head.weight": torch.zeros(3)}, ckpt / "pytorch_model.bin")
    expect(lambda: minglm4v.load(ckpt), "model.safetensors")


def test_weights_module_never_unpickles():
    import inspect

    import minglm4v.weights as W

    assert "torch.load" not in inspect.getsource(W) and "pickle" not in inspect.getsource(W)


# ---------------------------------------------------------------------- images

def png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels and whose data is cut off: nothing but the header can be read."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)))
    return path


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = png_header_only(tmp_path / "huge.png", 20000, 20000)
    code = ("import resource, sys\nfrom minglm4v.patchify import load_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_image(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("ImageError") and "400000000 pixels" in out and "Downscale" in out, out
    assert int(out.split("grew_kb")[1]) < 50_000  # nothing near the 1.2 GB the pixels would need was touched


IMAGE_FILES = {
    "not an image": (lambda p: p.write_bytes(b"hello, I am text"), ["cannot read image"]),
    "empty file": (lambda p: p.write_bytes(b""), ["cannot read image"]),
    "truncated png": (lambda p: png_header_only(p, 300, 200), ["cannot read image"]),
    "truncated jpeg": (lambda p: p.write_bytes(_jpeg_bytes()[:400]), ["cannot read image"]),
    "missing file": (lambda p: None, ["not found"]),
}


def _jpeg_bytes():
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("case", list(IMAGE_FILES))
def test_bad_image_files(tmp_path, case):
    make, needles = IMAGE_FILES[case]
    path = tmp_path / "bad.img"
    make(path)
    expect(lambda: preprocess(load_image(path)), *needles, "bad.img")


IMAGE_OBJECTS = {
    "zero width array": (np.zeros((10, 0, 3), np.uint8), ["empty"]),
    "zero size PIL": (Image.new("RGB", (0, 5)), ["empty"]),
    "aspect ratio 250": (np.zeros((28, 7000, 3), np.uint8), ["aspect ratio"]),
    "float array": (np.zeros((30, 30, 3), np.float32), ["dtype float32"]),
    "two channels": (np.zeros((30, 30, 2), np.uint8), ["(H, W, C)"]),
    "channels first": (np.zeros((3, 30, 30), np.uint8), ["(H, W, C)"]),
    "4-D array": (np.zeros((1, 30, 30, 3), np.uint8), ["(H, W, C)"]),
    "float PIL image": (Image.new("F", (30, 30)), ["mode 'F'"]),
    "a string": ("cat.png", ["PIL image"]),
    "huge array": (np.broadcast_to(np.zeros(1, np.uint8), (20000, 20000, 3)), ["20000x20000"]),
}


@pytest.mark.parametrize("case", list(IMAGE_OBJECTS))
def test_bad_image_objects(case):
    image, needles = IMAGE_OBJECTS[case]
    expect(lambda: preprocess(image), *needles, error=minglm4v.ImageError)


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "RGBA", "P", "LA", "1", "L"])
def test_unusual_modes_are_converted(mode):
    im = Image.new("RGB", (40, 30), (200, 30, 30)).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.full((30, 40), 40000, np.uint16))
    pv, grid = preprocess(im)
    assert grid.tolist() == [[1, 6, 8]] and torch.isfinite(pv).all()  # 30x40 -> 84x112 (the min-pixels floor)


def test_one_pixel_image_is_scaled_up():
    pv, grid = preprocess(Image.new("RGB", (1, 1), (10, 20, 30)))
    assert grid.tolist() == [[1, 6, 6]] and num_image_tokens(grid[0]) == 9


def test_animated_gif_uses_its_first_frame_with_a_warning(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.warns(UserWarning, match="animated \\(2 frames\\); using its first frame"):
        im = load_image(tmp_path / "anim.gif")
    assert im.convert("RGB").getpixel((5, 5)) == (255, 0, 0)


# ---------------------------------------------------------------------- prompts

def photo(seed=0, h=50, w=60):
    return noise_photo(h, w, seed)


def user(*items):
    return [{"role": "user", "content": list(items)}]


TEXT = lambda t: {"type": "text", "text": t}  # noqa: E731
IMG = lambda im: {"type": "image", "image": im}  # noqa: E731

PROMPTS = {
    # typed special tokens are plain text unless asked for (tests/test_bad_input_text.py); asked for, they count
    "extra placeholder in text": (user(IMG(photo()), TEXT("and <|image|>")), ["2 <|image|> placeholders but 1"],
                                  {"special_tokens_in_text": True}),
    "empty conversation": ([], ["non-empty list"]),
    "unknown role": ([{"role": "robot", "content": "hi"}], ["role 'robot'"]),
    "no content": ([{"role": "user"}], ["'role' and 'content'"]),
    "content is a number": ([{"role": "user", "content": 3}], ["string or a list"]),
    "item without type": (user({"txt": "hi"}), ["item 0"]),
    "text item without text": (user({"type": "text"}), ["string under 'text'"]),
    "image item without image": (user({"type": "image"}), ["needs the image"]),
    "image item holding a number": (user({"type": "image", "image": 5}), ["holds a int"]),
    "image in an assistant turn": ([{"role": "assistant", "content": [IMG(photo())]}], ["only be in user"]),
    "message is a string": (["hello"], ["must be a dict"]),
    "image url": (user({"type": "image", "image": "https://example.com/cat.png"}), ["does not download"]),
    "image and video together": (user(IMG(photo()), {"type": "video", "video": "data/shapes.mp4"}, TEXT("?")),
                                 ["images and videos"]),
}


@pytest.mark.parametrize("case", list(PROMPTS))
def test_bad_prompts(tiny_processor_dir, case):
    messages, needles, *kwargs = PROMPTS[case]
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.apply_chat_template(messages, **(kwargs[0] if kwargs else {})), *needles)


def test_prompt_longer_than_the_context(tiny_checkpoint, tiny_processor_dir):
    model, proc = minglm4v.load(tiny_checkpoint[0]), load_processor(tiny_processor_dir)
    inputs = proc.apply_chat_template(user(TEXT("cat " * 2100)))
    assert inputs["input_ids"].shape[1] > model.config.text_config.max_position_embeddings
    expect(lambda: model.generate(**inputs, max_new_tokens=2), "context", "max_position_embeddings")


def test_empty_input_ids(tiny_checkpoint):
    model = minglm4v.load(tiny_checkpoint[0])
    expect(lambda: model.generate(torch.zeros(1, 0, dtype=torch.long)), "length >= 1")


def test_placeholders_without_pixels(tiny_checkpoint):
    model = minglm4v.load(tiny_checkpoint[0])
    ids = torch.tensor([[4, 5, 1, 7, 9, 9, 9, 9, 8]])
    expect(lambda: model(ids), "placeholder")
    expect(lambda: model(ids, pixel_values=torch.zeros(8, 1176), image_grid_thw=torch.tensor([[1, 2, 4]])),
           "placeholder")


# ---------------------------------------------------------------------- generation

GENERATION = {
    "temperature < 0": dict(do_sample=True, temperature=-1.0),
    "temperature = 0": dict(do_sample=True, temperature=0.0),
    "top_p = 0": dict(do_sample=True, top_p=0.0),
    "top_p > 1": dict(do_sample=True, top_p=1.01),
    "top_k < 0": dict(do_sample=True, top_k=-2),
    "min_p = 1": dict(do_sample=True, min_p=1.0),
    "repetition_penalty = 0": dict(repetition_penalty=0.0),
    "max_new_tokens = 0": dict(max_new_tokens=0),
    "max_new_tokens < 0": dict(max_new_tokens=-5),
    "stop id outside the vocabulary": dict(eos_token_id=[1000]),
}


@pytest.mark.parametrize("case", list(GENERATION))
def test_bad_generation_settings(tiny_checkpoint, case):
    model = minglm4v.load(tiny_checkpoint[0])
    expect(lambda: model.generate(torch.tensor([[4, 5, 1, 20, 2]]), **{"max_new_tokens": 2, **GENERATION[case]}),
           case.split(" ")[0])


def test_nan_logits_are_caught_with_advice(tiny_checkpoint):
    model = minglm4v.load(tiny_checkpoint[0])
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("nan")
    expect(lambda: model.generate(torch.tensor([[4, 5, 1, 20, 2]]), max_new_tokens=2), "NaN", "bfloat16")


def test_float16_overflow_is_reported(tiny_checkpoint):
    model = minglm4v.load(tiny_checkpoint[0], dtype=torch.float16)
    with torch.no_grad():
        model.lm_head.weight.mul_(1e6)  # beyond float16's range: inf weights, inf/NaN logits
    expect(lambda: model.generate(torch.tensor([[4, 5, 1, 20, 2]]), max_new_tokens=2), "inf", "float16")


def test_stop_ids_missing_from_the_tokenizer(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.check_stop_ids([0, 1, 999]), "999", "tokenizer")


# ---------------------------------------------------------------------- seeded random invariants

def test_random_images_and_prompts_keep_the_invariants(tiny_processor_dir, tiny_checkpoint):
    rng = np.random.default_rng(2024)
    proc = load_processor(tiny_processor_dir)
    model = minglm4v.load(tiny_checkpoint[0])
    failures = 0
    for trial in range(40):
        n_images = int(rng.integers(0, 3))
        sizes = [(int(rng.integers(1, 400)), int(rng.integers(1, 400))) for _ in range(n_images)]
        words = " ".join(rng.choice(["cat", "red", "<|image|>", "", "?", "the", "\n"], int(rng.integers(0, 8))))
        items = [IMG(photo(trial * 10 + k, h, w)) for k, (h, w) in enumerate(sizes)] + [TEXT(words)]
        try:
            inputs = proc.apply_chat_template(user(*items), special_tokens_in_text=True)
        except MinGlmError as e:  # the only documented failure here: a literal <|image|> in the text, when asked
            assert "<|image|> placeholders" in str(e)
            failures += 1
            continue
        ids = inputs["input_ids"]
        if n_images:
            assert int((ids == 9).sum()) == int(num_image_tokens(inputs["image_grid_thw"]).sum())
        pos, _ = model.position_ids(ids, inputs["attention_mask"], inputs.get("image_grid_thw"))
        text = ids[0] != 9
        t_pos = pos[0, 0][text]
        assert bool((t_pos[1:] > t_pos[:-1]).all()), "text positions must increase"
    assert 0 < failures < 40


NOT_BAD_INPUT = ("test_unusual_modes_are_converted", "test_one_pixel_image_is_scaled_up",
                 "test_weights_module_never_unpickles", "test_random_images_and_prompts_keep_the_invariants",
                 "test_the_suite_size", "test_every_error_class_is_a_minglm4v_error_and_listed",
                 "test_load_takes_dtype_names", "test_animated_gif_uses_its_first_frame_with_a_warning")


def test_the_suite_size(request):
    """Counts the bad inputs this module tries: every collected test of this file except those in NOT_BAD_INPUT
    (a parametrized test counts once per case)."""
    mine = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    bad = [item for item in mine if item.originalname not in NOT_BAD_INPUT]
    print(f"\nbad inputs tried: {len(bad)} (plus 40 seeded random prompts)")
    if not request.config.getoption("keyword") and not request.config.getoption("markexpr"):
        assert len(bad) >= 70  # the whole file ran: the suite has not shrunk


# ---------------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def cli_model(tmp_path_factory, tiny_checkpoint, tiny_processor_dir):
    return checkpoint_with_processor(tmp_path_factory.mktemp("cli_model"), tiny_checkpoint[0], tiny_processor_dir)


def _cli_cases(tmp, model):
    bad = tmp / "bad.png"
    bad.write_bytes(b"not a png")
    huge = png_header_only(tmp / "huge.png", 20000, 20000)
    text = tmp / "notes.mp4"
    text.write_text("not a video")
    wide = tmp / "wide.png"
    Image.new("RGB", (7000, 28)).save(wide)
    ok = tmp / "ok.png"
    Image.new("RGB", (60, 60)).save(ok)
    broken = tmp / "broken"
    shutil.copytree(model, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 100)
    noconfig = tmp / "noconfig"
    shutil.copytree(model, noconfig)
    (noconfig / "config.json").unlink()
    base = ["generate", "--model", str(model)]
    return {
        "missing model": ["generate", "--model", str(tmp / "nope"), "--prompt", "x"],
        "broken weights": ["generate", "--model", str(broken), "--prompt", "x"],
        "no config.json": ["generate", "--model", str(noconfig), "--prompt", "x"],
        "unreadable image": base + ["--image", str(bad), "--prompt", "x"],
        "missing image": base + ["--image", str(tmp / "missing.jpg"), "--prompt", "x"],
        "huge image": base + ["--image", str(huge), "--prompt", "x"],
        "aspect ratio": base + ["--image", str(wide), "--prompt", "x"],
        "not a video": base + ["--video", str(text), "--prompt", "x"],
        "image and video": base + ["--image", str(ok), "--video", "data/shapes.mp4", "--prompt", "x"],
        "empty prompt": base + ["--prompt", "  "],
        "too long": base + ["--prompt", "cat " * 2100, "--max-new-tokens", "2"],
        "temperature": base + ["--prompt", "x", "--sample", "--temperature", "-1"],
        "top_p": base + ["--prompt", "x", "--sample", "--top-p", "2"],
        "top_k": base + ["--prompt", "x", "--sample", "--top-k", "-1"],
        "max_new_tokens": base + ["--prompt", "x", "--max-new-tokens", "0"],
    }


CLI_CASE_NAMES = ["missing model", "broken weights", "no config.json", "unreadable image", "missing image",
                  "huge image", "aspect ratio", "not a video", "image and video", "empty prompt", "too long",
                  "temperature", "top_p", "top_k", "max_new_tokens"]


@pytest.mark.parametrize("case", CLI_CASE_NAMES)
def test_cli_user_errors_are_one_line(tmp_path, cli_model, capsys, case):
    from minglm4v.__main__ import main

    argv = _cli_cases(tmp_path, cli_model)[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(argv)  # an uncaught exception (a traceback) would fail the test here
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    if case == "image and video":
        assert "images and videos" in out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err


# ---------------------------------------------------------------------- masks, pad ids, dtypes

MASKS = {
    "right padding": torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]),
    "a row of padding only": torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]),
    "a hole in the middle": torch.tensor([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
    "wrong shape": torch.tensor([[1, 1, 1, 1, 1, 1]]),
    "not 0/1": torch.tensor([[2, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
}


@pytest.mark.parametrize("case", list(MASKS))
def test_bad_attention_masks_for_generation(tiny_checkpoint, case):
    model = minglm4v.load(tiny_checkpoint[0])
    ids = torch.tensor([[4, 5, 1, 20, 21, 2], [4, 5, 1, 22, 23, 2]])
    expect(lambda: model.generate(ids, attention_mask=MASKS[case], max_new_tokens=2), "attention_mask"
           if case in ("wrong shape", "not 0/1", "right padding", "a hole in the middle") else "padding")


@pytest.mark.parametrize("pad", [-1, 1000])
def test_pad_id_outside_the_vocabulary(tiny_checkpoint, pad):
    model = minglm4v.load(tiny_checkpoint[0])
    expect(lambda: model.generate(torch.tensor([[4, 5, 1, 20, 2]]), max_new_tokens=2, pad_token_id=pad),
           "pad_token_id")


@pytest.mark.parametrize("dtype", [torch.int8, "float64", "fp8"])
def test_load_refuses_non_float_compute_dtypes(tiny_checkpoint, dtype):
    expect(lambda: minglm4v.load(tiny_checkpoint[0], dtype=dtype), "dtype=", "bfloat16")


def test_load_takes_dtype_names(tiny_checkpoint):
    assert minglm4v.load(tiny_checkpoint[0], dtype="bfloat16").dtype == torch.bfloat16


def test_every_error_class_is_a_minglm4v_error_and_listed():
    import importlib
    import inspect
    import pkgutil

    import minglm4v.errors as E

    found = {}
    for mod in pkgutil.iter_modules(minglm4v.__path__):
        m = importlib.import_module(f"minglm4v.{mod.name}")
        for name, cls in inspect.getmembers(m, inspect.isclass):
            if name.endswith("Error") and cls.__module__ == m.__name__ and name != "MinGlmError":
                found[name] = cls  # the base class itself is a plain Exception
    assert len(found) >= 15
    for name, cls in found.items():
        assert issubclass(cls, MinGlmError) and issubclass(cls, (ValueError, FileNotFoundError)), name
        assert name in E.__doc__, f"{name} is missing from errors.py's list"


def test_integer_tensor_refused_even_with_a_dtype(ckpt):
    _edit_tensors(ckpt, lambda t: t.__setitem__("lm_head.weight", torch.zeros(1000, 64, dtype=torch.int32)))
    expect(lambda: minglm4v.load(ckpt, dtype="float32"), "lm_head.weight", "I32")


def test_safetensors_header_that_is_not_an_object(ckpt):
    header = b"[]"
    (ckpt / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    expect(lambda: minglm4v.load(ckpt), "model.safetensors", "not a JSON object")


def test_fractional_mask_is_not_rounded_into_validity(tiny_checkpoint):
    model = minglm4v.load(tiny_checkpoint[0])
    expect(lambda: model.generate(torch.tensor([[4, 5, 2]]), attention_mask=torch.tensor([[0.4, 1.0, 1.9]]),
                                  max_new_tokens=2), "only 0")
