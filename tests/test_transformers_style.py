"""Chapter 06 (using the model): transformers' documented GLM-4.1V snippets run on minglm4v as written.

The snippets below are copied verbatim from transformers' model page for GLM-4.1V, `docs/source/en/model_doc/glm4v.md`
in huggingface/transformers (main branch, commit 021f228029d13b48e60f9e2e2711dd654d167250; rendered at
https://huggingface.co/docs/transformers/main/model_doc/glm4v), and the pipeline snippet of the v4.53.0 page
(https://huggingface.co/docs/transformers/v4.53.0/model_doc/glm4v), which passes device= and torch_dtype=.
`run_snippet` changes only what the test must: the `from transformers import ...` line, the Hub id (the shipped tiny
checkpoint data/tiny-glm4v instead), the remote image/video URL (a file:// URL of data/scene.png or data/shapes.mp4:
CI has no network) and the question (one the tiny model was trained to answer, TinyVQA); each change is asserted to
happen, so a snippet that drifts fails here. Answers are checked by hand (data/scene.png: the triangle is yellow) and
against transformers' own pipeline on the same checkpoint.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import minglm4v
from minglm4v.auto import AutoProcessor
from minglm4v.errors import DeviceError, LoadArgumentError
from minglm4v.model import Glm4vForConditionalGeneration
from minglm4v.pipelines import pipeline
from minglm4v.processor import load_processor
from minglm4v.resources import data_dir

TINY = data_dir() / "tiny-glm4v"
SCENE, CLIP = data_dir() / "scene.png", data_dir() / "shapes.mp4"
IMPORT_LINE = "from minglm4v import AutoProcessor, Glm4vForConditionalGeneration"
DIRECTIONS = ("left", "right", "up", "down")

# ---- transformers' docs, verbatim ------------------------------------------------------------------------------

PIPELINE_SNIPPET = '''\
import torch
from transformers import pipeline

pipe = pipeline(
    task="image-text-to-text",
    model="THUDM/GLM-4.1V-9B-Thinking",
)
messages = [
    {
        "role": "user",
        "content": [
            {
                "type": "image",
                "url": "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/pipeline-cat-chonk.jpeg",
            },
            {"type": "text", "text": "Describe this image."},
        ]
    }
]
pipe(text=messages, max_new_tokens=20, return_full_text=False)
'''

PIPELINE_SNIPPET_V4_53 = '''\
import torch
from transformers import pipeline
pipe = pipeline(
    task="image-text-to-text",
    model="THUDM/GLM-4.1V-9B-Thinking",
    device=0,
    torch_dtype=torch.bfloat16
)
messages = [
    {
        "role": "user",
        "content": [
            {
                "type": "image",
                "url": "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/pipeline-cat-chonk.jpeg",
            },
            { "type": "text", "text": "Describe this image."},
        ]
    }
]
pipe(text=messages,max_new_tokens=20, return_full_text=False)
'''

IMAGE_SNIPPET = '''\
import torch
from transformers import Glm4vForConditionalGeneration, AutoProcessor

model = Glm4vForConditionalGeneration.from_pretrained(
    "THUDM/GLM-4.1V-9B-Thinking",
    device_map="auto",
    attn_implementation="sdpa"
)
processor = AutoProcessor.from_pretrained("THUDM/GLM-4.1V-9B-Thinking")
messages = [
    {
        "role": "user",
        "content": [
            {
                "type": "image",
                "url": "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/pipeline-cat-chonk.jpeg"
            },
            {
                "type": "text",
                "text": "Describe this image."
            }
        ]
    }

]

inputs = processor.apply_chat_template(
    messages,
    add_generation_prompt=True,
    tokenize=True,
    return_dict=True,
    return_tensors="pt"
).to(model.device)

generated_ids = model.generate(**inputs, max_new_tokens=128)
generated_ids_trimmed = [
    out_ids[len(in_ids):] for in_ids, out_ids in zip(inputs.input_ids, generated_ids)
]
output_text = processor.batch_decode(
    generated_ids_trimmed, skip_special_tokens=True, clean_up_tokenization_spaces=False
)
print(output_text)
'''

VIDEO_SNIPPET = '''\
from transformers import AutoProcessor, Glm4vForConditionalGeneration
import torch


processor = AutoProcessor.from_pretrained("THUDM/GLM-4.1V-9B-Thinking")
model = Glm4vForConditionalGeneration.from_pretrained(
    pretrained_model_name_or_path="THUDM/GLM-4.1V-9B-Thinking",
    device_map="auto"
)

messages = [
    {
        "role": "user",
        "content": [
            {
                "type": "video",
                "url": "https://test-videos.co.uk/vids/bigbuckbunny/mp4/h264/720/Big_Buck_Bunny_720_10s_10MB.mp4",
            },
            {
                "type": "text",
                "text": "discribe this video",
            },
        ],
    }
]
inputs = processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True,
                                       return_tensors="pt", padding=True).to(model.device)
generated_ids = model.generate(**inputs, max_new_tokens=1024, do_sample=True, temperature=1.0)
output_text = processor.decode(generated_ids[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(output_text)
'''

IMAGE_URL = "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/pipeline-cat-chonk.jpeg"
VIDEO_URL = "https://test-videos.co.uk/vids/bigbuckbunny/mp4/h264/720/Big_Buck_Bunny_720_10s_10MB.mp4"
IMAGE_QUESTION, VIDEO_QUESTION = "What colour is the triangle?", "Which way does the red square move?"


def adapt(snippet: str, extra: dict | None = None) -> str:
    """The snippet with only the import line, the model id, the URLs and the question changed (each must occur)."""
    changes = {"from transformers import Glm4vForConditionalGeneration, AutoProcessor": IMPORT_LINE,
               "from transformers import AutoProcessor, Glm4vForConditionalGeneration": IMPORT_LINE,
               "from transformers import pipeline": "from minglm4v import pipeline",
               '"THUDM/GLM-4.1V-9B-Thinking"': repr(str(TINY)),
               IMAGE_URL: SCENE.as_uri(), VIDEO_URL: CLIP.as_uri(),
               "Describe this image.": IMAGE_QUESTION, "discribe this video": VIDEO_QUESTION, **(extra or {})}
    out, used = snippet, 0
    for old, new in changes.items():
        used += old in out
        out = out.replace(old, new)
    assert used >= 4 and "transformers" not in out and "https://" not in out and "THUDM" not in out
    return out


def run_snippet(snippet: str) -> dict:
    """exec the snippet; a final bare expression (the pipeline call) is evaluated and returned as "_"."""
    *body, last = snippet.rstrip().splitlines()
    scope: dict = {}
    if last.startswith(" ") or "=" in last.split("(")[0]:
        exec(compile(snippet, "<snippet>", "exec"), scope)
    else:
        exec(compile("\n".join(body), "<snippet>", "exec"), scope)
        scope["_"] = eval(compile(last, "<snippet>", "eval"), scope)
    return scope


def expected_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


# ---- the snippets ----------------------------------------------------------------------------------------------

def test_image_snippet(capsys):
    scope = run_snippet(adapt(IMAGE_SNIPPET))
    assert scope["output_text"] == ["yellow"]
    assert capsys.readouterr().out == "['yellow']\n"
    assert scope["model"].device.type == expected_device().type and scope["model"].dtype == torch.float32


def test_video_snippet_samples_a_well_formed_seeded_answer(capsys):
    plain = load_processor(TINY).apply_chat_template([{"role": "user", "content": [
        {"type": "video", "video": str(CLIP)}, {"type": "text", "text": VIDEO_QUESTION}]}])
    texts = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scope = run_snippet(adapt(VIDEO_SNIPPET))
        assert all("context" in str(w.message) for w in caught), [str(w.message) for w in caught]
        texts.append(scope["output_text"])
        assert torch.equal(scope["inputs"]["video_grid_thw"], plain["video_grid_thw"])  # the file:// URL read the clip
    assert texts[0] == texts[1]  # seeded: the same draw twice
    assert all(t in DIRECTIONS for t in texts), texts  # an answer from the task's vocabulary, nothing else
    assert capsys.readouterr().out == "".join(t + "\n" for t in texts)


@pytest.mark.parametrize("snippet", [PIPELINE_SNIPPET, PIPELINE_SNIPPET_V4_53], ids=["main", "v4.53"])
def test_pipeline_snippet(snippet):
    extra = {} if torch.cuda.is_available() else {"device=0,": 'device="cpu",'}  # device 0 is a CUDA GPU
    scope = run_snippet(adapt(snippet, extra))
    assert scope["_"] == [{"input_text": scope["messages"], "generated_text": "yellow"}]
    if "torch_dtype" in snippet:
        assert scope["pipe"].model.dtype == torch.bfloat16


# ---- against transformers' own pipeline --------------------------------------------------------------------------

def conversation(question, media=SCENE):
    return [{"role": "user", "content": [{"type": "image", "url": str(media)}, {"type": "text", "text": question}]}]


@pytest.fixture(scope="module")
def hf_pipe():
    import transformers

    class NoVideoProcessor(transformers.Glm4vProcessor):  # torchvision (needed by the video processor) is absent
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    processor = NoVideoProcessor(image_processor=transformers.Glm4vImageProcessorPil.from_pretrained(TINY),
                                 tokenizer=transformers.AutoTokenizer.from_pretrained(TINY), video_processor=None,
                                 chat_template=(TINY / "chat_template.jinja").read_text())
    model = transformers.Glm4vForConditionalGeneration.from_pretrained(TINY)
    return transformers.pipeline(task="image-text-to-text", model=model, processor=processor, device="cpu")


@pytest.fixture(scope="module")
def pipe():
    return pipeline(task="image-text-to-text", model=str(TINY), device="cpu", torch_dtype=torch.float32)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside transformers' processor
@pytest.mark.parametrize("full", [False, True])
def test_pipeline_output_equals_transformers(pipe, hf_pipe, full):
    one = conversation("How many shapes are there?")
    batch = [one, conversation("What colour is the triangle?"), conversation("Is there a green square?")]
    for text in (one, batch):
        ours = pipe(text=text, max_new_tokens=20, return_full_text=full)
        assert ours == hf_pipe(text=text, max_new_tokens=20, return_full_text=full)
    answers = [r[0]["generated_text"] for r in ours]
    if full:
        assert answers[1] == [*batch[1], {"role": "assistant", "content": "yellow"}]
        answers = [a[-1]["content"] for a in answers]
    assert answers == ["3", "yellow", "no"]


def test_pipeline_tensors_and_positional_chat(pipe):
    chat = conversation("What colour is the triangle?")
    (record,) = pipe(chat, max_new_tokens=4, return_tensors=True)
    ids, prompt = record["generated_token_ids"], pipe.processor.apply_chat_template(chat)["input_ids"][0]
    assert record["input_text"] == chat and ids.ndim == 1 and torch.equal(ids[:len(prompt)], prompt)
    assert pipe.processor.decode(ids[len(prompt):], skip_special_tokens=True) == "yellow"


def test_pipeline_refuses_what_it_cannot_do(pipe):
    chat = conversation("What colour is the triangle?")
    with pytest.raises(LoadArgumentError, match="image-text-to-text"):
        pipeline(task="text-generation", model=str(TINY))
    with pytest.raises(LoadArgumentError, match="device= or device_map="):
        pipeline(model=str(TINY), device="cpu", device_map="cpu")
    with pytest.raises(LoadArgumentError, match="processor="):
        pipeline(model=minglm4v.load(TINY))
    with pytest.raises(LoadArgumentError, match="batch_size"):
        pipeline(model=str(TINY), batch_size=8)
    with pytest.raises(LoadArgumentError, match="inside the conversation"):
        pipe(images=str(SCENE), text=chat)
    with pytest.raises(LoadArgumentError, match="conversation"):
        pipe(text="What colour is the triangle?")
    with pytest.raises(LoadArgumentError, match="twice"):
        pipe(text=chat, max_new_tokens=2, generate_kwargs={"max_new_tokens": 3})
    with pytest.raises(LoadArgumentError, match="prefill"):
        pipe(text=chat + [{"role": "assistant", "content": "yel"}])


def test_pipeline_checks_that_processor_and_model_belong_together():
    from minglm4v.train import tiny_vqa_config
    from minglm4v.weights import build

    small = build(tiny_vqa_config(vocab_size=64), "cpu")  # the TinyVQA tokenizer has 379 tokens
    with pytest.raises(minglm4v.MinGlmError, match="vocab"):
        pipeline(model=small, processor=AutoProcessor.from_pretrained(TINY))


# ---- from_pretrained's keywords ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    minglm4v.save(minglm4v.load(TINY, dtype=torch.bfloat16), folder)
    return folder


def test_dtype_auto_keeps_the_stored_dtype_and_both_spellings_work(bf16_checkpoint):
    short = minglm4v.load(TINY)
    for kwargs, expected in (({}, torch.bfloat16), ({"dtype": "auto"}, torch.bfloat16),
                             ({"torch_dtype": "auto"}, torch.bfloat16), ({"torch_dtype": torch.float32}, torch.float32),
                             ({"dtype": "float32"}, torch.float32), ({"dtype": torch.float32,
                                                                       "torch_dtype": torch.float32}, torch.float32)):
        model = Glm4vForConditionalGeneration.from_pretrained(bf16_checkpoint, **kwargs)
        assert {p.dtype for p in model.parameters()} == {expected}, kwargs
    model = Glm4vForConditionalGeneration.from_pretrained(str(TINY), device_map="cpu")
    assert model.device == torch.device("cpu") and not model.training
    for (name, a), b in zip(model.state_dict().items(), short.state_dict().values()):
        assert torch.equal(a, b), name  # the long spelling loads what minglm4v.load loads
    with pytest.raises(LoadArgumentError, match="pass one"):
        Glm4vForConditionalGeneration.from_pretrained(TINY, dtype=torch.float32, torch_dtype=torch.bfloat16)


def test_device_map():
    auto = Glm4vForConditionalGeneration.from_pretrained(TINY, device_map="auto")
    assert auto.device.type == expected_device().type
    for one in ("cpu", torch.device("cpu"), {"": "cpu"}):
        assert Glm4vForConditionalGeneration.from_pretrained(TINY, device_map=one).device == torch.device("cpu")
    spread = [{"model.visual": "cpu", "lm_head": "disk"}, "balanced"]
    if torch.cuda.is_available():
        spread.append({"model.visual": "cpu", "lm_head": 0})
    for where in spread:
        with pytest.raises(DeviceError, match="one device"):
            Glm4vForConditionalGeneration.from_pretrained(TINY, device_map=where)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA"):
            Glm4vForConditionalGeneration.from_pretrained(TINY, device_map="cuda:0")


def test_keywords_are_accepted_only_when_harmless():
    processor = AutoProcessor.from_pretrained(TINY, use_fast=True, trust_remote_code=True)
    assert processor.tokenizer.vocab_size == load_processor(TINY).tokenizer.vocab_size
    Glm4vForConditionalGeneration.from_pretrained(TINY, attn_implementation="sdpa", low_cpu_mem_usage=True,
                                                  trust_remote_code=False)
    for bad, needle in (({"attn_implementation": "flash_attention_2"}, "attn_implementation"),
                        ({"revision": "main"}, "accepted: allow_download, attn_implementation"),
                        ({"use_safetensors": False}, "safetensors only")):
        with pytest.raises(LoadArgumentError, match=needle):
            Glm4vForConditionalGeneration.from_pretrained(TINY, **bad)
    with pytest.raises(LoadArgumentError, match="use_fast"):
        AutoProcessor.from_pretrained(TINY, use_fast=False)
    with pytest.raises(LoadArgumentError, match="accepted: allow_download"):
        AutoProcessor.from_pretrained(TINY, image_size=3)
    with pytest.raises(LoadArgumentError, match="from_pretrained"):
        AutoProcessor()
