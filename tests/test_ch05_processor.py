"""Chapter 05: tokens and the chat format. Rendering by hand, ids and pixels against transformers' Glm4vProcessor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oracle import assert_close, noise_photo

from minglm4v.batch import BatchFeature
from minglm4v.chat import render_chat, render_with_template, split_thinking
from minglm4v.errors import MessageError, MinGlmError, ProcessorError, TokenizerError
from minglm4v.processor import load_processor
from minglm4v.processor_config import ImageProcessorConfig

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # in transformers


def photo(h, w, seed):
    return noise_photo(h, w, seed)


# ---------------------------------------------------------------------- the chat format, worked out by hand

def test_render_matches_the_published_example():
    msgs = [{"role": "user", "content": [{"type": "image", "image": "dog.jpg"},
                                         {"type": "text", "text": "What kind of dog is this?"}]}]
    assert render_chat(msgs) == ("[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>"
                                 "What kind of dog is this?<|assistant|>\n")
    assert render_chat(msgs, add_generation_prompt=False).endswith("this?")


def test_render_system_assistant_video_and_metadata():
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello.", "metadata": "m"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video", "video": "v.mp4"},
                                         {"type": "image", "image": "x.png"}, {"type": "text", "text": "b"}]}]
    assert render_chat(msgs) == (
        "[gMASK]<sop><|system|>\nBe brief.<|user|>\nHi<|assistant|>m\nHello.<|user|>\na"
        "<|begin_of_video|><|video|><|end_of_video|><|begin_of_image|><|image|><|end_of_image|>b<|assistant|>\n")


@pytest.mark.parametrize("bad, message", [
    ([], "non-empty list"),
    ([{"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user"}], "'role' and 'content'"),
    ([{"role": "user", "content": [{"type": "audio", "audio": 1}]}], "item 0"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "string under 'text'"),
    ([{"role": "assistant", "content": [{"type": "image", "image": "x"}]}], "only be in user messages"),
    ([{"role": "user", "content": [{"type": "image"}]}], "needs the image"),
    ([{"role": "user", "content": 5}], "string or a list"),
])
def test_malformed_messages_fail_clearly(bad, message):
    with pytest.raises(MessageError, match=message):
        render_chat(bad)


@pytest.mark.parametrize("text, expected", [
    ("<think>look at the ears</think><answer>a cat</answer>", ("look at the ears", "a cat")),
    ("<think>\nhmm\n</think>\n<answer>\nyes\n</answer>", ("hmm", "yes")),
    ("<think>a</think>plain answer", ("a", "plain answer")),
    ("<answer>only</answer>", ("", "only")),
    ("no tags at all", ("", "no tags at all")),
    ("<think>cut off while thinking", ("cut off while thinking", "")),
    ("<think>t</think><answer>cut off", ("t", "cut off")),
])
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


# ---------------------------------------------------------------------- ids and pixels vs transformers

PUBLISHED_SIZE = {"shortest_edge": 12544, "longest_edge": 9633792}
# A GLM-style jinja template, for comparing with transformers' own apply_chat_template (the tiny folder ships none)
GLM_LIKE = ("[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n{% if m.content is string %}{{ m.content }}"
            "{% else %}{% for it in m.content %}{% if it.type == 'image' %}<|begin_of_image|><|image|>"
            "<|end_of_image|>{% else %}{{ it.text }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def hf_processor(tiny_processor_dir):
    import transformers

    class NoVideoProcessor(transformers.Glm4vProcessor):  # torchvision (needed by the video processor) is absent
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    tok = transformers.AutoTokenizer.from_pretrained(tiny_processor_dir)
    return NoVideoProcessor(image_processor=transformers.Glm4vImageProcessorPil(size=PUBLISHED_SIZE), tokenizer=tok,
                            video_processor=None, chat_template=GLM_LIKE)


def hf_inputs(hf, texts, images):
    return hf(text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt")


def assert_same_batch(ours, ref):
    """Same keys in the same order, equal ids, masks, types and grids, pixels within float32 rounding."""
    assert list(ours) == list(ref)
    for k in ref:
        if k.startswith("pixel_values"):
            assert_close(ours[k], ref[k], atol=1e-6, what=k)
        else:
            assert ours[k].dtype == ref[k].dtype == torch.int64, k
            assert ours[k].tolist() == ref[k].tolist(), k


def conversation(n_images, seed, question="What kind of animal is this?"):
    items = [{"type": "image", "image": photo(60 + 37 * k, 90 + 23 * k, seed + k)} for k in range(n_images)]
    return [{"role": "user", "content": items + [{"type": "text", "text": question}]}]


TRANSFORMERS_STYLE = dict(tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt",
                          padding=True)


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_ids_and_pixels_match_transformers(tiny_processor_dir, hf_processor, n_images):
    proc = load_processor(tiny_processor_dir)
    conv = conversation(n_images, seed=n_images)
    ours = proc.apply_chat_template(conv)
    assert isinstance(ours, BatchFeature) and isinstance(ours, dict)
    assert_same_batch(proc.apply_chat_template(conv, **TRANSFORMERS_STYLE), ours)  # the same by both spellings
    images = [it["image"] for it in conv[0]["content"] if it["type"] == "image"]
    ref = hf_inputs(hf_processor, [render_chat(conv)], images)
    assert_same_batch(ours, ref)
    assert set(ref) == {"input_ids", "attention_mask", "mm_token_type_ids"} | (
        {"pixel_values", "image_grid_thw"} if n_images else set())
    if n_images:
        n_tokens = int((ours["input_ids"] == 9).sum())
        assert n_tokens == int(ours["image_grid_thw"].prod(-1).sum()) // 4 == int(ours["mm_token_type_ids"].sum())


def test_left_padded_batch_matches_transformers(tiny_processor_dir, hf_processor):
    proc = load_processor(tiny_processor_dir)
    convs = [conversation(1, seed=10, question="Hi"), conversation(2, seed=20, question="Describe the image.")]
    ours = proc.apply_chat_template(convs, **TRANSFORMERS_STYLE)
    images = [it["image"] for c in convs for it in c[0]["content"] if it["type"] == "image"]
    ref = hf_inputs(hf_processor, [render_chat(c) for c in convs], images)
    assert_same_batch(ours, ref)
    assert ours["attention_mask"][0, 0] == 0 and ours["attention_mask"][:, -1].tolist() == [1, 1]  # left padding


def test_processor_call_matches_transformers(tiny_processor_dir, hf_processor):
    """processor(text=..., images=...) on an already formatted prompt, as transformers' processor is called."""
    proc = load_processor(tiny_processor_dir)
    convs = [conversation(2, seed=30, question="Two?"), conversation(1, seed=40, question="One <|user|> typed")]
    texts = [render_chat(c) for c in convs]
    images = [it["image"] for c in convs for it in c[0]["content"] if it["type"] == "image"]
    ours = proc(text=texts, images=images, return_tensors="pt", padding=True)
    assert_same_batch(ours, hf_inputs(hf_processor, texts, images))
    assert_same_batch(proc(text=texts[1], images=images[2:], return_tensors="pt"),
                      hf_processor(text=texts[1], images=images[2:], return_tensors="pt"))
    as_lists = proc(text=texts, images=images, return_tensors=None)
    ref_lists = hf_processor(text=texts, images=images, padding=True, return_tensors=None)
    assert as_lists["input_ids"] == ref_lists["input_ids"] and as_lists["mm_token_type_ids"] == \
        ref_lists["mm_token_type_ids"]
    assert isinstance(as_lists["pixel_values"], np.ndarray)
    assert np.allclose(as_lists["pixel_values"], ref_lists["pixel_values"], atol=1e-6)


