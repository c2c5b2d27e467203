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
])
def test_bad_settings_fail_clearly(setup, kw, error, message):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    with pytest.raises(error, match=message):
        generate(ours, **inputs, **{"max_new_tokens": 4, **kw})


# ---------------------------------------------------------------------- called as transformers is

def test_every_processor_key_and_the_sampling_keywords(setup):
    """model.generate(**inputs, max_new_tokens=..., do_sample=True, temperature=1.0), inputs holding every key
    transformers' Glm4vProcessor returns (mm_token_type_ids included)."""
    ours, hf, proc = setup
    inputs = dict(proc.apply_chat_template(CASES["image_batch"]))
    inputs["mm_token_type_ids"] = mm_types(inputs["input_ids"])
    out = ours.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=1.0, seed=5, eos_token_id=[999])
    again = ours.generate(**inputs, max_new_tokens=6, do_sample=True, temperature=1.0, seed=5, eos_token_id=[999])
    L = inputs["input_ids"].shape[1]
    assert out.shape == (2, L + 6) and torch.equal(out, again) and torch.equal(out[:, :L], inputs["input_ids"])
    greedy = ours.generate(**inputs, max_new_tokens=NEW, eos_token_id=[999], pad_token_id=0)
    with torch.no_grad():
        want = hf.generate(**inputs, max_new_tokens=NEW, do_sample=False, eos_token_id=[999], pad_token_id=0)
    assert greedy.tolist() == want.tolist()


@pytest.mark.parametrize("case", ["text", "image_batch"])
def test_without_cache_the_same_greedy_tokens(setup, case):
    ours, hf, proc = setup
    inputs = proc.apply_chat_template(CASES[case])
    kw = {"eos_token_id": [999], "pad_token_id": 0}
    lengths = []
    handle = ours.language_model.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[1]))
    try:
        got = ours.generate(**inputs, max_new_tokens=12, use_cache=False, **kw)
    finally:
        handle.remove()
    L = inputs["input_ids"].shape[1]
    assert lengths == list(range(L, L + 12))  # every step runs the whole sequence again
    assert got.tolist() == ours.generate(**inputs, max_new_tokens=12, **kw).tolist()
    with torch.no_grad():
        want = hf_generate(hf, inputs, use_cache=False, **kw)
    assert got.tolist() == want[:, :L + 12].tolist()


def test_return_dict_in_generate_holds_sequences_scores_and_logits(setup):
    ours, hf, proc = setup
    inputs = proc.apply_chat_template(CASES["image"])
    kw = dict(eos_token_id=[999], pad_token_id=0, repetition_penalty=1.3)
    got = ours.generate(**inputs, max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, **kw)
    extra = {"mm_token_type_ids": mm_types(inputs["input_ids"])}
    with torch.no_grad():
        want = hf.generate(**inputs, **extra, max_new_tokens=8, do_sample=False, return_dict_in_generate=True,
                           output_scores=True, output_logits=True, **kw)
    assert got.sequences.tolist() == want.sequences.tolist()
    assert len(got.scores) == len(got.logits) == len(want.scores) == 8
    for mine, theirs in zip(got.scores + got.logits, want.scores + want.logits):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs.float(), atol=1e-4, rtol=0)
    plain = ours.generate(**inputs, max_new_tokens=8, return_dict_in_generate=True, **kw)
    assert plain.scores is None and plain.logits is None and torch.equal(plain.sequences, got.sequences)


def test_past_the_context_stops_there_with_a_warning(setup):
    ours, _, _ = setup
    context = ours.config.text_config.max_position_embeddings
    ids = torch.randint(13, 300, (1, context - 5), generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=f"max_new_tokens=100 goes past .*{context} positions.* at most 5 new"):
        out = ours.generate(ids, max_new_tokens=100, eos_token_id=[999])
    assert out.shape == (1, context)
    with pytest.raises(GenerationError, match="context"):  # a prompt that fills the context leaves no room
        ours.generate(torch.randint(13, 300, (1, context)), max_new_tokens=1)


def test_max_length_counts_the_prompt(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    L = inputs["input_ids"].shape[1]
    a = ours.generate(**inputs, max_length=L + 5, eos_token_id=[999])
    assert torch.equal(a, ours.generate(**inputs, max_new_tokens=5, eos_token_id=[999])) and a.shape[1] == L + 5
    with pytest.raises(GenerationError, match="max_length=3 counts the prompt"):
        ours.generate(**inputs, max_length=3)
    with pytest.raises(GenerationError, match="both max_new_tokens and max_length"):
        ours.generate(**inputs, max_length=L + 5, max_new_tokens=5)


@pytest.mark.parametrize("kw, message", [
    (dict(foo=1), "keyword 'foo'.*Accepted: input_ids, attention_mask, pixel_values"),
    (dict(streamer=object()), "'streamer'.*stream\\(model, processor, inputs\\)"),
    (dict(generation_config=object()), "'generation_config'.*as keywords"),
    (dict(output_attentions=True), "'output_attentions'"),
    (dict(num_beams=4), "num_beams=4 is not built"),
    (dict(num_return_sequences=2), "num_return_sequences=2"),
    (dict(use_cache="no"), "use_cache must be True or False"),
])
def test_unknown_or_unbuilt_keywords_are_refused_by_name(setup, kw, message):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    with pytest.raises(GenerationError, match=message):
        ours.generate(**inputs, max_new_tokens=2, **kw)


def test_transformers_defaults_and_none_are_accepted(setup):
    ours, _, proc = setup
    inputs = proc.apply_chat_template(conv("Hi"))
    plain = ours.generate(**inputs, max_new_tokens=4, eos_token_id=[999])
    same = ours.generate(**inputs, max_new_tokens=4, eos_token_id=[999], num_beams=1, num_return_sequences=1,
                         use_cache=True, do_sample=False, top_k=None, top_p=None, temperature=None, min_p=None)
    assert torch.equal(plain, same)
