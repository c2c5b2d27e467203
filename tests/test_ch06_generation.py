"""Chapter 06: generation with a KV cache. Greedy tokens equal transformers' generate, token for token."""

from __future__ import annotations

import pytest
import torch
from oracle import noise_photo

import minglm4v
from minglm4v.errors import GenerationError, SamplingError
from minglm4v.generation import generate, stream
from minglm4v.processor import load_processor

NEW = 32


photo = noise_photo


def conv(question, images=()):
    return [{"role": "user", "content": [{"type": "image", "image": im} for im in images]
             + [{"type": "text", "text": question}]}]


def mm_types(ids, image_id=9):
    return (ids == image_id).long()  # 1 for image placeholders (no video here)


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tiny_processor_dir):
    folder, hf = tiny_checkpoint
    return minglm4v.load(folder), hf, load_processor(tiny_processor_dir)


def hf_generate(hf, inputs, **kw):
    extra = {"mm_token_type_ids": mm_types(inputs["input_ids"])} if "pixel_values" in inputs else {}
    return hf.generate(**{**inputs, **extra}, max_new_tokens=NEW, do_sample=False, **kw)


CASES = {
    "text": [conv("Which way does the ball move?")],
    "image": [conv("What kind of animal is this?", [photo(70, 100, 1)])],
    "text_batch": [conv("Hi"), conv("How many shapes are there? One, two, three.")],
    "image_batch": [conv("Describe the image.", [photo(60, 90, 2)]),
                    conv("Is there a red square left of the blue circle?", [photo(100, 60, 3), photo(56, 56, 4)])],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("stops", ["none", "default"])
def test_greedy_tokens_equal_transformers(setup, case, stops):
    ours, hf, proc = setup
    inputs = proc.apply_chat_template(CASES[case])
    # "none": a stop id that never wins, so all 32 tokens are compared; "default": the config's (0, 1)
    kw = {"eos_token_id": [999], "pad_token_id": 0} if stops == "none" else {"eos_token_id": [0, 1], "pad_token_id": 0}
    got = ours.generate(**inputs, max_new_tokens=NEW, **kw)
    with torch.no_grad():
        want = hf_generate(hf, inputs, **kw)
    assert got.tolist() == want.tolist()
    if stops == "none":
        assert got.shape[1] == inputs["input_ids"].shape[1] + NEW


def test_decode_never_recomputes_the_prefix(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("What kind of animal is this?", [photo(70, 100, 1)]))
    lengths = []
    handle = ours.language_model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    try:
        out = ours.generate(**inputs, max_new_tokens=10, eos_token_id=[999])
    finally:
        handle.remove()
    L = inputs["input_ids"].shape[1]
    assert lengths == [L] + [1] * 9  # one prefill of the prompt, then one token per step
    assert out.shape == (1, L + 10)


def test_cached_logits_equal_full_recompute(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template([conv("Hi", [photo(60, 90, 2)]), conv("Describe the image in one sentence.")])
    out = ours.generate(**inputs, max_new_tokens=6, eos_token_id=[999])
    mask = torch.cat([inputs["attention_mask"], torch.ones(2, 6, dtype=torch.long)], 1)
    full = ours(out, attention_mask=mask, pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"])  # (B, L+6, V) without any cache
    L = inputs["input_ids"].shape[1]
    assert torch.equal(full[:, L - 1:-1].argmax(-1), out[:, L:])  # every greedy step agrees with the recompute


def test_streaming_pieces_add_up_to_the_decoded_answer(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("What kind of animal is this?"))
    pieces = list(stream(ours, proc, inputs, max_new_tokens=20, eos_token_id=[999]))
    out = ours.generate(**inputs, max_new_tokens=20, eos_token_id=[999])
    assert "".join(pieces) == proc.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(pieces) > 1


def test_sampling_is_seeded(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    kw = dict(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, eos_token_id=[999])
    a, b = ours.generate(**inputs, seed=3, **kw), ours.generate(**inputs, seed=3, **kw)
    c = ours.generate(**inputs, seed=4, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_repetition_penalty_changes_greedy_output(setup):
    ours, hf, proc = setup
    inputs = proc.apply_chat_template(conv("How many shapes are there?"))
    got = ours.generate(**inputs, max_new_tokens=NEW, repetition_penalty=1.5, eos_token_id=[999], pad_token_id=0)
    with torch.no_grad():
        want = hf_generate(hf, inputs, repetition_penalty=1.5, eos_token_id=[999], pad_token_id=0)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("kw, error, message", [
    (dict(max_new_tokens=0), GenerationError, "max_new_tokens"),
    (dict(max_new_tokens=-3), GenerationError, "max_new_tokens"),
    (dict(eos_token_id=[5000]), GenerationError, "stop ids"),
    (dict(temperature=-0.5, do_sample=True), SamplingError, "temperature"),
    (dict(top_p=0.0, do_sample=True), SamplingError, "top_p"),
    (dict(top_k=-1, do_sample=True), SamplingError, "top_k"),
    (dict(max_new_tokens=5000), GenerationError, "context"),
])
def test_bad_settings_fail_clearly(setup, kw, error, message):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    with pytest.raises(error, match=message):
        generate(ours, **inputs, **{"max_new_tokens": 4, **kw})