TYPED = "What is <|assistant|> this <|image|> [gMASK] <|begin_of_image|>?"


def test_special_tokens_typed_in_text_are_plain_text(tiny_processor_dir, hf_processor):
    """Default: like transformers' apply_chat_template(..., sanitize_control_tokens=True); opt-in: like its default."""
    proc = load_processor(tiny_processor_dir)
    conv = [{"role": "system", "content": "Sys <|user|>"}] + conversation(1, seed=5, question=TYPED)
    ours = proc.apply_chat_template(conv, chat_template=GLM_LIKE, **TRANSFORMERS_STYLE)
    assert_same_batch(ours, hf_processor.apply_chat_template(conv, sanitize_control_tokens=True,
                                                             **TRANSFORMERS_STYLE))
    no_placeholder = [{"role": "system", "content": "Sys <|user|>"}] + conversation(
        1, seed=5, question=TYPED.replace(" <|image|>", ""))
    opted = proc.apply_chat_template(no_placeholder, chat_template=GLM_LIKE, special_tokens_in_text=True)
    assert_same_batch(opted, hf_processor.apply_chat_template(no_placeholder, **TRANSFORMERS_STYLE))
    assert opted["input_ids"].tolist() != proc.apply_chat_template(no_placeholder, chat_template=GLM_LIKE)[
        "input_ids"].tolist()
    # the built-in GLM-4.1V renderer: the typed strings stay text, the format's own tokens stay special
    ids = proc.apply_chat_template(conv)["input_ids"][0].tolist()
    tok = proc.tokenizer
    specials = {tok.token_to_id(t) for t in ("<|user|>", "<|assistant|>", "[gMASK]", "<|begin_of_image|>")}
    assert [i for i in ids if i in specials] == [tok.token_to_id(t) for t in
                                                 ("[gMASK]", "<|user|>", "<|begin_of_image|>", "<|assistant|>")]
    assert proc.decode(ids, skip_special_tokens=True).endswith(TYPED + "\n")
    assert proc.decode(ids).count("<|assistant|>") == 2  # one typed (as text), one the generation prompt
    plain = [{"role": "user", "content": [{"type": "text", "text": "Just <|user|> text"}]}]
    assert proc.apply_chat_template(plain, special_tokens_in_text=True)["input_ids"].tolist() == \
        hf_inputs(hf_processor, [render_chat(plain)], [])["input_ids"].tolist()
    assert proc.apply_chat_template(plain, sanitize_control_tokens=False)["input_ids"].tolist() == \
        proc.apply_chat_template(plain, special_tokens_in_text=True)["input_ids"].tolist()


