"""The keyword arguments of `Processor.apply_chat_template` and `Processor.__call__`, checked in one place.

Mirrors the keywords of transformers' `ProcessorMixin.apply_chat_template` and `__call__` (processing_utils.py)
that apply to GLM-4.1V. Each is either honoured or refused with a reason; an unknown keyword is refused with the
list of accepted ones. Nothing is silently ignored.

Differences from transformers, on purpose (README "Using it from Python"):
* `add_generation_prompt`, `tokenize` and `return_dict` default to True and `return_tensors` to "pt" (transformers:
  False, False, False, "auto"): `apply_chat_template(messages)` gives model inputs.
* Special-token strings typed inside message text are plain text unless `special_tokens_in_text=True`
  (transformers' `sanitize_control_tokens=True` is our default; that keyword is accepted too).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProcessorError

RETURN_TENSORS = ("pt", "np", None)
PADDING = {True: True, "longest": True, False: False, "do_not_pad": False}


@dataclass(frozen=True)
class Options:
    add_generation_prompt: bool = True
    tokenize: bool = True
    return_dict: bool = True
    return_tensors: str | None = "pt"
    padding: bool = True
    special_tokens_in_text: bool = False
    allow_download: bool = False
    chat_template: str | None = None


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ProcessorError(f"{name} must be True or False, got {value!r:.60}")
    return value


# keyword -> (the only values that can be honoured, what to do instead)
_REFUSED = {
    "truncation": ((False, None, "do_not_truncate"), "cutting a prompt would cut image or video placeholders "
                   "apart from their pixels; shorten the conversation instead"),
    "max_length": ((None,), "prompts are never truncated or padded to a length; shorten the conversation instead"),
    "pad_to_multiple_of": ((None,), "batches are padded to their longest prompt only"),
    "continue_final_message": ((False,), "GLM-4.1V's chat format closes every message; end the conversation "
                               "with a user message and use add_generation_prompt=True"),
    "tools": ((None,), "GLM-4.1V's chat template has no tool section"),
    "documents": ((None,), "GLM-4.1V's chat template has no document section"),
    "return_assistant_tokens_mask": ((False,), "the GLM-4.1V template has no generation markers to build it from"),
    "load_audio_from_video": ((False,), "GLM-4.1V has no audio input"),
    "return_mm_token_type_ids": ((True,), "mm_token_type_ids is always returned, as transformers' Glm4vProcessor "
                                 "does; drop the key if you do not want it"),
}
_COMMON = ("return_tensors", "padding", "padding_side", "allow_download", *_REFUSED)
CHAT_KEYWORDS = ("add_generation_prompt", "tokenize", "return_dict", "special_tokens_in_text",
                 "sanitize_control_tokens", "chat_template", *_COMMON)
CALL_KEYWORDS = _COMMON


def parse(kwargs: dict, accepted: tuple[str, ...], what: str) -> Options:
    """Check `kwargs` against `accepted` and return the Options they ask for."""
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ProcessorError(f"{what} got unknown keyword argument(s) {', '.join(map(repr, unknown))}; it accepts "
                             f"{', '.join(sorted(accepted))}")
    for key, (ok, why) in _REFUSED.items():
        if key in kwargs and not any(kwargs[key] is v or (kwargs[key] == v and type(kwargs[key]) is type(v))
                                     for v in ok):
            raise ProcessorError(f"{what}: {key}={kwargs[key]!r:.60} is not supported: {why}")
    out: dict = {}
    for key in ("add_generation_prompt", "tokenize", "return_dict", "special_tokens_in_text", "allow_download"):
        if key in kwargs:
            out[key] = _flag(key, kwargs[key])
    if "sanitize_control_tokens" in kwargs:
        plain = _flag("sanitize_control_tokens", kwargs["sanitize_control_tokens"])
        if "special_tokens_in_text" in out and out["special_tokens_in_text"] == plain:
            raise ProcessorError(f"{what}: sanitize_control_tokens={plain} contradicts special_tokens_in_text="
                                 f"{out['special_tokens_in_text']}; give one of them")
        out["special_tokens_in_text"] = not plain
    if "return_tensors" in kwargs:
        rt = kwargs["return_tensors"]
        if not any(rt is v or rt == v for v in RETURN_TENSORS) or isinstance(rt, bool):
            raise ProcessorError(f"{what}: return_tensors={rt!r:.60} is not supported; use 'pt' (torch), 'np' "
                                 "(numpy) or None (lists)")
        out["return_tensors"] = rt
    if "padding" in kwargs:
        p = kwargs["padding"]
        if not isinstance(p, (bool, str)) or p not in PADDING:
            raise ProcessorError(f"{what}: padding={p!r:.60} is not supported; use True / 'longest' (pad on the "
                                 "left to the longest prompt) or False / 'do_not_pad'")
        out["padding"] = PADDING[p]
    if kwargs.get("padding_side", "left") != "left":
        raise ProcessorError(f"{what}: padding_side={kwargs['padding_side']!r:.60} is not supported: generation "
                             "needs the padding on the left, where the prompt's real tokens end together")
    if kwargs.get("chat_template") is not None:
        if not isinstance(kwargs["chat_template"], str):
            raise ProcessorError(f"{what}: chat_template must be a jinja template string, got "
                                 f"{type(kwargs['chat_template']).__name__}")
        out["chat_template"] = kwargs["chat_template"]
    opts = Options(**out)
    moot = [k for k in ("return_dict", "return_tensors", "padding", "allow_download", "special_tokens_in_text",
                        "sanitize_control_tokens") if k in kwargs]
    if not opts.tokenize and moot:
        raise ProcessorError(f"{what}: with tokenize=False the prompt text is returned, so {', '.join(moot)} "
                             "would have no effect; drop them or tokenize")
    return opts
