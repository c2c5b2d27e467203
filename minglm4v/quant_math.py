"""Weight-only quantization math: a float weight (N, K) -> small integer codes and the scales that undo them.

No public reference function is mirrored; these are the textbook schemes (the same formulas torchao's int8
weight-only and int4 "tinygemm" weight-only use), chosen so that PyTorch's own packed kernels read them.

int8, symmetric, one scale per output channel (row n):
    s_n = max_k |W[n, k]| / 127                   q = round(W / s_n) in [-127, 127]        W ~= s_n * q
int4, asymmetric, one scale and one offset per group of G input columns (row n, group g = columns gG ... gG+G-1):
    s = (max - min) / 15      z = min + 8 s      q = round((W - z) / s + 8) in [0, 15]     W ~= s * (q - 8) + z
z is the value of code 8 (the middle of the group's range) in the compute dtype, which is how PyTorch's int4 kernels
take it. Asymmetric costs one more number per group (2 bytes per G weights) and, for a group whose values are not
centred on zero, uses all 16 codes on the range actually present instead of wasting some on the empty side.

Rounding error: every weight is off by at most half a step, s/2, plus the rounding of s and z to the compute
dtype (the codes are computed against the stored s and z, so that part is small; see tests/test_ch10_quant.py).
A row (int8) or group (int4) that is all zero, or constant, is represented exactly (up to the dtype's rounding of
the constant): its step is chosen so that the constant is a code.

Shapes: N output features (rows), K input features (columns), G group size, K/G groups per row.
"""

from __future__ import annotations

import torch

from .errors import QuantError

SCHEMES = ("int8", "int4")
GROUP_SIZES = (32, 64, 128)  # int4 groups of input columns; int8 has one scale per row
ROW_CHUNK_ELEMENTS = 1 << 22  # quantize this many weights at a time: float32 temporaries stay at 16 MiB


def check_scheme(scheme: str, group_size: int | None, in_features: int | None = None, where: str = "") -> None:
    """Refuse a scheme, group size or width that cannot be quantized, saying what would work."""
    at = f" ({where})" if where else ""
    if scheme not in SCHEMES:
        raise QuantError(f"scheme={scheme!r}{at}: choose one of {SCHEMES}")
    if scheme == "int4":
        if group_size not in GROUP_SIZES or isinstance(group_size, bool):
            raise QuantError(f"group_size={group_size!r}{at}: int4 groups are {GROUP_SIZES} input columns")
        if in_features is not None and in_features % group_size:
            fits = [g for g in GROUP_SIZES if in_features % g == 0]
            raise QuantError(f"in_features={in_features}{at} is not a multiple of group_size={group_size}, so the "
                             f"last group would be partial; use group_size={fits[-1] if fits else None} "
                             f"{'(it divides the width)' if fits else '-- none divides it: keep this layer in float'}"
                             ", or int8 (one scale per row, any width)")


def row_chunks(n_rows: int, n_cols: int, multiple: int = 1):
    """Row ranges [r0, r1) of about ROW_CHUNK_ELEMENTS weights, `multiple` rows at least and a multiple of it."""
    step = max(multiple, ROW_CHUNK_ELEMENTS // max(n_cols, 1) // multiple * multiple)
    for r0 in range(0, n_rows, step):
        yield r0, min(r0 + step, n_rows)


def quantize_int8(w: torch.Tensor, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """W (N, K) -> (q int8 (N, K), s (N,) in `dtype`, default W's). Row by row chunks, in float32."""
    dtype = dtype or w.dtype
    N, K = w.shape
    q = torch.empty(N, K, dtype=torch.int8, device=w.device)
    s = torch.empty(N, dtype=dtype, device=w.device)
    for r0, r1 in row_chunks(N, K):
        w32 = w[r0:r1].float()  # (n, K)
        amax = w32.abs().amax(dim=1)  # (n,)
        scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax)).to(dtype)  # a zero row: step 1, codes 0
        # codes against the scale as stored, so the only error left is the rounding to a code
        q[r0:r1] = torch.round(w32 / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
        s[r0:r1] = scale
    return q, s


def dequantize_int8(q: torch.Tensor, s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(q (N, K), s (N,)) -> W (N, K) in `dtype`: W = s * q, computed in float32."""
    return (q.float() * s.float()[:, None]).to(dtype)


def quantize_int4(w: torch.Tensor, group_size: int, dtype: torch.dtype | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (N, K) -> (codes uint8 (N, K) in [0, 15], s (N, K/G), z (N, K/G) in `dtype`, default W's)."""
    dtype = dtype or w.dtype
    N, K = w.shape
    check_scheme("int4", group_size, K)
    G = group_size
    q = torch.empty(N, K, dtype=torch.uint8, device=w.device)
    s = torch.empty(N, K // G, dtype=dtype, device=w.device)
    z = torch.empty(N, K // G, dtype=dtype, device=w.device)
    for r0, r1 in row_chunks(N, K):
        wg = w[r0:r1].float().view(r1 - r0, K // G, G)  # (n, K/G, G)
        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)  # (n, K/G)
        # a constant group has no range: pick the step so that the constant itself is code 0 (exact)
        flat = torch.where(lo != 0, lo.abs() / 8, torch.ones_like(lo))
        scale = torch.where(hi > lo, (hi - lo) / 15, flat).to(dtype)
        zero = (lo + 8 * scale.float()).to(dtype)  # the value of code 8
        codes = torch.round((wg - zero.float()[..., None]) / scale.float()[..., None] + 8)  # (n, K/G, G)
        q[r0:r1] = codes.clamp_(0, 15).to(torch.uint8).view(r1 - r0, K)
        s[r0:r1], z[r0:r1] = scale, zero
    return q, s, z


def dequantize_int4(q: torch.Tensor, s: torch.Tensor, z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(codes (N, K), s (N, K/G), z (N, K/G)) -> W (N, K) in `dtype`: W = s (q - 8) + z, in float32."""
    N, K = q.shape
    G = K // s.shape[1]
    qg = q.float().view(N, K // G, G)  # (N, K/G, G)
    w = (qg - 8) * s.float()[..., None] + z.float()[..., None]
    return w.view(N, K).to(dtype)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes (N, K) -> bytes (N, K/2): byte j of a row holds column 2j (low 4 bits) and 2j+1 (high 4 bits)."""
    c = codes.to(torch.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """bytes (N, K/2) -> codes (N, K) uint8, the inverse of pack_nibbles."""
    N, half = packed.shape
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).view(N, 2 * half)  # (N, K/2, 2) -> (N, K)