def test_placeholder_typed_in_text_counts_only_when_asked(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    conv = [{"role": "user", "content": [{"type": "image", "image": photo(50, 50, 0)},
                                         {"type": "text", "text": "and <|image|> again"}]}]
    out = proc.apply_chat_template(conv)
    assert int((out["input_ids"] == 9).sum()) == int(out["image_grid_thw"].prod()) // 4  # only the real image
    with pytest.raises(ProcessorError, match="2 <\\|image\\|> placeholders but 1 images"):
        proc.apply_chat_template(conv, special_tokens_in_text=True)


def test_images_by_path(tiny_processor_dir, data_dir):
    proc = load_processor(tiny_processor_dir)
    cat = str(data_dir / "cat.png")
    by_path = proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": cat},
                                                                    {"type": "text", "text": "?"}]}])
    from minglm4v.patchify import load_image
    by_obj = proc.apply_chat_template([{"role": "user", "content": [{"type": "image",
                                                                     "image": load_image(data_dir / "cat.png")},
                                                                    {"type": "text", "text": "?"}]}])
    assert torch.equal(by_path["pixel_values"], by_obj["pixel_values"])
    assert by_path["image_grid_thw"].tolist() == [[1, 22, 32]]
    assert int((by_path["input_ids"] == 9).sum()) == 176


