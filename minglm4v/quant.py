"""Weight-only int8 / int4 quantization of GLM-4.1V's Linear layers: `QuantLinear` and `quantize_model`.

No transformers function is mirrored (transformers leaves quantization to add-on libraries); the math is in
quant_math.py, the device kernels in quant_kernels.py, and chapter 10 walks through both.

What is quantized: every Linear of the decoder (q/k/v/o_proj, gate_up_proj, down_proj in each layer) and lm_head.
The vision tower stays in the compute dtype unless quantize_vision=True (then its Linears too, not its convolutions);
embeddings and norms never. Only weights are quantized: activations, the KV cache and the bias stay in the compute
dtype, so a QuantLinear computes y = x W^T + b exactly as a Linear would, with W rebuilt from codes and scales.
Two ways to compute it, which agree within the compute dtype's rounding (tests/test_ch10_quant.py):
    reference  W = dequantize(codes, scales) in the compute dtype, then F.linear       (readable, any device)
    fast       PyTorch's packed weight-only kernel for the device (quant_kernels.py)   (where there is one)

A quantized checkpoint is the published layout (weights.py) with each quantized `<layer>.weight` replaced by:
    int8:  <layer>.qweight  I8  (N, K)     codes in [-127, 127]               W[n, k] = scales[n] * qweight[n, k]
           <layer>.scales   dtype (N,)     one scale per output channel
    int4:  <layer>.qweight  U8  (N, K/2)   byte j of row n = codes of columns 2j (low 4 bits) and 2j+1 (high 4 bits)
           <layer>.scales   dtype (N, K/G) one scale per group of G input columns
           <layer>.zeros    dtype (N, K/G) the value of code 8 in that group: W = scales * (code - 8) + zeros
<layer>.bias (q/k/v_proj) and every other tensor stay as they were, in the compute dtype (`dtype`: the model's,
bfloat16 for the published weights). config.json gains {"quantization_config": quantization_config(...)}.

Shapes: N output features, K input features, G group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import QuantError
from .quant_kernels import int4_layout, int4_mm, int8_mm, pack_int4, scales_and_zeros, unpack_int4
from .quant_math import (
    check_scheme,
    dequantize_int4,
    dequantize_int8,
    pack_nibbles,
    quantize_int4,
    quantize_int8,
    row_chunks,
    unpack_nibbles,
)

FORMAT = "minglm4v"  # quantization_config["quant_method"]
FAST_MAX_ROWS = 16  # the packed kernels are matrix-vector kernels: beyond this many rows (a prefill), dequantizing
#                     once and calling an ordinary matmul is faster (benchmarks/bench_quant.py)


class QuantLinear(nn.Module):
    """A Linear (in_features K -> out_features N) whose weight is held as int8 or int4 codes plus scales."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, scheme: str = "int8",
                 group_size: int = 128, dtype: torch.dtype = torch.bfloat16, device=None):
        super().__init__()
        check_scheme(scheme, group_size if scheme == "int4" else None, in_features)
        N, K = out_features, in_features
        self.in_features, self.out_features, self.scheme = K, N, scheme
        self.group_size = group_size if scheme == "int4" else None
        self.fast = True  # use the device's packed kernel when there is one (False: always the reference path)
        self.layout = "rows"  # int4 only: how qweight's bytes are arranged: "rows" (the checkpoint's), "cpu", "cuda"
        self._sz = None  # int4 in a kernel layout: (K/G, N, 2) scales and zeros; self.scales/zeros are views of it
        if scheme == "int8":
            self.register_buffer("qweight", torch.empty(N, K, dtype=torch.int8, device=device))
            self.register_buffer("scales", torch.empty(N, dtype=dtype, device=device))
        else:
            self.register_buffer("qweight", torch.empty(N, K // 2, dtype=torch.uint8, device=device))
            self.register_buffer("scales", torch.empty(N, K // group_size, dtype=dtype, device=device))
            self.register_buffer("zeros", torch.empty(N, K // group_size, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(N, dtype=dtype, device=device), requires_grad=False) if bias else None

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: inputs, outputs, scales and bias."""
        return self.scales.dtype

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"scheme={self.scheme}{g}, layout={self.layout}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str = "int8", group_size: int = 128) -> "QuantLinear":
        """A QuantLinear holding `linear`'s weight quantized (and its bias as is), on its device and dtype."""
        w = linear.weight
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme, group_size, w.dtype,
                w.device)
        q.load_weight(w.detach())
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return q

    def load_weight(self, weight: torch.Tensor) -> None:
        """Quantize a float weight (N, K) into this module's buffers, on the weight's device (a meta module becomes
        a real one: what streaming loads use). Scales keep this module's compute dtype."""
        want = (self.out_features, self.in_features)
        if tuple(weight.shape) != want or not weight.is_floating_point():
            raise QuantError(f"load_weight got a {weight.dtype} tensor of shape {tuple(weight.shape)}; this "
                             f"QuantLinear needs a floating weight of shape {want}")
        self._set_rows_layout()
        if self.scheme == "int8":
            self.qweight, self.scales = quantize_int8(weight, self.dtype)
        else:  # a slice of rows at a time: no (N, K) temporary beside the result
            N, K = want
            q = torch.empty(N, K // 2, dtype=torch.uint8, device=weight.device)
            s = torch.empty(N, K // self.group_size, dtype=self.dtype, device=weight.device)
            z = torch.empty_like(s)
            for r0, r1 in row_chunks(N, K):
                codes, s[r0:r1], z[r0:r1] = quantize_int4(weight[r0:r1], self.group_size, self.dtype)
                q[r0:r1] = pack_nibbles(codes)
            self.qweight, self.scales, self.zeros = q, s, z
        self.pack()

    # ------------------------------------------------------------------ layouts

    def pack(self) -> None:
        """Arrange the int4 codes for the device's kernel, when it has one (int8 needs no packing)."""
        if self.scheme != "int4" or self.layout != "rows" or not self.fast or self.qweight.is_meta:
            return
        layout = int4_layout(self.qweight.device, self.dtype, self.out_features, self.in_features)
        if layout is None:
            return
        if layout == "cpu":  # the CPU tiling keeps each block of 64 rows in its own rows: pack a slice at a time
            packed = torch.empty_like(self.qweight)  # (N, K/2)
            for r0, r1 in row_chunks(self.out_features, self.in_features, 64):
                packed[r0:r1] = pack_int4(unpack_nibbles(self.qweight[r0:r1]), layout)
            self.qweight = packed
        else:
            self.qweight = pack_int4(unpack_nibbles(self.qweight), layout)
        self._sz = scales_and_zeros(self.scales, self.zeros)  # (K/G, N, 2): one copy, the buffers become views
        self.scales, self.zeros = self._sz[..., 0].t(), self._sz[..., 1].t()
        self.layout = layout

    def codes(self) -> torch.Tensor:
        """The integer codes (N, K): int8 in [-127, 127], or int4 as uint8 in [0, 15]."""
        if self.scheme == "int8":
            return self.qweight
        if self.layout == "rows":
            return unpack_nibbles(self.qweight)
        return unpack_int4(self.qweight, self.layout, self.out_features, self.in_features, self.group_size,
                           self.dtype)

    def _set_rows_layout(self) -> None:
        """Back to the checkpoint layout (before a device move, a reload or a new weight)."""
        if self.layout != "rows":
            self.qweight = pack_nibbles(self.codes())
            self.scales, self.zeros = self.scales.contiguous(), self.zeros.contiguous()
            self._sz, self.layout = None, "rows"

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight W (N, K) the codes stand for, in `dtype` (default: the compute dtype)."""
        dtype = dtype or self.dtype
        if self.scheme == "int8":
            return dequantize_int8(self.qweight, self.scales, dtype)
        return dequantize_int4(self.codes(), self.scales, self.zeros, dtype)

    # ------------------------------------------------------------------ compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N)."""
        if self.qweight.is_meta:
            raise QuantError("this QuantLinear has no weights yet (it was prepared on the meta device); fill it "
                             "with load_weight(weight) or load a quantized checkpoint")
        rows = x.numel() // self.in_features
        if not self.fast or rows > FAST_MAX_ROWS or x.dtype != self.dtype or x.device != self.qweight.device:
            return self.reference(x)
        if self.scheme == "int8":
            y = int8_mm(x.reshape(-1, self.in_features), self.qweight, self.scales)
        elif self.scheme == "int4" and self.layout != "rows":
            y = int4_mm(x.reshape(-1, self.in_features), self.qweight, self.layout, self.group_size, self._sz)
        else:
            return self.reference(x)
        y = y.view(*x.shape[:-1], self.out_features)  # (..., N)
        return y + self.bias if self.bias is not None else y

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The readable path: W = s * q (int8) or s * (q - 8) + z (int4), then an ordinary Linear."""
        return F.linear(x, self.dequantize(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    # ------------------------------------------------------------------ state dict and device moves

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.layout != "rows":  # a checkpoint holds the documented layout, whatever the kernel wants
            destination[prefix + "qweight"] = pack_nibbles(self.codes())
        for name in ("scales", "zeros"):
            if prefix + name in destination:
                destination[prefix + name] = destination[prefix + name].contiguous()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._set_rows_layout()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.pack()

    def _apply(self, fn, recurse=True):
        self._set_rows_layout()  # a packed layout belongs to one device: unpack, move, pack for the new one
        out = super()._apply(fn, recurse)
        self.pack()
        return out


# ---------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class QuantReport:
    """What quantize_model did."""
    scheme: str
    group_size: int | None  # int4's group; None for int8 (one scale per row)
    quantize_vision: bool
    layers: tuple[str, ...]  # the Linears replaced by QuantLinears
    float_bytes: int  # bytes of those layers' weights before
    quant_bytes: int  # bytes of their codes, scales and zeros after
    model_bytes_before: int  # every parameter and buffer of the model
    model_bytes_after: int


def model_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (what the model holds in memory)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def targets(model: nn.Module, quantize_vision: bool = False) -> list[str]:
    """Names of the Linears to quantize: the decoder's and lm_head, plus the vision tower's if asked."""
    prefixes = ("model.language_model.", "lm_head") + (("model.visual.",) if quantize_vision else ())
    names = [n for n, m in model.named_modules() if n.startswith(prefixes) and isinstance(m, (nn.Linear, QuantLinear))]
    done = [n for n in names if isinstance(model.get_submodule(n), QuantLinear)]
    if done:
        raise QuantError(f"{len(done)} layer(s) are already quantized (e.g. {done[0]}); quantize a float model, or "
                         "load the float checkpoint again to change the scheme")
    return names


def _checked_targets(model, scheme, group_size, quantize_vision) -> list[str]:
    """The targets, after checking that every one can take the scheme (so nothing is half-replaced)."""
    names = targets(model, quantize_vision)
    for n in names:
        check_scheme(scheme, group_size if scheme == "int4" else None, model.get_submodule(n).in_features, n)
    return names


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf, module)


def prepare(model: nn.Module, scheme: str = "int8", group_size: int = 128, quantize_vision: bool = False) -> list[str]:
    """Replace the target Linears by empty QuantLinears of the same widths, device (e.g. meta) and dtype, for a
    loader to fill with `load_weight`. Returns their names. Records the settings on `model.quantization_config`."""
    names = _checked_targets(model, scheme, group_size, quantize_vision)
    model.quantization_config = quantization_config(scheme, group_size, quantize_vision, model.dtype)
    for n in names:
        old = model.get_submodule(n)
        _replace(model, n, QuantLinear(old.in_features, old.out_features, old.bias is not None, scheme, group_size,
                                       old.weight.dtype, old.weight.device))
    return names


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: str = "int8", group_size: int = 128,
                   quantize_vision: bool = False) -> QuantReport:
    """Quantize a loaded model in place (each Linear is replaced as soon as it is quantized, so memory never holds
    two copies of more than one layer). Returns what was done."""
    names = _checked_targets(model, scheme, group_size, quantize_vision)
    before = model_bytes(model)
    float_bytes = quant_bytes = 0
    for n in names:
        old = model.get_submodule(n)
        float_bytes += old.weight.numel() * old.weight.element_size()
        new = QuantLinear.from_linear(old, scheme, group_size)
        quant_bytes += sum(b.numel() * b.element_size() for b in new.buffers())
        _replace(model, n, new)
    model.quantization_config = quantization_config(scheme, group_size, quantize_vision, model.dtype)
    return QuantReport(scheme, group_size if scheme == "int4" else None, quantize_vision, tuple(names), float_bytes,
                       quant_bytes, before, model_bytes(model))


def quantization_config(scheme: str = "int8", group_size: int = 128, quantize_vision: bool = False,
                        dtype: torch.dtype = torch.bfloat16) -> dict:
    """The dict recorded as config.json's "quantization_config" (the layout is in this module's docstring)."""
    check_scheme(scheme, group_size if scheme == "int4" else None)
    return {"quant_method": FORMAT, "format_version": 1, "scheme": scheme, "bits": 8 if scheme == "int8" else 4,
            "group_size": group_size if scheme == "int4" else None, "zero_point": scheme == "int4",
            "scale_dtype": str(dtype).removeprefix("torch."), "quantize_vision": bool(quantize_vision)}


def read_quantization_config(d, where: str = "quantization_config") -> tuple[str, int | None, bool]:
    """(scheme, group_size, quantize_vision) from a quantization_config dict, refusing anything else."""
    if not isinstance(d, dict) or d.get("quant_method") != FORMAT or d.get("format_version") != 1:
        raise QuantError(f"{where}: {d!r:.200} is not a minglm4v quantization config (quant_method "
                         f"{FORMAT!r}, format_version 1); this checkpoint was quantized by another tool")
    scheme, group, vision = d.get("scheme"), d.get("group_size"), d.get("quantize_vision")
    check_scheme(scheme, group if scheme == "int4" else None, where=where)
    if not isinstance(vision, bool):
        raise QuantError(f"{where}: quantize_vision={vision!r} must be true or false")
    if d != quantization_config(scheme, group or 128, vision, getattr(torch, d.get("scale_dtype", ""), None)):
        raise QuantError(f"{where}: {d} does not match what {FORMAT} writes for scheme={scheme}; re-quantize")
    return scheme, group, vision
