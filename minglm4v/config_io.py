"""Reading and writing `config.json`: the three on-disk spellings of a GLM-4.1V config, strictly.

Mirrors how transformers' `Glm4vConfig.from_pretrained` / `to_dict` read and write the file (docs/glm41v.md §1).
A `config.json` comes in three spellings, and `config_from_dict` reads all of them:
  * old flat layout (July 2025): the text fields sit at the top level next to `vision_config`;
  * nested layout (published 9B config since Oct 2025): the text fields live in `text_config`;
  * transformers v5: rope settings gathered in `rope_parameters = {rope_type, rope_theta, partial_rotary_factor,
    mrope_section}`.
`config_to_dict` writes the nested layout of the published checkpoint. Keys we do not know raise `ConfigError`
instead of being dropped; keys that only matter to transformers' bookkeeping (output flags, versions, ...) are
listed in `_IGNORED_KEYS` and skipped on purpose. Every value is checked against its field's type, and the file is
read with jsonfile.read_json (UTF-8, no duplicate keys, bounded nesting), so a bad file gives one ConfigError naming
the file and the field. A quantized checkpoint's `quantization_config` is kept as the JSON object it is.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from .config import _SPECIAL_ID_FIELDS, Glm4vConfig, TextConfig, VisionConfig, _check
from .errors import ConfigError
from .jsonfile import read_json
from .paths import local_path

_TOP_FIELDS = _SPECIAL_ID_FIELDS + ("tie_word_embeddings",)

_TEXT_FIELDS = {f.name for f in dataclasses.fields(TextConfig)}
_VISION_FIELDS = {f.name for f in dataclasses.fields(VisionConfig)}

# A field missing from a file means what transformers makes of it, which for these is not the 9B value.
_TEXT_DEFAULTS_WHEN_ABSENT = {"max_position_embeddings": 32768, "partial_rotary_factor": 1.0, "pad_token_id": None,
                              "eos_token_id": ()}

# Keys transformers writes that do not change the computation. Skipped on purpose, by name.
_IGNORED_KEYS = {
    "transformers_version", "_name_or_path", "output_attentions", "output_hidden_states", "return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "tokenizer_class",
    "torchscript", "_commit_hash", "_attn_implementation_autoset", "use_return_dict", "bos_token_id",
    "sep_token_id", "decoder_start_token_id", "tf_legacy_loss", "pruned_heads", "add_cross_attention",
    "cross_attention_hidden_size", "finetuning_task", "task_specific_params", "architectures",
    "model_type", "attn_implementation",  # model_type is checked first (_model_type)
    "image_processor_type", "processor_class",  # seen in hand-made configs
}


def config_from_dict(d: dict[str, Any]) -> Glm4vConfig:
    """A config from any of the three on-disk spellings (see the module docstring)."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a dict (the contents of config.json), got {type(d).__name__}")
    d = dict(d)
    model_type = d.pop("model_type", "glm4v")
    _check(model_type == "glm4v", f"model_type={model_type!r}: minglm4v reads GLM-4.1V configs ('glm4v') only")
    archs = d.pop("architectures", None) or ["Glm4vForConditionalGeneration"]
    _check(archs == ["Glm4vForConditionalGeneration"],
           f"architectures={archs}: minglm4v builds Glm4vForConditionalGeneration only")
    quant = d.pop("quantization_config", None)
    _check(quant is None or isinstance(quant, dict),
           f"quantization_config must be a JSON object (or absent), got {type(quant).__name__}")

    vision = d.pop("vision_config", None)
    _check(isinstance(vision, dict), "config has no 'vision_config' dict; is this a GLM-4.1V config.json?")
    text = d.pop("text_config", None)
    top = {k: d.pop(k) for k in list(d) if k in _TOP_FIELDS}
    if text is None:
        # old flat layout: whatever is left at the top level describes the text model
        text, d = d, {}
    _check(isinstance(text, dict), f"text_config must be a dict, got {type(text).__name__}")
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS}
    for k in ("dtype", "torch_dtype"):  # nested layout may keep the storage dtype at the top level
        if k in d:
            top_dtype = d.pop(k)
            if text.get("dtype", text.get("torch_dtype")) is None:
                text = {**text, "dtype": top_dtype}
    _no_unknown(d, "top level of config")
    return _build(Glm4vConfig, {**top, "text_config": _text_from_dict(text), "vision_config": _vision_from_dict(vision),
                                "quantization_config": copy.deepcopy(quant)}, "config")


def config_to_dict(cfg: Glm4vConfig) -> dict[str, Any]:
    """The nested layout of the published checkpoint; transformers' `Glm4vConfig(**d)` loads the same values."""
    t = dataclasses.asdict(cfg.text_config)
    mrope, theta, factor = t.pop("mrope_section"), t.pop("rope_theta"), t.pop("partial_rotary_factor")
    text = {"model_type": "glm4v_text", **t, "eos_token_id": list(cfg.text_config.eos_token_id),
            "partial_rotary_factor": factor, "rope_theta": theta,
            "rope_scaling": {"rope_type": "default", "mrope_section": list(mrope)}}
    vision = {"model_type": "glm4v", **dataclasses.asdict(cfg.vision_config)}
    top = {k: getattr(cfg, k) for k in _TOP_FIELDS}
    if cfg.quantization_config is not None:
        top["quantization_config"] = copy.deepcopy(cfg.quantization_config)
    return {"architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v", **top,
            "text_config": text, "vision_config": vision}