def test_a_shipped_template_of_another_format_is_used(tiny_processor_dir, tmp_path):
    import shutil

    for f in tiny_processor_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    template = ("[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n{% if m.content is string %}{{ m.content }}"
                "{% else %}{% for it in m.content %}{% if it.type == 'image' %}<|begin_of_image|><|image|>"
                "<|end_of_image|>{% else %}[{{ it.text }}]{% endif %}{% endfor %}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    (tmp_path / "chat_template.jinja").write_text(template)
    proc = load_processor(tmp_path)
    conv = conversation(1, seed=3, question="Q")
    text = proc.render(conv)
    assert text == render_with_template(template, conv) != render_chat(conv)
    assert "[Q]" in text
    ids = proc.apply_chat_template(conv)["input_ids"][0].tolist()
    assert proc.decode(ids, skip_special_tokens=True) == "\n[Q]\n"


# ---------------------------------------------------------------------- bad input

def test_processor_folder_errors(tmp_path, tiny_processor_dir):
    with pytest.raises(ProcessorError, match="not found"):
        load_processor(tmp_path / "nope")
    with pytest.raises(ProcessorError, match="preprocessor_config.json not found"):
        load_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 1, "longest_edge": 9},
                                                                   "do_normalize": False}))
    with pytest.raises(ProcessorError, match="do_normalize=False is not supported"):
        ImageProcessorConfig.from_file(tmp_path / "preprocessor_config.json")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"crop_size": 3}))
    with pytest.raises(ProcessorError, match="unknown key 'crop_size'"):
        ImageProcessorConfig.from_file(tmp_path / "preprocessor_config.json")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({}))
    with pytest.raises(TokenizerError, match="tokenizer.json not found"):
        load_processor(tmp_path)


def test_published_preprocessor_config_reads_to_the_defaults(tmp_path):
    published = {"size": {"shortest_edge": 12544, "longest_edge": 9633792}, "do_rescale": True, "patch_size": 14,
                 "temporal_patch_size": 2, "merge_size": 2,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                 "image_processor_type": "Glm4vImageProcessor", "processor_class": "Glm4vProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(published))
    assert ImageProcessorConfig.from_file(tmp_path / "preprocessor_config.json") == ImageProcessorConfig()


# ---------------------------------------------------------------------- transformers' calling conventions

def test_tokenize_false_returns_the_prompt_text(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    conv = conversation(1, seed=1, question="Q <|user|>?")
    assert proc.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == render_chat(conv)
    assert proc.apply_chat_template([conv, conversation(0, 2)], tokenize=False, add_generation_prompt=False) == \
        [render_chat(conv, False), render_chat(conversation(0, 2), False)]
    ids = proc.apply_chat_template(conv, return_dict=False)
    assert torch.equal(ids, proc.apply_chat_template(conv)["input_ids"])


def test_batch_feature_to_and_attributes(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    inputs = proc.apply_chat_template(conversation(1, seed=3))
    ids = inputs.input_ids.clone()
    assert inputs.input_ids is inputs["input_ids"]
    assert inputs.to(torch.bfloat16) is inputs
    assert inputs.pixel_values.dtype == torch.bfloat16
    assert {k: v.dtype for k, v in inputs.items() if k != "pixel_values"} == dict.fromkeys(
        ["input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"], torch.int64)
    assert torch.equal(inputs.to("cpu", dtype=torch.float32).input_ids, ids)
    assert inputs.pixel_values.dtype == torch.float32 and inputs.pixel_values.device.type == "cpu"
    inputs.to(device=torch.device("meta"))
    assert {v.device.type for v in inputs.values()} == {"meta"}
    with pytest.raises(AttributeError, match="no 'pixel_values_videos'"):
        inputs.pixel_values_videos
    with pytest.raises(ProcessorError, match="floating torch dtype"):
        inputs.to(torch.int32)


def test_message_items_name_images_every_way(tiny_processor_dir, data_dir, tmp_path):
    from minglm4v.patchify import load_image

    proc = load_processor(tiny_processor_dir)
    cat = data_dir / "cat.png"

    def pixels(item):
        return proc.apply_chat_template([{"role": "user", "content": [item, {"type": "text", "text": "?"}]}])

    ref = pixels({"type": "image", "image": str(cat)})
    arr = np.array(load_image(cat))  # a writable copy
    for item in ({"type": "image", "path": str(cat)}, {"type": "image", "url": str(cat)},
                 {"type": "image", "url": cat.as_uri()}, {"type": "image", "image": cat},
                 {"type": "image", "image": arr}, {"type": "image", "image": torch.from_numpy(arr)},
                 {"type": "image", "image": torch.from_numpy(arr).permute(2, 0, 1)}, {"image": load_image(cat)}):
        got = pixels(item)
        assert torch.equal(got["pixel_values"], ref["pixel_values"]), item
        assert got["input_ids"].tolist() == ref["input_ids"].tolist()


def test_remote_urls_only_with_allow_download(tiny_processor_dir, data_dir):
    """A remote URL is refused unless asked; asked, it is fetched (here from a local server) like the file."""
    import http.server
    import threading

    proc = load_processor(tiny_processor_dir)
    body = (data_dir / "cat.png").read_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/cat.png"
        conv = [{"role": "user", "content": [{"type": "image", "url": url}, {"type": "text", "text": "?"}]}]
        with pytest.raises(MinGlmError, match="allow_download=True"):
            proc.apply_chat_template(conv)
        assert hits == []
        got = proc.apply_chat_template(conv, allow_download=True)
        assert hits == ["/cat.png"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    ref = proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "path": str(data_dir / "cat.png")},
                                                                {"type": "text", "text": "?"}]}])
    assert torch.equal(got["pixel_values"], ref["pixel_values"])


