"""Layer-by-layer comparison of two models that share module names: find the first layer that diverges.

Plays the role of the per-layer "debugger" of rasbt/LLMs-from-scratch for GLM-4.1V. Our module tree uses the
checkpoint names (model.py), which are also transformers' module names, so the same dotted name
(`model.language_model.layers.3`) points at the same computation in both models. Forward hooks record each named
module's output while the caller runs the two forwards; `compare` then lists the largest difference per module,
in forward order, and names the first one over the tolerance.

The oracle is whatever model the caller passes in (transformers' `Glm4vForConditionalGeneration` in the tests and
chapters); this module does not import transformers.

Shapes: B batch, L sequence, C width.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


def layer_names(model: nn.Module) -> list[str]:
    """The checkpoints along the forward pass: vision tower, embeddings, each decoder layer, final norm, lm_head."""
    n = len(model.model.language_model.layers)
    return (["model.visual", "model.language_model.embed_tokens"]
            + [f"model.language_model.layers.{i}" for i in range(n)]
            + ["model.language_model.norm", "lm_head"])


@contextmanager
def record(model: nn.Module, names: list[str]):
    """Within the block, `store[name]` holds the latest output of each named module (first tensor of a tuple)."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"{type(model).__name__} has no module {name!r}; pass names both models have") from None

        def hook(_mod, _inp, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            # output objects (transformers' vision tower returns its merged features as `pooler_output`)
            out = getattr(out, "pooler_output", None) if getattr(out, "pooler_output", None) is not None else out
            out = getattr(out, "last_hidden_state", out)
            if isinstance(out, torch.Tensor):
                store[name] = out.detach().float().cpu()
        handles.append(module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class Row:
    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    ok: bool


@dataclass
class Comparison:
    rows: list[Row]
    atol: float

    @property
    def first_divergence(self) -> str | None:
        """Name of the first module whose output differs by more than atol, or None if all agree."""
        return next((r.name for r in self.rows if not r.ok), None)

    def __str__(self) -> str:
        lines = [f"{'module':<40} {'shape':<18} {'max |diff|':>10}"]
        for r in self.rows:
            mark = "" if r.ok else "   <-- over atol" + (" (first)" if r.name == self.first_divergence else "")
            lines.append(f"{r.name:<40} {str(list(r.shape)):<18} {r.max_abs_diff:>10.2e}{mark}")
        return "\n".join(lines)


def compare(ours: nn.Module, oracle: nn.Module, run_ours: Callable[[nn.Module], object],
            run_oracle: Callable[[nn.Module], object], names: list[str] | None = None, atol: float = 1e-4,
            token_mask: torch.Tensor | None = None) -> Comparison:
    """Run both models once with hooks on `names` (default `layer_names(ours)`) and compare the outputs.

    run_ours(model) / run_oracle(model) do the forward passes (so each gets the arguments it wants).
    token_mask (B, L): compare only those token positions of (B, L, ...) outputs (e.g. skip left padding).
    Modules that did not run in both models (no images -> no `model.visual`) are left out."""
    names = names or layer_names(ours)
    with torch.no_grad(), record(ours, names) as a, record(oracle, names) as b:
        run_ours(ours)
        run_oracle(oracle)
    rows = []
    for name in names:
        if name not in a or name not in b:
            continue
        x, y = a[name], b[name]
        if x.shape != y.shape:
            rows.append(Row(name, tuple(x.shape), float("inf"), False))
            continue
        if token_mask is not None and x.shape[:2] == token_mask.shape:
            x, y = x[token_mask.bool()], y[token_mask.bool()]  # (real tokens, C)
        diff = (x - y).abs().max().item() if x.numel() else 0.0
        rows.append(Row(name, tuple(a[name].shape), diff, diff <= atol))
    return Comparison(rows, atol)