def read_config(folder) -> Glm4vConfig:
    """The config in `folder/config.json`; every problem raises ConfigError naming the file."""
    path = local_path(folder, "checkpoint folder", ConfigError) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: a checkpoint folder must contain config.json")
    d = read_json(path, ConfigError)
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def write_config(cfg: Glm4vConfig, folder) -> Path:
    """Write `folder/config.json` (creating the folder); returns its path."""
    path = local_path(folder, "config folder", ConfigError) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
    return path


def _text_from_dict(d: dict[str, Any]) -> TextConfig:
    _model_type(d, ("glm4v_text", "glm4v"), "text_config")
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS}
    if "torch_dtype" in d:  # transformers 4.x spelling
        d.setdefault("dtype", d.pop("torch_dtype"))
        d.pop("torch_dtype", None)
    rope = {}
    for key in ("rope_parameters", "rope_scaling"):  # v5 spelling, then 4.x spelling
        val = d.pop(key, None)
        if val is not None:
            _check(isinstance(val, dict), f"text {key} must be a dict, got {val!r}")
            for k, v in val.items():
                rope.setdefault(k, v)
    rope_type = rope.pop("rope_type", rope.pop("type", "default"))
    _check(rope_type == "default", f"text rope_type={rope_type!r}: GLM-4.1V uses 'default' (no rope scaling)")
    for k in ("rope_theta", "partial_rotary_factor", "mrope_section"):
        if k in rope:
            _check(k not in d or d[k] == rope[k], f"text {k} given twice with different values: {d.get(k)} "
                                                   f"and {rope[k]} (in rope_parameters/rope_scaling)")
            d[k] = rope.pop(k)
    _no_unknown(rope, "text rope_parameters/rope_scaling")
    if "head_dim" in d:
        head_dim = d.pop("head_dim")
        _check(head_dim is None or isinstance(head_dim, int) and not isinstance(head_dim, bool),
               f"text_config.head_dim={head_dim!r} must be a whole number")
        hidden, heads = d.get("hidden_size", TextConfig.hidden_size), d.get("num_attention_heads",
                                                                             TextConfig.num_attention_heads)
        _check(head_dim is None or head_dim * heads == hidden,
               f"text head_dim={head_dim} but hidden_size/num_attention_heads = {hidden}/{heads}: GLM-4.1V needs "
               "head_dim * num_attention_heads == hidden_size")
    for k, v in _TEXT_DEFAULTS_WHEN_ABSENT.items():
        d.setdefault(k, v)
    if d.get("eos_token_id") is None:
        d["eos_token_id"] = ()
    if isinstance(d.get("eos_token_id"), int) and not isinstance(d["eos_token_id"], bool):
        d["eos_token_id"] = [d["eos_token_id"]]
    if d.get("dtype") is not None:
        d["dtype"] = str(d["dtype"]).removeprefix("torch.")
    elif "dtype" in d:
        d.pop("dtype")
    _no_unknown({k: v for k, v in d.items() if k not in _TEXT_FIELDS}, "text_config")
    return _build(TextConfig, d, "text_config")


def _vision_from_dict(d: dict[str, Any]) -> VisionConfig:
    _model_type(d, ("glm4v", "glm4v_vision"), "vision_config")
    d = {k: v for k, v in d.items() if k not in _IGNORED_KEYS and k not in ("torch_dtype", "dtype")}
    rope = d.pop("rope_parameters", None)  # v5 writes {"rope_type": "axial", ...}: the 2-D vision rotary, fixed
    if rope is not None:
        _check(isinstance(rope, dict) and rope.get("rope_type", "axial") in ("axial", "default"),
               f"vision rope_parameters={rope!r}: only the built-in 2-D (axial) rotary is implemented")
        theta = rope.get("rope_theta", 10000.0)
        _check(theta == 10000.0, f"vision rope_theta={theta}: the GLM-4.1V vision rotary uses 10000")
    _no_unknown({k: v for k, v in d.items() if k not in _VISION_FIELDS}, "vision_config")
    return _build(VisionConfig, d, "vision_config")


def _model_type(d: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    mt = d.get("model_type", allowed[0])
    _check(mt in allowed, f"{where}.model_type={mt!r}: a GLM-4.1V config has {' or '.join(map(repr, allowed))} here")


def _build(cls, d: dict[str, Any], where: str):
    """cls(**d) after checking each value against the field's type (the annotation, a string here)."""
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value, kind, name = d[f.name], f.type, f"{where}.{f.name}"
        if kind in ("int", "float", "int | None") and not (value is None and kind == "int | None"):
            _check(isinstance(value, (int, float)) and not isinstance(value, bool),
                   f"{name}={value!r} must be a number")
            if kind != "float":
                _check(float(value).is_integer(), f"{name}={value!r} must be a whole number")
                d[f.name] = int(value)
        elif kind == "bool":
            _check(isinstance(value, bool), f"{name}={value!r} must be true or false")
        elif kind == "str":
            _check(isinstance(value, str), f"{name}={value!r} must be a string")
        elif kind == "tuple[int, ...]":
            _check(isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value), f"{name}={value!r} must be a list of "
                                                                             "whole numbers")
            d[f.name] = tuple(value)
    return cls(**d)


def _no_unknown(d: dict[str, Any], where: str) -> None:
    if d:
        raise ConfigError(f"unknown key(s) in {where}: {sorted(d)}. minglm4v does not know what they mean for "
                          "GLM-4.1V; remove them or report them if the published checkpoint uses them")