def test_video_frames_and_mm_token_type_ids(tiny_processor_dir, hf_processor):
    """A video given as frames (array or tensor): its frame placeholders are type 2, as transformers marks them."""
    proc = load_processor(tiny_processor_dir)
    frames = np.random.default_rng(7).integers(0, 256, (8, 56, 84, 3), dtype=np.uint8)
    conv = [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 4},
                                         {"type": "text", "text": "Which way?"}]}]
    out = proc.apply_chat_template(conv, **TRANSFORMERS_STYLE)
    assert list(out) == ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw"]
    expected = hf_processor.create_mm_token_type_ids(out["input_ids"].tolist())
    assert out["mm_token_type_ids"].tolist() == expected
    assert int((out["mm_token_type_ids"] == 2).sum()) == int(out["video_grid_thw"].prod()) // 4 > 0
    assert int((out["mm_token_type_ids"] == 1).sum()) == 0
    as_tensor = proc.apply_chat_template([{"role": "user", "content": [
        {"type": "video", "video": torch.from_numpy(frames).permute(0, 3, 1, 2), "fps": 4},
        {"type": "text", "text": "Which way?"}]}])
    assert torch.equal(as_tensor["pixel_values_videos"], out["pixel_values_videos"])
    called = proc(text=render_chat(conv), videos=[{"video": frames, "fps": 4}])
    assert_same_batch(called, out)


@pytest.mark.parametrize("kwargs, message", [
    ({"truncation": True}, "truncation=True is not supported"),
    ({"max_length": 10}, "max_length=10 is not supported"),
    ({"padding_side": "right"}, "padding on the left"),
    ({"padding": "max_length"}, "padding='max_length' is not supported"),
    ({"return_tensors": "tf"}, "return_tensors='tf'"),
    ({"tokenize": "yes"}, "tokenize must be True or False"),
    ({"continue_final_message": True}, "continue_final_message=True"),
    ({"tools": [{"name": "f"}]}, "no tool section"),
    ({"tokenize": False, "return_tensors": "pt"}, "no effect"),
    ({"sanitize_control_tokens": True, "special_tokens_in_text": True}, "contradicts"),
    ({"num_frames": 8}, "unknown keyword argument(s) 'num_frames'; it accepts"),
])
def test_keywords_that_do_not_apply_are_refused(tiny_processor_dir, kwargs, message):
    proc = load_processor(tiny_processor_dir)
    with pytest.raises(ProcessorError) as info:
        proc.apply_chat_template(conversation(0, 1), **kwargs)
    assert message in str(info.value)
    if "unknown" in message:
        assert "add_generation_prompt" in str(info.value) and "allow_download" in str(info.value)


