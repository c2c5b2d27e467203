"""The fast matmul paths of QuantLinear: PyTorch's packed weight-only kernels, where the device has one.

    int8, CPU:  torch._weight_int8pack_mm(x (M, K), q int8 (N, K), s (N,))          = x @ (s q)^T
    int4, CPU:  torch._convert_weight_to_int4pack_for_cpu(codes int32 (N, K), 1)   -> packed uint8 (N, K/2)
                torch._weight_int4pack_mm_for_cpu(x (M, K), packed, G, sz)          = x @ (s (q - 8) + z)^T
    int4, CUDA: torch._convert_weight_to_int4pack(bytes uint8 (N, K/2), tiles)     (even column in the high nibble)
                torch._weight_int4pack_mm(x bf16 (M, K), packed, G, sz)            ("tinygemm")
    int8, elsewhere (a GPU): (x @ q^T) * s, the scale of a row factored out of its dot product; eager PyTorch
                converts q to x's dtype for the matmul, torch.compile fuses that conversion into the matmul
where sz (K/G, N, 2) holds s in [..., 0] and z in [..., 1], in x's dtype. Anything else (int4 with N not a multiple
of 64, int4 on a GPU in float32, ...) runs QuantLinear's reference path (dequantize, then F.linear).

The packed int4 layouts are the kernels' business and differ by device. To write a checkpoint (or run the reference
path) the codes are read back: on the CPU by the inverse of the tiling the kernel uses for N a multiple of 64
(checked once per process against the kernel's own output: where it differs, e.g. another CPU, int4 runs the
reference path), on CUDA by the kernel itself: the identity matrix times the weight, with s = 1 and z = 8, returns
the codes exactly.

The CUDA path follows PyTorch's documented signatures but has not been run by this project's tests (no GPU here).

Shapes: M rows of x, N output features, K input features, G group size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CPU_TILING_OK: bool | None = None  # does the CPU kernel pack as cpu_tile_pack does? (probed once)


def int8_fast(device: torch.device) -> bool:
    """Whether the device has PyTorch's int8 weight-only kernel."""
    return device.type == "cpu"


def int8_mm(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> (M, N) = x @ (s q)^T, by the device's int8 kernel or with the scale factored out."""
    if int8_fast(x.device):
        return torch._weight_int8pack_mm(x, q, s)
    return int8_mm_factored(x, q, s)


def int8_mm_factored(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x @ (s q)^T as (x @ q^T) * s: row n's scale multiplies its dot product once, not each of its K weights."""
    return F.linear(x, q.to(x.dtype)) * s  # |q| <= 127: exact in bf16 and fp16


def int4_layout(device: torch.device, dtype: torch.dtype, N: int, K: int) -> str | None:
    """The packed layout the device's int4 kernel wants ("cpu", "cuda"), or None where there is no kernel."""
    if (device.type == "cpu" and N % 64 == 0 and K % 32 == 0 and dtype in (torch.float32, torch.bfloat16,
                                                                              torch.float16) and _cpu_tiling_ok()):
        return "cpu"
    if device.type == "cuda" and N % 8 == 0 and K % 32 == 0 and dtype == torch.bfloat16:
        return "cuda"
    return None


def _inner_k_tiles(K: int) -> int:
    return 8 if K % 128 == 0 else 4 if K % 64 == 0 else 2


def scales_and_zeros(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """s, z (N, K/G) -> sz (K/G, N, 2), the kernels' layout."""
    return torch.stack([s.t(), z.t()], dim=-1).contiguous()


def cpu_tile_pack(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, K), N a multiple of 64 -> (N, K/2) bytes in the CPU kernel's tiling: per tile of 64 rows, column by
    column, 32 bytes per column; byte r % 32 of a column holds row r (r < 32 in the low nibble, r >= 32 high)."""
    N, K = codes.shape
    t = codes.to(torch.uint8).view(N // 64, 2, 32, K)  # (tile, nibble, row in half tile, column)
    t = t.permute(0, 3, 2, 1)  # (tile, column, row in half tile, nibble)
    return (t[..., 0] | (t[..., 1] << 4)).reshape(N, K // 2)


def cpu_tile_unpack(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of cpu_tile_pack: (N, K/2) bytes -> codes (N, K) uint8."""
    N, half = packed.shape
    K = 2 * half
    t = packed.reshape(N // 64, K, 32)  # (tile, column, row in half tile)
    t = torch.stack([t & 0x0F, t >> 4], dim=-1)  # (tile, column, row in half tile, nibble)
    return t.permute(0, 3, 2, 1).reshape(N, K)


def _cpu_tiling_ok() -> bool:
    global _CPU_TILING_OK
    if _CPU_TILING_OK is None:
        probe = torch.randint(0, 16, (128, 256), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
        _CPU_TILING_OK = torch.equal(torch._convert_weight_to_int4pack_for_cpu(probe, 1), cpu_tile_pack(probe))
    return _CPU_TILING_OK


def pack_int4(codes: torch.Tensor, layout: str) -> torch.Tensor:
    """codes (N, K) in [0, 15] on the target device -> the kernel's packed tensor."""
    if layout == "cpu":
        return torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    if layout == "cuda":
        c = codes.to(torch.uint8)
        return torch._convert_weight_to_int4pack((c[:, 0::2] << 4) | c[:, 1::2], _inner_k_tiles(codes.shape[1]))
    raise AssertionError(layout)


def int4_mm(x: torch.Tensor, packed: torch.Tensor, layout: str, group_size: int, sz: torch.Tensor) -> torch.Tensor:
    """x (M, K) -> (M, N) through the packed int4 kernel."""
    if layout == "cpu":
        return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, sz)
    return torch._weight_int4pack_mm(x, packed, group_size, sz)


def unpack_int4(packed: torch.Tensor, layout: str, N: int, K: int, group_size: int,
                dtype: torch.dtype) -> torch.Tensor:
    """The codes (N, K) uint8 back from a packed tensor."""
    if layout == "cpu":
        return cpu_tile_unpack(packed)
    # the kernel as its own decoder: identity rows, s = 1, z = 8, so row k of the product is column k of the codes
    sz = torch.zeros(K // group_size, N, 2, dtype=dtype, device=packed.device)
    sz[..., 0], sz[..., 1] = 1, 8
    codes = torch.empty(N, K, dtype=torch.uint8, device=packed.device)
    for k0 in range(0, K, 1024):
        k1 = min(k0 + 1024, K)
        eye = torch.zeros(k1 - k0, K, dtype=dtype, device=packed.device)  # (c, K) one-hot rows
        eye[torch.arange(k1 - k0), torch.arange(k0, k1)] = 1
        codes[:, k0:k1] = int4_mm(eye, packed, layout, group_size, sz).round().to(torch.uint8).t()
    return codes
