"""The keywords `generate` takes, checked: transformers' generation keywords where they apply, nothing else.

`model.generate(**inputs, max_new_tokens=1024, do_sample=True, temperature=1.0)` is how transformers is called; the
same call works here. Every keyword is checked before any work is done, and one that does not apply is refused with
a GenerationError that lists the accepted ones (never ignored, never a TypeError from deep inside):

    model inputs   input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw,
                   mm_token_type_ids (what transformers' Glm4vProcessor returns; checked in model_inputs.py)
    length, stop   max_new_tokens (default 32), max_length (prompt + new tokens), eos_token_id, pad_token_id
    sampling       do_sample, temperature, top_k, top_p, min_p, repetition_penalty (sampling.py), seed
    outputs        use_cache (default True), return_dict_in_generate, output_scores, output_logits
    one sequence   num_beams=1, num_return_sequences=1 (beam search and several samples per prompt are not built)

A max_new_tokens that goes past the model's context is not refused: generation stops at the end of the context, with
a UserWarning (a prompt that alone fills the context is a GenerationError). With return_dict_in_generate=True the
result is a generation.GenerateOutput (sequences, and scores / logits when asked for).
A sampling setting given as None takes its default, as in transformers. Integers may be Python, numpy or 0-d
torch integers; bools and floats are refused where an integer is meant (True is not token id 1).
Unlike transformers, no generation_config.json is read, and top_k defaults to 0 (off) rather than 50.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .errors import GenerationError
from .sampling import SamplingConfig

MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "pixel_values_videos",
                "video_grid_thw", "mm_token_type_ids")
SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
OPTION_KEYS = ("max_new_tokens", "max_length", "eos_token_id", "pad_token_id", "seed", *SAMPLING_KEYS,
               "use_cache", "return_dict_in_generate", "output_scores", "output_logits", "num_beams",
               "num_return_sequences")
DEFAULT_MAX_NEW_TOKENS = 32

# transformers keywords that are not built here, with what to do instead
_INSTEAD = {
    "streamer": "for text as it is generated use minglm4v.generation.stream(model, processor, inputs)",
    "generation_config": "pass its settings as keywords instead (max_new_tokens=..., do_sample=..., ...)",
    "output_attentions": "attention maps come from model.visual(..., return_attentions=True) (chapter 08)",
    "output_hidden_states": "record layer outputs with minglm4v.debug.record(model, names)",
    "past_key_values": "each call starts from a fresh cache; pass the whole prompt",
    "inputs_embeds": "pass input_ids (and pixels); the embeddings are computed from them",
    "position_ids": "positions are computed from input_ids and the grids (mrope.py)",
    "min_new_tokens": "not built; stop ids end a row as soon as they are produced",
    "logits_processor": "not built; the processors here are those of sampling.py",
    "stopping_criteria": "not built; use eos_token_id (a list of stop ids) and max_new_tokens",
}


@dataclass(frozen=True)
class GenerateOptions:
    """Everything but the model inputs, checked. Token ids are checked against the vocabulary in generation.py."""
    sampling: SamplingConfig
    max_new_tokens: int | None  # None: from max_length, else DEFAULT_MAX_NEW_TOKENS
    max_length: int | None  # prompt length (with padding) + new tokens, as transformers counts it
    eos_token_id: list[int] | None  # None: the config's stop ids
    pad_token_id: int | None  # None: the config's pad id
    seed: int | None
    use_cache: bool = True
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False

    def new_tokens(self, prompt_length: int) -> int:
        """How many new tokens are asked for, before the context limit is applied."""
        if self.max_length is None:
            return DEFAULT_MAX_NEW_TOKENS if self.max_new_tokens is None else self.max_new_tokens
        if self.max_length <= prompt_length:
            raise GenerationError(f"max_length={self.max_length} counts the prompt too, which is already "
                                  f"{prompt_length} tokens long; ask for max_new_tokens=... instead")
        return self.max_length - prompt_length


def as_int(value, what: str, error=GenerationError, minimum: int | None = None, below: int | None = None) -> int:
    """A Python, numpy or 0-d torch integer -> int; bools, floats and anything else are refused with `error`."""
    if isinstance(value, torch.Tensor) and (value.ndim != 0 or value.dtype == torch.bool
                                            or value.is_floating_point() or value.is_complex()):
        value = f"a tensor of dtype {value.dtype} and shape {tuple(value.shape)}"  # not an integer; said below
    if isinstance(value, bool) or type(value).__name__ == "bool_" or isinstance(value, (float, str)):
        n = None
    else:
        try:
            n = operator.index(value)  # int, numpy integers, 0-d integer tensors
        except TypeError:
            n = None
    if n is None:
        raise error(f"{what}={value!r} must be an integer (a bool or a float is not)")
    if minimum is not None and n < minimum:
        raise error(f"{what}={n} must be >= {minimum}")
    if below is not None and n >= below:
        raise error(f"{what}={n} is too large: it must be below {below} (2**{below.bit_length() - 1})")
    return n


def as_flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise GenerationError(f"{what} must be True or False, got {value!r}")
    return value


def stop_id_list(value, what: str = "eos_token_id") -> list[int]:
    """One id or a list / tuple / 1-D tensor of ids -> [int, ...] (range checked by the caller)."""
    if isinstance(value, torch.Tensor) and value.ndim == 1:
        value = list(value)
    if isinstance(value, (list, tuple)):
        return [as_int(v, f"{what} entry", minimum=0) for v in value]
    return [as_int(value, what, minimum=0)]


def parse_options(options: dict) -> GenerateOptions:
    """The keywords of a generate call (model inputs already taken out) -> GenerateOptions."""
    unknown = [k for k in options if k not in OPTION_KEYS]
    if unknown:
        name = unknown[0]
        hint = f" ({_INSTEAD[name]})" if name in _INSTEAD else ""
        raise GenerationError(f"generate() got the keyword {name!r}, which minglm4v does not take{hint}. Accepted: "
                              f"{', '.join(MODEL_INPUTS + OPTION_KEYS)}")
    get = options.get
    for name in ("num_beams", "num_return_sequences"):
        if get(name) is not None and as_int(get(name), name) != 1:
            raise GenerationError(f"{name}={get(name)} is not built: minglm4v generates one sequence per prompt "
                                  "(greedy or sampled); leave it at 1, or repeat the prompt in the batch for "
                                  "several samples")
    if get("max_new_tokens") is not None and get("max_length") is not None:
        raise GenerationError("got both max_new_tokens and max_length; give one (max_new_tokens counts only the "
                              "new tokens, max_length the prompt too)")
    sampling = SamplingConfig(**{k: options[k] for k in SAMPLING_KEYS if get(k) is not None})
    eos = get("eos_token_id")
    return GenerateOptions(
        sampling=sampling,
        max_new_tokens=None if get("max_new_tokens") is None else as_int(get("max_new_tokens"), "max_new_tokens",
                                                                         minimum=1),
        max_length=None if get("max_length") is None else as_int(get("max_length"), "max_length", minimum=1),
        eos_token_id=None if eos is None else stop_id_list(eos),
        pad_token_id=None if get("pad_token_id") is None else as_int(get("pad_token_id"), "pad_token_id", minimum=0),
        seed=None if get("seed") is None else as_int(get("seed"), "seed", minimum=0, below=2**64),
        **{k: as_flag(options[k], k) for k in ("use_cache", "return_dict_in_generate", "output_scores",
                                               "output_logits") if k in options})