def test_accepted_transformers_keywords(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    conv = conversation(0, 1)
    ref = proc.apply_chat_template(conv)
    for kwargs in ({"truncation": False}, {"padding": "longest"}, {"padding_side": "left"}, {"tools": None},
                   {"return_mm_token_type_ids": True}, {"max_length": None}):
        assert_same_batch(proc.apply_chat_template(conv, **kwargs), ref)
    as_np = proc.apply_chat_template(conv, return_tensors="np")
    assert as_np["input_ids"].dtype == np.int64 and as_np["input_ids"].tolist() == ref["input_ids"].tolist()
    ragged = proc.apply_chat_template([conv, conversation(0, 2, "longer question here")], padding=False,
                                      return_tensors=None)
    assert [len(r) for r in ragged["input_ids"]] == [len(r) for r in ragged["attention_mask"]]
    assert len(ragged["input_ids"][0]) != len(ragged["input_ids"][1])


# ---------------------------------------------------------------------- decoding, as transformers decodes

def test_decode_matches_transformers(tiny_processor_dir, hf_processor):
    import warnings

    proc = load_processor(tiny_processor_dir)
    ids = proc.apply_chat_template(conversation(1, seed=4, question="it 's a cat , yes ."))["input_ids"]
    tok = hf_processor.tokenizer
    assert proc.decode(ids[0]) == tok.decode(ids[0]) == hf_processor.decode(ids[0])
    assert "<|assistant|>" in proc.decode(ids[0])  # transformers' default keeps special tokens
    assert proc.decode(ids[0], skip_special_tokens=True) == tok.decode(ids[0], skip_special_tokens=True)
    assert proc.batch_decode(ids) == tok.batch_decode(ids)
    assert proc.batch_decode(ids, skip_special_tokens=True) == hf_processor.batch_decode(ids, skip_special_tokens=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers warns that it ignores the clean-up for this tokenizer
        hf_clean = tok.decode(ids[0], clean_up_tokenization_spaces=True)
    with pytest.warns(UserWarning, match="byte-level BPE"):
        assert proc.decode(ids[0], clean_up_tokenization_spaces=True) == hf_clean
    assert proc.decode(ids[0], clean_up_tokenization_spaces=False) == tok.decode(ids[0],
                                                                                 clean_up_tokenization_spaces=False)
    assert " ," in hf_clean  # not cleaned up: the spaces before punctuation stay
    past_the_end = ids[0].tolist() + [proc.tokenizer.max_id + 1, 999]  # a model's padding rows, as transformers
    assert proc.decode(past_the_end) == tok.decode(past_the_end) == proc.decode(ids[0])


def test_check_model(tiny_processor_dir, tiny_config):
    import dataclasses

    proc = load_processor(tiny_processor_dir)
    proc.check_model(tiny_config)
    small = dataclasses.replace(tiny_config, text_config=dataclasses.replace(
        tiny_config.text_config, vocab_size=proc.tokenizer.max_id))
    with pytest.raises(ProcessorError, match=f"ids up to {proc.tokenizer.max_id}, but the model embeds only"):
        proc.check_model(small)
    swapped = dataclasses.replace(tiny_config, image_token_id=12, video_token_id=9)
    with pytest.raises(ProcessorError, match="config image_token_id=12, tokenizer <\\|image\\|>=9"):
        proc.check_model(swapped)
