"""Bad input on the text side: hostile chat templates, malformed processor files, ambiguous message items, special
tokens typed in text, bad ids to decode, keywords and processor calls that do not fit. Each fails with one clear
error (a MinGlmError that is also a ValueError) naming what was wrong, quickly."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from oracle import noise_photo

from minglm4v.errors import ChatTemplateError, MessageError, MinGlmError, ProcessorError, TokenizerError
from minglm4v.processor import load_processor
from minglm4v.processor_config import ImageProcessorConfig, VideoProcessorConfig


def expect(fn, error, *needles):
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, MinGlmError) and isinstance(info.value, ValueError), type(info.value)
    for n in needles:
        assert n in str(info.value), f"{n!r} not in {str(info.value)!r}"
    return str(info.value)


def user(*items):
    return [{"role": "user", "content": list(items)}]


def text(t):
    return {"type": "text", "text": t}


@pytest.fixture()
def folder(tiny_processor_dir, tmp_path):
    """A writable copy of the tiny processor folder."""
    for f in tiny_processor_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


# ---------------------------------------------------------------------- hostile chat templates (#12.3)

HOSTILE = {
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "huge range literal": "{% for i in range(1000000000) %}x{% endfor %}",
    "nested loops": "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "nested loops with output": "{% for i in range(10000) %}{% for j in range(10000) %}ab{% endfor %}{% endfor %}",
    "tower of powers": "{{ 9**(9**9) }}",
    "big power": "{{ 2**100000000 }}",
    "huge string": "{{ 'a'*10**10 }}",
    "huge list": "{{ ([1]*1000000)*1000 }}",
    "doubling string": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s*2 %}{% endfor %}",
    "growing concat": ("{% set ns = namespace(s='a'*1000000) %}{% for i in range(10000) %}"
                       "{% set ns.s = ns.s ~ ns.s[:1000000] %}{% endfor %}{{ ns.s|length }}"),
    "macro recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(1) }}",
    "center filter": "{{ 'a'|center(1000000000) }}",
    "ljust method": "{{ 'a'.ljust(1000000000) }}",
    "percent width": "{{ '%1000000000d' % 1 }}",
    "format width": "{{ '{:>1000000000}'.format(1) }}",
    "float overflow": "{{ 9.0 ** 999 }}",
    "type error": "{{ 1 + 'a' }}",
    "division by zero": "{{ 1 / 0 }}",
    "undefined": "{{ nothing.here }}",
    "syntax error": "{% for %}",
    "attribute escape": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "slice filter": "{{ [1, 2]|slice(100000000)|list }}",
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_chat_template_fails_fast_and_names_the_file(folder, case):
    (folder / "chat_template.jinja").write_text(HOSTILE[case])
    proc = load_processor(folder)
    start = time.monotonic()
    expect(lambda: proc.apply_chat_template(user(text("hi"))), ChatTemplateError, str(folder / "chat_template.jinja"))
    assert time.monotonic() - start < 10, "a hostile template must be stopped, not run"  # a hang guard


def test_hostile_template_in_tokenizer_config_names_that_file(folder):
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": HOSTILE["tower of powers"]}))
    proc = load_processor(folder)
    expect(lambda: proc.apply_chat_template(user(text("hi"))), ProcessorError, "tokenizer_config.json", "bits")
    expect(lambda: proc.apply_chat_template(user(text("hi")), tokenize=False), ProcessorError, "bits")


def test_hostile_template_given_as_an_argument(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.apply_chat_template(user(text("hi")), chat_template=HOSTILE["huge string"]),
           ChatTemplateError, "the chat_template argument", "limit")


def test_a_template_may_still_refuse_a_conversation(folder):
    (folder / "chat_template.jinja").write_text("{{ raise_exception('only one message, please') }}")
    expect(lambda: load_processor(folder).apply_chat_template(user(text("hi"))), MessageError,
           "only one message, please")


# ---------------------------------------------------------------------- processor files, read strictly (#12.7)

PREPROCESSOR = {
    "patch size as text": ({"patch_size": "14"}, ["field 'patch_size' must be int, got str"]),
    "patch size as float": ({"patch_size": 14.0}, ["field 'patch_size' must be int, got float"]),
    "patch size as bool": ({"merge_size": True}, ["field 'merge_size' must be int, got bool"]),
    "patch size zero": ({"temporal_patch_size": 0}, ["'temporal_patch_size' must be a positive integer"]),
    "size as list": ({"size": [1, 2]}, ["field 'size' must be dict, got list"]),
    "size with text": ({"size": {"shortest_edge": "a", "longest_edge": 9}}, ["'size.shortest_edge' must be int"]),
    "size upside down": ({"size": {"shortest_edge": 90, "longest_edge": 9}}, ["larger than size.longest_edge"]),
    "size with other keys": ({"size": {"height": 3, "width": 3}}, ["'size' must be", "height"]),
    "mean as text": ({"image_mean": "0.5"}, ["field 'image_mean' must be list, got str"]),
    "mean of two": ({"image_mean": [0.5, 0.5]}, ["must hold 3 numbers"]),
    "mean with text": ({"image_mean": [0.5, "x", 0.5]}, ["field 'image_mean[1]' must be int or float"]),
    "zero std": ({"image_std": [0.2, 0, 0.2]}, ["'image_std' must be positive"]),
    "flag as text": ({"do_normalize": "true"}, ["do_normalize='true' is not supported"]),
    "flag as one": ({"do_resize": 1}, ["do_resize=1 is not supported"]),
    "resample as float": ({"resample": 3.0}, ["resample=3.0 is not supported"]),
    "unknown key": ({"crop_size": 3}, ["unknown key 'crop_size'"]),
}


@pytest.mark.parametrize("case", list(PREPROCESSOR))
def test_bad_preprocessor_config_names_file_and_field(tmp_path, case):
    data, needles = PREPROCESSOR[case]
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(data))
    expect(lambda: ImageProcessorConfig.from_file(path), ProcessorError, str(path), *needles)


@pytest.mark.parametrize("data, needle", [
    ({"fps": "2"}, "field 'fps' must be int or float, got str"),
    ({"fps": 0}, "'fps' must be a positive number"),
    ({"max_duration": -1}, "'max_duration' must be a positive number"),
    ({"do_sample_frames": False}, "do_sample_frames=False is not supported"),
])
def test_bad_video_preprocessor_config(tmp_path, data, needle):
    path = tmp_path / "video_preprocessor_config.json"
    path.write_text(json.dumps(data))
    expect(lambda: VideoProcessorConfig.from_file(path), ProcessorError, str(path), needle)


def test_nan_fps_is_refused(tmp_path):
    path = tmp_path / "video_preprocessor_config.json"
    path.write_text('{"fps": NaN}')
    expect(lambda: VideoProcessorConfig.from_file(path), ProcessorError, "'fps' must be a positive number")


MALFORMED = {
    "not UTF-8": (b'{"patch_size": 14, "x": "\xff\xfe"}', "not UTF-8"),
    "not JSON": (b'{"patch_size": 14,', "not valid JSON"),
    "duplicate key": (b'{"patch_size": 14, "patch_size": 16}', "appears twice"),
    "deep nesting": (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested more than"),
    "a list": (b"[1, 2]", "top level must be a JSON object"),
}


@pytest.mark.parametrize("name", ["preprocessor_config.json", "video_preprocessor_config.json",
                                  "tokenizer_config.json"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_processor_files(folder, name, case):
    raw, needle = MALFORMED[case]
    (folder / name).write_bytes(raw)
    expect(lambda: load_processor(folder), ProcessorError, str(folder / name), needle)


@pytest.mark.parametrize("content, needle", [
    ({"chat_template": 5}, "field 'chat_template' must be str, got int"),
    ({"chat_template": [{"name": "default", "template": "x"}]}, "a list of named templates"),
])
def test_bad_chat_template_field(folder, content, needle):
    (folder / "tokenizer_config.json").write_text(json.dumps(content))
    expect(lambda: load_processor(folder), ProcessorError, "tokenizer_config.json", needle)


def test_chat_template_file_not_utf8(folder):
    (folder / "chat_template.jinja").write_bytes(b"[gMASK]\xff")
    expect(lambda: load_processor(folder), ProcessorError, "chat_template.jinja", "not UTF-8")


def test_processor_folder_as_url_or_file(tmp_path):
    expect(lambda: load_processor("https://example.com/model"), ProcessorError, "is a URL")
    (tmp_path / "f").write_text("x")
    expect(lambda: load_processor(tmp_path / "f"), ProcessorError, "is a file, not a folder")


# ---------------------------------------------------------------------- ambiguous items (#12.8)

AMBIGUOUS = {
    "text with an image": ({"type": "text", "text": "hi", "image": "x.png"}, ["'text'", "'image'", "ambiguous"]),
    "image with a text": ({"type": "image", "image": "x.png", "text": "a caption"}, ["'image'", "'text'"]),
    "image and url": ({"type": "image", "image": "x.png", "url": "y.png"}, ["'image'", "'url'", "exactly one"]),
    "image and video": ({"image": "x.png", "video": "y.mp4"}, ["'image'", "'video'"]),
    "type image, video key": ({"type": "image", "video": "y.mp4"}, ["type 'image'", "'video'"]),
    "path and url": ({"type": "video", "path": "y.mp4", "url": "z.mp4"}, ["'path'", "'url'"]),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_ambiguous_items_are_refused(tiny_processor_dir, case):
    item, needles = AMBIGUOUS[case]
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.apply_chat_template(user(item, text("?"))), MessageError, "item 0", *needles)


def test_unknown_item_keys_are_refused(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.apply_chat_template(user({"type": "image", "image": noise_photo(40, 40, 0),
                                                  "caption": "c"})), MessageError, "'caption'", "would be ignored")


# ---------------------------------------------------------------------- special tokens typed in text (#12.8)

def test_every_special_token_typed_in_text_stays_text(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    tok = proc.tokenizer
    specials = tok.special_tokens()
    assert {"<|assistant|>", "<|user|>", "<|image|>", "<|begin_of_image|>", "[gMASK]", "<|endoftext|>"} <= set(specials)
    typed = "x" + "y".join(specials) + "z"
    for conv in (user(text(typed)), [{"role": "system", "content": typed}, {"role": "user", "content": typed}],
                 [{"role": "user", "content": "q"}, {"role": "assistant", "content": typed, "metadata": typed}]):
        plain_only = proc.apply_chat_template(conv, add_generation_prompt=False)["input_ids"][0].tolist()
        structure = proc.apply_chat_template([{**m, "content": ""} for m in conv],
                                             add_generation_prompt=False)["input_ids"][0].tolist()
        special_ids = {tok.token_to_id(t) for t in specials}
        assert [i for i in plain_only if i in special_ids] == [i for i in structure if i in special_ids]
        assert typed in proc.decode(plain_only)


def test_reserved_marker_characters_are_refused(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.apply_chat_template(user(text("a\ufdd0b"))), MessageError, "U+FDD0")


# ---------------------------------------------------------------------- decoding and calling

@pytest.mark.parametrize("ids, needle", [
    ([1, -1], "token id -1 is not a token id"),
    ([2**40], f"token id {2**40} is not a token id"),
    ([1.5], "integer token ids, got float"),
    ([True], "integer token ids, got bool"),
    ([[1, 2]], "use batch_decode()"),
    ("hello", "sequence of token ids, got str"),
])
def test_bad_ids_to_decode(tiny_processor_dir, ids, needle):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.decode(ids), TokenizerError, needle)


def test_batch_decode_needs_a_batch(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc.batch_decode(np.array([1, 2])), ProcessorError, "(B, L) batch")


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "needs text="),
    ({"text": 5}, "a string or a non-empty list of strings"),
    ({"text": []}, "a string or a non-empty list of strings"),
    ({"text": "no placeholder", "images": [noise_photo(40, 40, 0)]},
     "0 <|image|> and 0 <|video|> placeholders but 1 images"),
    ({"text": "x", "truncation": True}, "truncation=True is not supported"),
    ({"text": "x", "add_generation_prompt": True}, "unknown keyword argument(s) 'add_generation_prompt'"),
])
def test_bad_processor_calls(tiny_processor_dir, kwargs, needle):
    proc = load_processor(tiny_processor_dir)
    expect(lambda: proc(**kwargs), ProcessorError, needle)


@pytest.mark.parametrize("item, error, needle", [
    ({"type": "image", "url": "https://example.com/cat.png"}, "ImageError", "allow_download=True"),
    ({"type": "video", "url": "https://example.com/clip.mp4"}, "VideoError", "allow_download=True"),
    ({"type": "video", "video": np.zeros((4, 28, 28, 3), np.uint8)}, "VideoError", "'fps'"),
    ({"type": "video", "video": np.zeros((4, 28, 28, 3), np.uint8), "fps": True}, "VideoError", "'fps' must be"),
    ({"type": "video", "path": "clip.mp4", "fps": 3}, "VideoError", "only for a video given as frames"),
    ({"type": "image", "image": 5}, "ImageError", "holds a int"),
])
def test_bad_media_items(tiny_processor_dir, item, error, needle):
    proc = load_processor(tiny_processor_dir)
    message = expect(lambda: proc.apply_chat_template(user(item, text("?"))), MinGlmError, needle)
    assert message



def test_the_sandbox_keeps_jinja_filters_working():
    """Bounding the filters must not break them: the ones that take jinja's context or environment included."""
    from minglm4v.template_sandbox import render_template

    msgs = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]
    parts = ["{{ (messages|first).role }}", "{{ (messages|last).content }}",
             "{{ messages|map(attribute='role')|join(',') }}",
             "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}", "{{ {'k': 1}|tojson }}",
             "{{ 'a b'|replace(' ', '_') }}", "{{ [1, 2, 3]|batch(2)|list|length }}", "{{ 'x'|center(5) }}"]
    got = render_template("|".join(parts), "a test template", messages=msgs)
    assert got == 'user|c|user,assistant|1|{"k": 1}|a_b|2|  x  '
