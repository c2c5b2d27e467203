"""LoRA: low-rank adapters on chosen Linear layers of a frozen GLM-4.1V, and their PEFT-format files.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) leaves a layer's
weight W (C_out, C_in) frozen and learns a low-rank change to it:

    y = base(x) + (alpha / r) * B(A(dropout(x)))        A: (r, C_in), B: (C_out, r), r << min(C_in, C_out)
    merged: W' = W + (alpha / r) * B @ A                 (the same y without the extra matmuls)

A starts random (Kaiming-uniform, as nn.Linear) and B at zero, so a fresh adapter changes nothing. With `rslora`
the scale is alpha / sqrt(r). The wrapped `base` may be any module with `forward(x)`, `in_features` and
`out_features`: an nn.Linear, or a quantized layer such as quant.QuantLinear (QLoRA: the base stays int8/int4 and
only A and B train in float).

Files: `save_adapter` writes what PEFT's `PeftModel.save_pretrained` writes for transformers'
`Glm4vForConditionalGeneration` (module paths are the same in both, docs/glm41v.md §8): adapter_config.json and
adapter_model.safetensors with keys `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`, so
`peft.PeftModel.from_pretrained(model, folder)` loads them; `load_adapter` reads such a folder back.

Shapes: C_in / C_out a layer's input / output width, r the rank, L sequence.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import AdapterError
from .jsonfile import expect, read_json
from .paths import local_path

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")  # per decoder layer
VISION_TARGETS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")  # per vision block (attn.*, mlp.*)
MERGER_TARGETS = ("proj", "gate_proj", "up_proj", "down_proj")  # model.visual.merger.*
CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's prefix: PeftModel.base_model (LoraModel) .model (the transformers model)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8  # rank of A and B
    alpha: float = 16.0  # the update is scaled by alpha / r (alpha / sqrt(r) with rslora)
    dropout: float = 0.0  # dropout on the adapter's input while training
    targets: tuple[str, ...] = TEXT_TARGETS  # decoder projections to adapt, a subset of TEXT_TARGETS
    vision: bool = False  # also every vision block's qkv, proj, gate_proj, up_proj, down_proj
    merger: bool = False  # also the merger's proj, gate_proj, up_proj, down_proj
    rslora: bool = False  # rank-stabilised scale alpha / sqrt(r)

    def __post_init__(self):
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise AdapterError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not self.alpha > 0:
            raise AdapterError(f"LoRA alpha must be a positive number, got {self.alpha!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        bad = [t for t in self.targets if t not in TEXT_TARGETS]
        if bad or isinstance(self.targets, str):
            raise AdapterError(f"unknown decoder targets {bad or self.targets!r}; choose from {TEXT_TARGETS} "
                               "(vision=True and merger=True add the vision tower's layers)")

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


class LoraLinear(nn.Module):
    """`base(x) + scaling * lora_B(lora_A(dropout(x)))`, base frozen. `merge()` folds the update into a float
    base weight and `unmerge()` takes it out again."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        for attr in ("in_features", "out_features"):
            if not isinstance(getattr(base, attr, None), int):
                raise AdapterError(f"LoRA wraps a layer with integer in_features/out_features and forward(x); "
                                   f"{type(base).__name__} has no {attr}")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scaling = alpha / (math.sqrt(r) if rslora else r)
        device = next(base.parameters(), next(base.buffers(), torch.empty(0))).device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device, dtype=dtype)  # weight (r, C_in)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device, dtype=dtype)  # weight (C_out, r)
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., C_out)
        if self.merged:
            return y
        a = self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype)))  # (..., r)
        return y + (self.lora_B(a) * self.scaling).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """scaling * B @ A: the (C_out, C_in) change the adapter makes to the weight."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def _float_weight(self, what: str) -> torch.Tensor:
        w = getattr(self.base, "weight", None)
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            raise AdapterError(f"cannot {what} in place: the base layer {type(self.base).__name__} has no float "
                               "weight (a quantized base); use merge_and_unload, which dequantizes it first")
        return w

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            raise AdapterError("this LoRA layer is already merged; unmerge() it first")
        w = self._float_weight("merge")
        w.add_(self.delta_weight().to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise AdapterError("this LoRA layer is not merged; there is nothing to unmerge")
        w = self._float_weight("unmerge")
        w.sub_(self.delta_weight().to(w.dtype))
        self.merged = False

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A plain nn.Linear holding W + scaling * B @ A (a quantized base is dequantized first)."""
        if self.merged:
            raise AdapterError("unmerge() this layer before merge_and_unload")
        if hasattr(self.base, "dequantize"):
            w = self.base.dequantize()
        else:
            w = self._float_weight("merge")
        bias = getattr(self.base, "bias", None)
        out = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=w.device, dtype=w.dtype)
        out.weight.copy_(w + self.delta_weight().to(w.dtype))
        if bias is not None:
            out.bias.copy_(bias)
        out.requires_grad_(False)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


