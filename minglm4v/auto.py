"""transformers' spelling of loading: `AutoProcessor.from_pretrained`, `Glm4vForConditionalGeneration.from_pretrained`.

    processor = AutoProcessor.from_pretrained("data/tiny-glm4v")                         # = load_processor(path)
    model = Glm4vForConditionalGeneration.from_pretrained("data/tiny-glm4v", dtype="auto", device_map="auto")
                                                                                          # = load(path, ...)

Both read the same checkpoint folder (or Hugging Face Hub id, found in the local cache) as `minglm4v.load` and
`minglm4v.load_processor`, which stay the short spelling. This module only translates transformers' keyword
arguments (`PreTrainedModel.from_pretrained`, `AutoProcessor.from_pretrained` in transformers 5.x) into theirs:

    torch_dtype= / dtype=   "auto" or None keep the stored dtype (transformers 5's default); a torch dtype or its name
    device_map=             one device ("cpu", "cuda:0", 0, torch.device) or "auto" (CUDA, then MPS, then CPU); a map
                            that spreads the model over several devices is refused (minglm4v keeps it on one)
    quantize=               None, or a scheme handed on to the loader where it supports one

Keywords that cannot change the result are accepted (`attn_implementation="sdpa"`, `use_fast=True`,
`trust_remote_code`, `low_cpu_mem_usage`, ...: see ACCEPTED below, each with what it means here); any other keyword,
or a value minglm4v cannot honour, raises LoadArgumentError naming it and listing the accepted ones, so nothing is
silently ignored. No shapes here.
"""

from __future__ import annotations

from .errors import LoadArgumentError

# keyword -> (values that mean what they mean in transformers, what it does here). None is always allowed.
HARMLESS_MODEL = {
    "attn_implementation": (("sdpa", "eager"), "one attention implementation, PyTorch's scaled_dot_product_attention; "
                            "'eager' computes the same softmax(QK^T/sqrt(D))V"),
    "trust_remote_code": ((True, False), "minglm4v never runs code from a checkpoint"),
    "low_cpu_mem_usage": ((True, False), "the loader always builds on the meta device and reads each tensor once"),
    "use_safetensors": ((True,), "minglm4v reads safetensors only"),
    "local_files_only": ((True, False), "nothing is downloaded unless allow_download=True"),
}
HARMLESS_PROCESSOR = {
    "use_fast": ((True,), "the tokenizer is the fast (Rust `tokenizers`) one"),
    "trust_remote_code": HARMLESS_MODEL["trust_remote_code"],
    "local_files_only": HARMLESS_MODEL["local_files_only"],
    "padding_side": (("left",), "batches are padded on the left, as generation needs"),
}


def _check_harmless(kwargs: dict, table: dict, where: str, passed_on: tuple[str, ...]) -> None:
    for key, value in kwargs.items():
        if key not in table:
            accepted = ", ".join(sorted((*passed_on, *table)))
            raise LoadArgumentError(f"{where}() got the keyword {key}={value!r}, which minglm4v does not support; "
                                    f"accepted: {accepted}")
        allowed, meaning = table[key]
        if value is not None and value not in allowed:
            raise LoadArgumentError(f"{where}(): {key}={value!r} cannot be honoured ({meaning}); use "
                                    f"{' or '.join(repr(a) for a in allowed)}, or leave it out")


def _one_dtype(torch_dtype, dtype, where: str):
    """transformers 5 renamed torch_dtype to dtype; either spelling, not two different values."""
    if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
        raise LoadArgumentError(f"{where}() got torch_dtype={torch_dtype!r} and dtype={dtype!r}; they are the same "
                                "setting (dtype is transformers 5's name): pass one")
    chosen = dtype if dtype is not None else torch_dtype
    return None if chosen == "auto" else chosen  # None: the loader keeps the stored dtype


def model_from_pretrained(pretrained_model_name_or_path, *, torch_dtype=None, dtype=None, device_map=None,
                          quantize=None, group_size=None, quantize_vision=None, mmap: bool = True,
                          allow_download: bool = False, **kwargs):
    """`Glm4vForConditionalGeneration.from_pretrained(...)`: `minglm4v.load` with transformers' keywords (see the
    module docstring). Returns the model in eval mode on the one device `device_map` names (the CPU by default);
    `quantize="int8" | "int4"` (with `group_size`, `quantize_vision`) quantizes each weight as it is read."""
    from .devices import resolve_device_map
    from .weights import load

    where = "Glm4vForConditionalGeneration.from_pretrained"
    _check_harmless(kwargs, HARMLESS_MODEL, where, ("torch_dtype", "dtype", "device_map", "quantize", "group_size",
                                                    "quantize_vision", "mmap", "allow_download"))
    device = resolve_device_map("cpu" if device_map is None else device_map)
    return load(pretrained_model_name_or_path, dtype=_one_dtype(torch_dtype, dtype, where), device=device,
                mmap=mmap, allow_download=allow_download, quantize=quantize, group_size=group_size,
                quantize_vision=quantize_vision)


class AutoProcessor:
    """`AutoProcessor.from_pretrained(path)`: the checkpoint's processor (processor.py), as `load_processor` reads it.

    Only the classmethod is meant to be used; there is one processor class for GLM-4.1V."""

    def __init__(self, *args, **kwargs):
        raise LoadArgumentError("AutoProcessor is not instantiated; use AutoProcessor.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, allow_download: bool = False, **kwargs):
        from .hub import resolve_checkpoint
        from .processor import load_processor

        _check_harmless(kwargs, HARMLESS_PROCESSOR, "AutoProcessor.from_pretrained", ("allow_download",))
        return load_processor(resolve_checkpoint(pretrained_model_name_or_path, allow_download=allow_download))
