"""Bad input to the model and to generation (issue items on ids, token types, pixels, sampling and integers).

Every case must end in one minglm4v error (a ValueError) whose message says what was wrong: never a raw IndexError,
AttributeError, RuntimeError or OverflowError from inside torch, and never a silent wrong result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minglm4v
from minglm4v.errors import GenerationError, InputError, MinGlmError, SamplingError, VisionInputError
from minglm4v.fast import generate_static
from minglm4v.generation import generate_steps

IDS = torch.tensor([[4, 5, 1, 20, 2]])
IMAGE_IDS = torch.tensor([[4, 5, 1, 7, 9, 9, 8, 20]])  # two image placeholders (id 9) between 7 and 8
VIDEO_IDS = torch.tensor([[4, 5, 10, 7, 9, 9, 8, 11, 20]])  # the same inside <|begin_of_video|> 10 ... 11


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return minglm4v.load(tiny_checkpoint[0])


def image_inputs(seed=0):
    """Pixels and grid for one 2 x 4-patch image: 8 patch rows, 2 merged tokens (IMAGE_IDS has 2 placeholders)."""
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(8, 1176, generator=g), "image_grid_thw": torch.tensor([[1, 2, 4]])}


def fails(fn, error, *needles):
    with pytest.raises(error) as info:
        fn()
    assert isinstance(info.value, MinGlmError) and isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    return str(info.value)


# ---------------------------------------------------------------------- token ids

BAD_IDS = {
    "out of the vocabulary": (torch.tensor([[4, 5, 1000, 2]]), ["outside this model's vocabulary [0, 1000)", "1000"]),
    "negative": (torch.tensor([[4, -1, 2]]), ["outside", "-1", "(row, position) [[0, 1]]"]),
    "float": (torch.tensor([[4.0, 5.0, 2.0]]), ["dtype torch.float32", "integers"]),
    "bool": (torch.tensor([[True, False]]), ["dtype torch.bool"]),
    "nested list": ([[4, 5, 2]], ["torch tensor", "got list"]),
    "numpy array": (np.array([[4, 5, 2]]), ["torch tensor", "got ndarray"]),
    "one dimension": (torch.tensor([4, 5, 2]), ["(batch, length)", "input_ids[None]"]),
    "missing": (None, ["input_ids is missing"]),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_bad_ids_in_generate_and_forward(model, case):
    ids, needles = BAD_IDS[case]
    fails(lambda: model.generate(ids, max_new_tokens=2), InputError, *needles)
    fails(lambda: list(generate_steps(model, ids, max_new_tokens=2)), InputError, *needles)
    fails(lambda: generate_static(model, ids, max_new_tokens=2), InputError, *needles)
    if ids is not None:
        fails(lambda: model(ids), InputError, *needles)


def test_other_integer_dtypes_are_ids(model):
    want = model.generate(IDS, max_new_tokens=3, eos_token_id=[999])
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(model.generate(IDS.to(dtype), max_new_tokens=3, eos_token_id=[999]), want)


def test_mask_that_is_not_a_tensor(model):
    fails(lambda: model.generate(IDS, attention_mask=[[1, 1, 1, 1, 1]], max_new_tokens=2), MinGlmError,
          "attention_mask must be a torch tensor", "got list")


# ---------------------------------------------------------------------- mm_token_type_ids

def test_token_types_that_agree_are_accepted(model):
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 0, 0]])
    with_types = model.generate(IMAGE_IDS, mm_token_type_ids=types, max_new_tokens=3, eos_token_id=[999],
                                **image_inputs())
    assert torch.equal(with_types, model.generate(IMAGE_IDS, max_new_tokens=3, eos_token_id=[999],
                                                  **image_inputs()))
    logits = model(IMAGE_IDS, mm_token_type_ids=types, **image_inputs())
    assert torch.equal(logits, model(IMAGE_IDS, **image_inputs()))


BAD_TYPES = {
    "image placeholder typed as text": (IMAGE_IDS, [[0, 0, 0, 0, 0, 1, 0, 0]],
                                        ["mm_token_type_ids[0, 4] = 0 (text)", "input_ids there is 9",
                                         "image placeholder token"]),
    "text typed as image": (IMAGE_IDS, [[0, 1, 0, 0, 1, 1, 0, 0]], ["mm_token_type_ids[0, 1] = 1", "a text token"]),
    "video placeholder typed as image": (VIDEO_IDS, [[0, 0, 0, 0, 1, 1, 0, 0, 0]],
                                         ["mm_token_type_ids[0, 4] = 1", "video placeholder token"]),
    "not a type": (IMAGE_IDS, [[0, 0, 0, 0, 3, 1, 0, 0]], ["= 3 (not a type)"]),
}


@pytest.mark.parametrize("case", list(BAD_TYPES))
def test_token_types_that_disagree_with_the_ids(model, case):
    ids, types, needles = BAD_TYPES[case]
    fails(lambda: model.generate(ids, mm_token_type_ids=torch.tensor(types), max_new_tokens=2), InputError,
          *needles)


@pytest.mark.parametrize("types, needle", [
    ([[0, 0, 0, 0, 1, 1, 0, 0]], "must be a torch tensor"),
    (torch.zeros(1, 3, dtype=torch.long), "of input_ids' shape (1, 8)"),
    (torch.zeros(1, 8), "integer tensor"),
])
def test_token_types_of_the_wrong_kind(model, types, needle):
    fails(lambda: model.generate(IMAGE_IDS, mm_token_type_ids=types, max_new_tokens=2, **image_inputs()),
          InputError, needle)


# ---------------------------------------------------------------------- pixels

def test_nan_pixels_are_blamed_on_the_pixels(model):
    inputs = image_inputs()
    inputs["pixel_values"][3, 7] = float("nan")
    message = fails(lambda: model.generate(IMAGE_IDS, max_new_tokens=2, **inputs), VisionInputError,
                    "pixel_values holds 1 NaN and 0 inf values", "row 3", "pixels themselves")
    assert "float16" not in message  # the dtype advice is for NaN logits from finite inputs
    fails(lambda: model(IMAGE_IDS, **inputs), VisionInputError, "1 NaN")


def test_pixels_of_the_wrong_kind(model):
    inputs = image_inputs()
    fails(lambda: model.generate(IMAGE_IDS, max_new_tokens=2, pixel_values=inputs["pixel_values"].numpy(),
                                 image_grid_thw=inputs["image_grid_thw"]), VisionInputError, "2-D tensor")
    fails(lambda: model.generate(IMAGE_IDS, max_new_tokens=2, pixel_values=torch.zeros(8, 1176, dtype=torch.uint8),
                                 image_grid_thw=inputs["image_grid_thw"]), VisionInputError, "floating point")


def test_a_huge_grid_is_refused_before_anything_is_allocated(model):
    px = torch.zeros(8, 1176)
    fails(lambda: model.generate(VIDEO_IDS, pixel_values_videos=px, video_grid_thw=[[10**9, 2, 4]],
                                 max_new_tokens=2), VisionInputError, "8 rows", "1000000000")
    # positions alone (no pixels): the grid names more temporal patches than the prompt has tokens
    fails(lambda: model.position_ids(VIDEO_IDS, video_grid_thw=torch.tensor([[10**9, 2, 4]])), InputError,
          "placeholder runs", "9 tokens")


# ---------------------------------------------------------------------- sampling settings that overflow

def test_a_temperature_too_small_for_float32(model):
    fails(lambda: model.generate(IDS, do_sample=True, temperature=1e-300, max_new_tokens=2), SamplingError,
          "temperature=1e-300", "float32")
    # representable in float32, but logits / 1e-40 leave its range: found when the logits are seen
    for run in (lambda: model.generate(IDS, do_sample=True, temperature=1e-40, max_new_tokens=2),
                lambda: generate_static(model, IDS, do_sample=True, temperature=1e-40, max_new_tokens=2)):
        fails(run, SamplingError, "temperature=1e-40", "overflows float32", "do_sample=False")


def test_a_small_temperature_that_fits_still_samples(model):
    out = model.generate(IDS, do_sample=True, temperature=1e-3, seed=0, max_new_tokens=3, eos_token_id=[999])
    assert torch.equal(out, model.generate(IDS, max_new_tokens=3, eos_token_id=[999]))  # ~ greedy


# ---------------------------------------------------------------------- integers

@pytest.mark.parametrize("value", [np.int64(3), np.int32(3), torch.tensor(3), 3])
def test_integer_scalars_of_numpy_and_torch(model, value):
    out = model.generate(IDS, max_new_tokens=value, eos_token_id=[999], do_sample=True, seed=value, top_k=value)
    assert out.shape == (1, IDS.shape[1] + 3)


@pytest.mark.parametrize("kw, error, needles", [
    (dict(max_new_tokens=3.0), GenerationError, ["max_new_tokens=3.0 must be an integer"]),
    (dict(max_new_tokens=True), GenerationError, ["max_new_tokens=True", "a bool"]),
    (dict(max_new_tokens=torch.tensor(3.0)), GenerationError, ["max_new_tokens=", "torch.float32"]),
    (dict(max_new_tokens="3"), GenerationError, ["max_new_tokens='3'"]),
    (dict(seed=2**70), GenerationError, [f"seed={2**70} is too large", "2**64"]),
    (dict(seed=-1), GenerationError, ["seed=-1 must be >= 0"]),
    (dict(seed=1.5), GenerationError, ["seed=1.5 must be an integer"]),
    (dict(seed=np.float64(2.0)), GenerationError, ["seed=np.float64(2.0) must be an integer"]),
    (dict(eos_token_id=True), GenerationError, ["eos_token_id=True", "a bool"]),
    (dict(eos_token_id=[0, False]), GenerationError, ["eos_token_id entry=False"]),
    (dict(eos_token_id=2.0), GenerationError, ["eos_token_id=2.0"]),
    (dict(pad_token_id=True), GenerationError, ["pad_token_id=True"]),
    (dict(top_k=np.float32(2.0), do_sample=True), SamplingError, ["top_k=np.float32(2.0) must be an integer"]),
    (dict(temperature=10**400, do_sample=True), SamplingError, ["temperature="]),
    (dict(repetition_penalty=1e300), SamplingError, ["repetition_penalty=1e+300", "float32"]),
])
def test_non_integers_and_out_of_range_values(model, kw, error, needles):
    fails(lambda: model.generate(IDS, **{"max_new_tokens": 2, **kw}), error, *needles)


def test_numpy_ids_and_numbers_in_stop_lists(model):
    stop = int(model.generate(IDS, max_new_tokens=3, eos_token_id=[999])[0, -1])
    for eos in (np.int64(stop), [np.int64(stop)], torch.tensor([stop]), (stop,)):
        out = model.generate(IDS, max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
        assert int(out[0, -1]) == stop and out.shape[1] <= IDS.shape[1] + 3
    out = model.generate(IDS, max_new_tokens=2, do_sample=True, temperature=np.float32(0.7), top_p=np.float64(0.9),
                         seed=1, eos_token_id=[999])
    assert out.shape == (1, IDS.shape[1] + 2)
