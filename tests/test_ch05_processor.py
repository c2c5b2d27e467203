"""Chapter 05: tokens and the chat format. Rendering by hand, ids and pixels against transformers' Glm4vProcessor."""

from __future__ import annotations

import json

import pytest
import torch
from oracle import assert_close, noise_photo

from minglm4v.chat import render_chat, render_with_template, split_thinking
from minglm4v.errors import MessageError, ProcessorError, TokenizerError
from minglm4v.processor import ImageProcessorConfig, load_processor


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

@pytest.fixture(scope="module")
def hf_processor(tiny_processor_dir):
    import transformers

    class NoVideoProcessor(transformers.Glm4vProcessor):  # torchvision (needed by the video processor) is absent
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    tok = transformers.AutoTokenizer.from_pretrained(tiny_processor_dir)
    return NoVideoProcessor(image_processor=transformers.Glm4vImageProcessorPil(), tokenizer=tok,
                            video_processor=None)


def hf_inputs(hf, texts, images):
    kw = dict(size={"shortest_edge": 12544, "longest_edge": 9633792})
    out = hf(text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt",
             images_kwargs=kw)
    return out


def conversation(n_images, seed, question="What kind of animal is this?"):
    items = [{"type": "image", "image": photo(60 + 37 * k, 90 + 23 * k, seed + k)} for k in range(n_images)]
    return [{"role": "user", "content": items + [{"type": "text", "text": question}]}]


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_ids_and_pixels_match_transformers(tiny_processor_dir, hf_processor, n_images):
    proc = load_processor(tiny_processor_dir)
    conv = conversation(n_images, seed=n_images)
    ours = proc.apply_chat_template(conv)
    images = [it["image"] for it in conv[0]["content"] if it["type"] == "image"]
    ref = hf_inputs(hf_processor, [render_chat(conv)], images)
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == ref["attention_mask"].tolist()
    if n_images:
        assert ours["image_grid_thw"].tolist() == ref["image_grid_thw"].tolist()
        assert_close(ours["pixel_values"], ref["pixel_values"], atol=1e-6, what="pixel_values")
        n_tokens = int((ours["input_ids"] == 9).sum())
        assert n_tokens == int(ours["image_grid_thw"].prod(-1).sum()) // 4
    else:
        assert set(ours) == {"input_ids", "attention_mask"}


def test_left_padded_batch_matches_transformers(tiny_processor_dir, hf_processor):
    proc = load_processor(tiny_processor_dir)
    convs = [conversation(1, seed=10, question="Hi"), conversation(2, seed=20, question="Describe the image.")]
    ours = proc.apply_chat_template(convs)
    images = [it["image"] for c in convs for it in c[0]["content"] if it["type"] == "image"]
    ref = hf_inputs(hf_processor, [render_chat(c) for c in convs], images)
    assert ours["input_ids"].tolist() == ref["input_ids"].tolist()
    assert ours["attention_mask"].tolist() == ref["attention_mask"].tolist()
    assert ours["attention_mask"][0, 0] == 0 and ours["attention_mask"][:, -1].tolist() == [1, 1]  # left padding
    assert_close(ours["pixel_values"], ref["pixel_values"], atol=1e-6, what="pixel_values")


def test_images_by_path(tiny_processor_dir, data_dir):
    proc = load_processor(tiny_processor_dir)
    by_path = proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": str(data_dir / "cat.png")},
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

def test_placeholder_count_must_match_images(tiny_processor_dir):
    proc = load_processor(tiny_processor_dir)
    conv = [{"role": "user", "content": [{"type": "image", "image": photo(50, 50, 0)},
                                         {"type": "text", "text": "and <|image|> again"}]}]
    with pytest.raises(ProcessorError, match="2 <\\|image\\|> placeholders but 1 images"):
        proc.apply_chat_template(conv)


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