# ---------------------------------------------------------------------------------------------- a whole model

def target_paths(model: nn.Module, config: LoraConfig) -> list[str]:
    """Module paths (as in the checkpoint) of the layers `config` adapts, in model order."""
    wanted = []
    text = "|".join(config.targets)
    if text:
        wanted.append(rf"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.({text})")
    if config.vision:
        wanted.append(rf"model\.visual\.blocks\.\d+\.(attn|mlp)\.({'|'.join(VISION_TARGETS)})")
    if config.merger:
        wanted.append(rf"model\.visual\.merger\.({'|'.join(MERGER_TARGETS)})")
    pattern = re.compile("|".join(f"(?:{w})" for w in wanted)) if wanted else None
    paths = [n for n, m in model.named_modules() if pattern is not None and pattern.fullmatch(n)
             and not isinstance(m, LoraLinear)]
    if not paths:
        raise AdapterError(f"no layer of this model matches the LoRA targets {config}; is it a GLM-4.1V "
                           "(model.language_model.layers.N...) and are targets non-empty?")
    return paths


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    """{module path: LoraLinear} of every adapted layer."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def add_lora(model: nn.Module, config: LoraConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[str]:
    """Freeze every parameter of `model`, then wrap each target layer in a LoraLinear (A seeded by `seed`, B = 0)
    whose A and B are trainable. Returns the adapted module paths. The adapter is held in `dtype` (float32 by
    default, also on a bf16 base)."""
    if lora_layers(model):
        raise AdapterError("this model already has LoRA layers; merge_and_unload or unload them first")
    paths = target_paths(model, config)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    for path in paths:
        layer = LoraLinear(model.get_submodule(path), config.r, config.alpha, config.dropout, config.rslora, dtype)
        with torch.no_grad():  # Kaiming-uniform with a = sqrt(5), nn.Linear's default: U(-1/sqrt(C_in), 1/sqrt(C_in))
            bound = 1.0 / math.sqrt(layer.in_features)
            a = torch.rand(layer.lora_A.weight.shape, generator=g, dtype=torch.float64) * 2 * bound - bound
            layer.lora_A.weight.copy_(a)
        _replace(model, path, layer)
    model.lora_config = config
    return paths


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def merge(model: nn.Module) -> None:
    """Fold every adapter into its (float) base weight, in place; `unmerge` undoes it."""
    for layer in _layers_or_fail(model).values():
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in _layers_or_fail(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every LoraLinear by a plain nn.Linear holding the merged weight: the model is then an ordinary
    GLM-4.1V again, which minglm4v.save writes in the published layout (transformers loads it unchanged)."""
    for path, layer in _layers_or_fail(model).items():
        _replace(model, path, layer.merged_linear())
    model.__dict__.pop("lora_config", None)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Drop every adapter and put the base layers back (unmerging first where merged)."""
    for path, layer in _layers_or_fail(model).items():
        if layer.merged:
            layer.unmerge()
        _replace(model, path, layer.base)
    model.__dict__.pop("lora_config", None)
    return model


def _layers_or_fail(model: nn.Module) -> dict[str, LoraLinear]:
    layers = lora_layers(model)
    if not layers:
        raise AdapterError("this model has no LoRA layers; add_lora or load_adapter first")
    return layers


# ---------------------------------------------------------------------------------------------- PEFT files

def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights under PEFT's names (base_model.model.<path>.lora_A.weight / .lora_B.weight)."""
    out = {}
    for path, layer in _layers_or_fail(model).items():
        out[f"{PREFIX}{path}.lora_A.weight"] = layer.lora_A.weight.detach().contiguous()
        out[f"{PREFIX}{path}.lora_B.weight"] = layer.lora_B.weight.detach().contiguous()
    return out


def save_adapter(model: nn.Module, folder: str | Path, base_model_name_or_path: str | None = None) -> list[Path]:
    """Write adapter_config.json and adapter_model.safetensors (PEFT's LoRA format) into `folder`."""
    folder = local_path(folder, "adapter folder", AdapterError)
    layers = _layers_or_fail(model)
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
        _replace(model, path, layer)
    model.lora_config = config
    return paths


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters, made trainable (everything else stays frozen)."""
    params = []
    for layer in _layers_or_fail(model).values():
        for p in (layer.lora_A.weight, layer.lora_B.weight):
            p.requires_grad_(True)
            params.append(p)
    return params
