"""LoRA adapter folders in PEFT's format: what `peft.PeftModel.save_pretrained` writes, and reading it back.

For transformers' `Glm4vForConditionalGeneration` PEFT writes two files (module paths are the same in minglm4v,
docs/glm41v.md §8):

    adapter_config.json          peft_type "LORA", r, lora_alpha, lora_dropout, use_rslora, target_modules, ...
    adapter_model.safetensors    base_model.model.<module path>.lora_A.weight  (r, C_in)
                                 base_model.model.<module path>.lora_B.weight  (C_out, r)

`save_adapter` writes them, so `peft.PeftModel.from_pretrained(transformers_model, folder)` loads minglm4v's
adapters; `load_adapter` reads folders from either library strictly (every tensor must belong to a layer that
target_modules names, with the right shape; PEFT options this LoRA cannot reproduce, such as DoRA, are refused).
Shapes: C_in / C_out a layer's input / output width, r the rank.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import AdapterError
from .jsonfile import expect, read_json
from .lora import LoraConfig, LoraLinear, layers_or_fail, lora_layers, replace_module
from .paths import local_path

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's prefix: PeftModel.base_model (LoraModel) .model (the transformers model)

def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's names (base_model.model.<path>.lora_A.weight / .lora_B.weight)."""
    out = {}
    for path, layer in layers_or_fail(model).items():
        out[f"{PREFIX}{path}.lora_A.weight"] = layer.lora_A.weight.detach().contiguous()
        out[f"{PREFIX}{path}.lora_B.weight"] = layer.lora_B.weight.detach().contiguous()
    return out


def save_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str | None = None) -> list[Path]:
    """Write adapter_config.json and adapter_model.safetensors (PEFT's LoRA format) into `folder`."""
    folder = local_path(folder, "adapter folder", AdapterError)
    layers = layers_or_fail(model)
    config = getattr(model, "lora_config", None)
    if config is None:
        raise AdapterError("this model's LoRA layers were not added by add_lora/load_adapter; no config to save")
    if any(layer.merged for layer in layers.values()):
        raise AdapterError("unmerge() the model before saving its adapter (merged weights hold the update twice)")
    peft_config = {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model_name_or_path,
        "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout, "use_rslora": config.rslora,
        "target_modules": sorted(layers), "bias": "none", "fan_in_fan_out": False, "use_dora": False,
        "init_lora_weights": True, "inference_mode": True, "modules_to_save": None, "rank_pattern": {},
        "alpha_pattern": {}, "layers_to_transform": None, "layers_pattern": None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_NAME + ".partial")  # write, then rename: never a half-written adapter
    save_file(adapter_state(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps(peft_config, indent=2) + "\n")
    return [folder / CONFIG_NAME, folder / WEIGHTS_NAME]


def _peft_matches(path: str, target_modules) -> bool:
    """PEFT's rule: a string is a regular expression the whole path must match; a list names paths or their
    last components."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, path) is not None
    return any(path == t or path.endswith("." + t) for t in target_modules)


def read_adapter_config(folder: Path) -> tuple[LoraConfig, list | str]:
    """(LoraConfig, target_modules) of a PEFT LoRA folder; every setting this LoRA cannot reproduce is refused."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"{path} not found: an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    d = read_json(path, AdapterError)
    if d.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: peft_type is {d.get('peft_type')!r}; only LoRA adapters ('LORA') can be read")
    for key, plain in (("bias", "none"), ("fan_in_fan_out", False), ("use_dora", False), ("modules_to_save", None),
                       ("rank_pattern", {}), ("alpha_pattern", {}), ("layers_to_transform", None),
                       ("target_parameters", None), ("trainable_token_indices", None), ("use_qalora", False),
                       ("lora_bias", False), ("layer_replication", None)):
        if d.get(key) is not None and d[key] != plain:
            raise AdapterError(f"{path}: {key} = {d[key]!r} is not supported (minglm4v reads plain LoRA: "
                               f"{key} = {plain!r})")
    r = expect(d.get("r"), int, path, "r", AdapterError)
    alpha = expect(d.get("lora_alpha"), (int, float), path, "lora_alpha", AdapterError)
    dropout = expect(d.get("lora_dropout", 0.0), (int, float), path, "lora_dropout", AdapterError)
    rslora = expect(d.get("use_rslora", False), bool, path, "use_rslora", AdapterError)
    targets = expect(d.get("target_modules"), (list, str), path, "target_modules", AdapterError)
    return LoraConfig(r=r, alpha=float(alpha), dropout=float(dropout), rslora=rslora), targets


def load_adapter(model: nn.Module, folder: str | Path) -> list[str]:
    """Add the LoRA adapter saved in `folder` (by save_adapter or by PEFT) to `model`, strictly: every tensor in
    the file must belong to a layer that target_modules names, with the right shape, and every such layer must
    have both its tensors. Returns the adapted module paths."""
    folder = local_path(folder, "adapter folder", AdapterError)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} not found")
    config, target_modules = read_adapter_config(folder)
    wfile = folder / WEIGHTS_NAME
    if not wfile.is_file():
        raise AdapterError(f"{wfile} not found: an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    if lora_layers(model):
        raise AdapterError("this model already has LoRA layers; merge_and_unload or unload them first")
    try:
        with safe_open(str(wfile), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise AdapterError(f"{wfile}: not a readable safetensors file ({e})") from None
    linear_like = {n for n, m in model.named_modules()
                   if isinstance(getattr(m, "in_features", None), int) and hasattr(m, "out_features")}
    paths = [n for n in linear_like if _peft_matches(n, target_modules)]
    paths.sort(key=list(dict(model.named_modules())).index)
    expected = {f"{PREFIX}{p}.lora_{ab}.weight" for p in paths for ab in "AB"}
    unknown, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
    if unknown or missing or not paths:
        raise AdapterError(f"{wfile} does not fit this model and {CONFIG_NAME}'s target_modules: "
                           f"{len(unknown)} unknown tensors {unknown[:3]}, {len(missing)} missing {missing[:3]}")
    for path in paths:
        base = model.get_submodule(path)
        for ab, shape in (("A", (config.r, base.in_features)), ("B", (base.out_features, config.r))):
            t = tensors[f"{PREFIX}{path}.lora_{ab}.weight"]
            if tuple(t.shape) != shape or not t.is_floating_point():
                raise AdapterError(f"{wfile}: {PREFIX}{path}.lora_{ab}.weight has shape {tuple(t.shape)} and dtype "
                                   f"{t.dtype}; this model needs a float tensor of shape {shape}")
    for p in model.parameters():
        p.requires_grad_(False)
    for path in paths:
        layer = LoraLinear(model.get_submodule(path), config.r, config.alpha, config.dropout, config.rslora)
        with torch.no_grad():
            layer.lora_A.weight.copy_(tensors[f"{PREFIX}{path}.lora_A.weight"])
            layer.lora_B.weight.copy_(tensors[f"{PREFIX}{path}.lora_B.weight"])
        layer.requires_grad_(False)
        replace_module(model, path, layer)
    model.lora_config = config
    return paths
