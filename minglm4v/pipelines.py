"""transformers' `pipeline("image-text-to-text")` for GLM-4.1V: a processor and a model behind one call.

    pipe = pipeline(task="image-text-to-text", model="data/tiny-glm4v", device="cpu", torch_dtype=torch.float32)
    pipe(text=messages, max_new_tokens=20, return_full_text=False)   # -> [{"input_text": messages,
                                                                      #      "generated_text": "3"}]

Mirrors transformers' `ImageTextToTextPipeline` (transformers/pipelines/image_text_to_text.py) for conversations in
the chat format, which is what GLM-4.1V takes:
  * one conversation -> a list with one record {"input_text": the messages, "generated_text": ...}; a list of
    conversations -> one such list per conversation (a list of lists), each generated on its own (transformers'
    default batch_size=1, so greedy answers are the same as one call per conversation);
  * return_full_text=True (the default): "generated_text" is the conversation plus {"role": "assistant",
    "content": answer}; False: the answer text alone; return_tensors=True: "generated_token_ids", prompt included;
  * the answer is the new tokens decoded with special tokens skipped and no space clean-up (transformers'
    defaults for this pipeline and Glm4vProcessor; `skip_special_tokens=`, `clean_up_tokenization_spaces=` change it);
  * max_new_tokens defaults to 256 as in transformers; other keywords (do_sample, temperature, ...) and
    `generate_kwargs` go to `model.generate`, which refuses the ones it does not know.
When the processor and the model meet, `processor.check_model(config)` checks that they belong together.
Shapes: B batch (1 per call), L prompt length.
"""

from __future__ import annotations

import functools

import torch

from .errors import LoadArgumentError

TASK = "image-text-to-text"
DEFAULT_MAX_NEW_TOKENS = 256  # transformers' ImageTextToTextPipeline default


