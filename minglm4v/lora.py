"""LoRA: low-rank adapters on chosen Linear layers of a frozen GLM-4.1V; merging them into the weights and back.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685) leaves a layer's
weight W (C_out, C_in) frozen and learns a low-rank change to it:

    y = base(x) + (alpha / r) * B(A(dropout(x)))        A: (r, C_in), B: (C_out, r), r << min(C_in, C_out)
    merged: W' = W + (alpha / r) * B @ A                 (the same y without the extra matmuls)

A starts random (Kaiming-uniform, as nn.Linear) and B at zero, so a fresh adapter changes nothing. With `rslora`
the scale is alpha / sqrt(r). The wrapped `base` may be any module with `forward(x)`, `in_features` and
`out_features`: an nn.Linear, or a quantized layer such as quant.QuantLinear (QLoRA: the base stays int8/int4 and
only A and B train in float).

Adapter folders in PEFT's format (save_adapter, load_adapter) are in adapters.py.

Shapes: C_in / C_out a layer's input / output width, r the rank, L sequence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import AdapterError

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")  # per decoder layer
VISION_TARGETS = ("qkv", "proj", "gate_proj", "up_proj", "down_proj")  # per vision block (attn.*, mlp.*)
MERGER_TARGETS = ("proj", "gate_proj", "up_proj", "down_proj")  # model.visual.merger.*


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
        if isinstance(self.targets, str):
            raise AdapterError(f"targets must be a tuple of names, got the string {self.targets!r}; write "
                               f"({self.targets!r},)")
        bad = [t for t in self.targets if t not in TEXT_TARGETS]
        if bad:
            raise AdapterError(f"unknown decoder targets {bad}; choose from {TEXT_TARGETS} "
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


def replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at `path` (e.g. model.language_model.layers.0.mlp.down_proj)."""
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
        replace_module(model, path, layer)
    model.lora_config = config
    return paths


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def merge(model: nn.Module) -> None:
    """Fold every adapter into its (float) base weight, in place; `unmerge` undoes it."""
    for layer in layers_or_fail(model).values():
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in layers_or_fail(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every LoraLinear by a plain nn.Linear holding the merged weight: the model is then an ordinary
    GLM-4.1V again, which minglm4v.save writes in the published layout (transformers loads it unchanged)."""
    for path, layer in layers_or_fail(model).items():
        replace_module(model, path, layer.merged_linear())
    model.__dict__.pop("lora_config", None)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Drop every adapter and put the base layers back (unmerging first where merged)."""
    for path, layer in layers_or_fail(model).items():
        if layer.merged:
            layer.unmerge()
        replace_module(model, path, layer.base)
    model.__dict__.pop("lora_config", None)
    return model


def layers_or_fail(model: nn.Module) -> dict[str, LoraLinear]:
    """lora_layers(model), which must not be empty."""
    layers = lora_layers(model)
    if not layers:
        raise AdapterError("this model has no LoRA layers; add_lora or load_adapter first")
    return layers


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters, made trainable (everything else stays frozen)."""
    params = []
    for layer in layers_or_fail(model).values():
        for p in (layer.lora_A.weight, layer.lora_B.weight):
            p.requires_grad_(True)
            params.append(p)
    return params