def _is_chat(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and isinstance(value[0], dict)


def _is_chats(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(_is_chat(c) for c in value)


class ImageTextToTextPipeline:
    """`pipe(text=messages, ...)`: answers a conversation (or a list of them) about its images or video."""

    def __init__(self, model, processor):
        processor.check_model(model.config)  # vocabulary and special ids agree, before the first prompt
        self.model, self.processor, self.task = model, processor, TASK

    @property
    def device(self) -> torch.device:
        return self.model.device

    def __call__(self, images=None, text=None, *, max_new_tokens: int | None = None, return_full_text: bool = True,
                 return_tensors: bool = False, generate_kwargs: dict | None = None, skip_special_tokens: bool = True,
                 clean_up_tokenization_spaces: bool = False, **kwargs):
        if text is None and (_is_chat(images) or _is_chats(images)):  # pipe(messages): the chat given positionally
            images, text = None, images
        if images is not None:
            raise LoadArgumentError("pipeline: pass images inside the conversation's content ({'type': 'image', "
                                    "'url' or 'path' or 'image': ...}), not as a separate images= argument")
        decoding = dict(skip_special_tokens=skip_special_tokens,
                        clean_up_tokenization_spaces=clean_up_tokenization_spaces)
        answer = functools.partial(self._answer, max_new_tokens=max_new_tokens, return_full_text=return_full_text,
                                   return_tensors=return_tensors, generate_kwargs=generate_kwargs, kwargs=kwargs,
                                   decoding=decoding)
        if _is_chat(text):
            return answer(list(text))
        if _is_chats(text):
            return [answer(list(c)) for c in text]
        raise LoadArgumentError(f"pipeline: text= must be a conversation (a list of {{'role', 'content'}} messages) "
                                f"or a list of conversations, got {type(text).__name__}; GLM-4.1V prompts are chats")

    def _answer(self, messages, *, max_new_tokens, return_full_text, return_tensors, generate_kwargs, kwargs,
                decoding) -> list:
        if messages[-1].get("role") == "assistant":
            raise LoadArgumentError("pipeline: the conversation ends with an assistant message; continuing it "
                                    "(prefill) is not supported: end with the user's turn")
        options = dict(generate_kwargs or {})
        twice = set(options) & set(kwargs)
        if "max_new_tokens" in options and max_new_tokens is not None:
            twice.add("max_new_tokens")
        if twice:
            raise LoadArgumentError(f"pipeline: {', '.join(sorted(twice))} given twice, in generate_kwargs and as a "
                                    "keyword; use one")
        options.update(kwargs)
        if max_new_tokens is not None or "max_new_tokens" not in options:
            options["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        inputs = self.processor.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                    return_dict=True, return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, **options)  # (1, L + new)
        sequences = out.sequences if hasattr(out, "sequences") else out
        if return_tensors:
            return [{"input_text": messages, "generated_token_ids": sequences[0]}]
        answer = self.processor.decode(sequences[0, inputs["input_ids"].shape[1]:], **decoding)
        if return_full_text:
            return [{"input_text": messages, "generated_text": [*messages, {"role": "assistant", "content": answer}]}]
        return [{"input_text": messages, "generated_text": answer}]


def pipeline(task: str = TASK, model=None, *, processor=None, device=None, device_map=None, torch_dtype=None,
             dtype=None, model_kwargs: dict | None = None, **kwargs) -> ImageTextToTextPipeline:
    """transformers' `pipeline(task="image-text-to-text", model=..., device=..., torch_dtype=...)`.

    model: a checkpoint folder or Hub id (loaded with Glm4vForConditionalGeneration.from_pretrained), or a loaded
    model (then pass processor= too). device: "cpu", "cuda", "cuda:1", an int (a CUDA index; -1 is the CPU, as in
    transformers) or a torch.device; or device_map= (one device, or "auto"). torch_dtype/dtype: as from_pretrained.
    model_kwargs go to from_pretrained; use_fast/trust_remote_code to both loaders."""
    from .auto import AutoProcessor, model_from_pretrained

    if task != TASK:
        raise LoadArgumentError(f"pipeline(task={task!r}): minglm4v has the {TASK!r} pipeline only")
    if model is None:
        raise LoadArgumentError("pipeline(): pass model=, a checkpoint folder (e.g. the shipped data/tiny-glm4v) "
                                "or a Hub id in the local Hugging Face cache")
    unknown = set(kwargs) - {"use_fast", "trust_remote_code"}
    if unknown:
        raise LoadArgumentError(f"pipeline() got unsupported keyword(s) {', '.join(sorted(unknown))}; accepted: "
                                "task, model, processor, device, device_map, torch_dtype, dtype, model_kwargs, "
                                "use_fast, trust_remote_code")
    if device is not None and device_map is not None:
        raise LoadArgumentError("pipeline(): pass device= or device_map=, not both")
    if isinstance(device, int) and not isinstance(device, bool):
        device = "cpu" if device == -1 else f"cuda:{device}"
    where = device_map if device_map is not None else device
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        options = dict(model_kwargs or {})
        if "trust_remote_code" in kwargs:
            options.setdefault("trust_remote_code", kwargs["trust_remote_code"])
        loaded = model_from_pretrained(model, torch_dtype=torch_dtype, dtype=dtype, device_map=where, **options)
        if processor is None:
            processor = AutoProcessor.from_pretrained(model, **kwargs)
        return ImageTextToTextPipeline(loaded, processor)
    if processor is None:
        raise LoadArgumentError("pipeline(model=<a loaded model>) needs processor= too (AutoProcessor.from_pretrained"
                                " of the same folder)")
    if model_kwargs or torch_dtype is not None or dtype is not None:
        raise LoadArgumentError("pipeline(): torch_dtype, dtype and model_kwargs apply when the pipeline loads the "
                                "model; with a loaded model, call model.to(dtype) yourself")
    if where is not None:
        from .devices import resolve_device_map

        model = model.to(resolve_device_map(where))
    return ImageTextToTextPipeline(model, processor)
