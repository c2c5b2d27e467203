"""Vision attention: where each patch sits (2-D rotary angles) and whom it may look at (its own image only).

Mirrors transformers' `Glm4vVisionRotaryEmbedding`, `apply_rotary_pos_emb_vision`, `Glm4vVisionAttention` and the
`cu_seqlens` / `position_ids` helpers of the GLM-4.1V vision tower (docs/glm41v.md §4 steps 3, 4 and 6).

* 2-D rotary: half of each head rotates with the patch's row, the other half with its column; pairs are
  (i, i + D/2) ("rotate half", NeoX style), computed in float32.
* Attention is block-diagonal: an image, or one temporal patch of a video, is a segment that attends only to itself.
  We never build an N x N mask; runs of equal-length segments go through `scaled_dot_product_attention` as one
  batch, so a video of t temporal patches costs one call.

Shapes: N patches, n items, t h w grid, m merge size, H heads, D head dim, L patches in one segment, k segments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig


def merge_window_order(x: torch.Tensor, m: int) -> torch.Tensor:
    """(h, w, ...) in raster order -> (h*w, ...) in merge-window order (windows raster, then raster inside)."""
    h, w = x.shape[:2]
    x = x.reshape(h // m, m, w // m, m, *x.shape[2:])  # (h/m, m, w/m, m, ...)
    x = x.transpose(1, 2)  # (h/m, w/m, m, m, ...)
    return x.reshape(h * w, *x.shape[4:])  # (h*w, ...)


def patch_coords(grid_thw: torch.Tensor, m: int) -> torch.Tensor:
    """(N, 2) long: the (row, col) of every patch in its own grid, in pixel-row order (repeated for each of t)."""
    out = []
    for t, h, w in torch.as_tensor(grid_thw).tolist():
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w) each
        rc = merge_window_order(torch.stack([rows, cols], dim=-1), m)  # (h*w, 2)
        out.append(rc.repeat(t, 1))  # (t*h*w, 2)
    return torch.cat(out)


def segment_lengths(grid_thw: torch.Tensor) -> list[int]:
    """Patches per attention segment: h*w, repeated t times per item (cu_seqlens without the cumulative sum)."""
    return [h * w for t, h, w in torch.as_tensor(grid_thw).tolist() for _ in range(t)]


def rotary_inv_freq(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """(D/4,) float32: inv_freq_j = 1 / theta^(2j / (D/2)), j = 0 .. D/4 - 1 (shared by rows and columns)."""
    half = head_dim // 2
    return 1.0 / theta ** (torch.arange(0, half, 2, dtype=torch.float32) / half)


def vision_rotary_angles(grid_thw: torch.Tensor, head_dim: int, m: int) -> torch.Tensor:
    """(N, D) float32 rotation angles of every patch, in pixel-row order.

    angle(row, col) = [row * inv_freq, col * inv_freq] (D/2 values), written twice so that dim i and dim i + D/2,
    which rotate together, share one angle."""
    rc = patch_coords(grid_thw, m).float()  # (N, 2)
    inv_freq = rotary_inv_freq(head_dim)  # (D/4,)
    half = (rc[:, :, None] * inv_freq).flatten(1)  # (N, 2, D/4) -> (N, D/2): rows' angles, then columns'
    return torch.cat([half, half], dim=-1)  # (N, D)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dim (halves of D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (N, H, D), cos/sin (N, D): rotate each pair (i, i + D/2) by its angle, in float32, cast back."""
    x32 = x.float()
    cos, sin = cos[:, None, :].float(), sin[:, None, :].float()  # (N, 1, D), broadcast over heads
    # x' = x * cos(a) + rotate_half(x) * sin(a)
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


def _runs(lengths: list[int]):
    """Group consecutive equal lengths: yields (start row, segment length L, number of segments k)."""
    start, i = 0, 0
    while i < len(lengths):
        j = i
        while j < len(lengths) and lengths[j] == lengths[i]:
            j += 1
        yield start, lengths[i], j - i
        start += lengths[i] * (j - i)
        i = j


class VisionAttention(nn.Module):
    """Bidirectional multi-head attention inside each segment, with 2-D rotary on q and k; qkv and proj have no bias.
    The same attribute names as decoder.TextAttention (every head has its own keys: num_kv_heads = num_heads)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        C = config.hidden_size
        self.num_heads = self.num_kv_heads = config.num_heads  # H
        self.head_dim = config.head_dim  # D = C / H
        self.qkv = nn.Linear(C, 3 * C, bias=False)
        self.proj = nn.Linear(C, C, bias=False)

    def forward(self, x, cos, sin, lengths: list[int], return_attentions: bool = False):
        """x (N, C), cos/sin (N, D), lengths summing to N. Returns (N, C), or ((N, C), [(H, L, L) per segment])."""
        N, H, D = x.shape[0], self.num_heads, self.head_dim
        q, k, v = self.qkv(x).view(N, 3, H, D).unbind(1)  # 3 x (N, H, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        outs, attentions = [], []
        for start, L, n_seg in _runs(lengths):
            # k segments of equal length L become a batch: (k*L, H, D) -> (k, H, L, D)
            qs, ks, vs = (z[start:start + n_seg * L].view(n_seg, L, H, D).transpose(1, 2) for z in (q, k, v))
            if return_attentions:
                # softmax(q k^T / sqrt(D)) in float32, as the eager reference does
                w = torch.softmax((qs @ ks.transpose(-1, -2)) * D**-0.5, dim=-1, dtype=torch.float32)  # (k, H, L, L)
                o = w.to(vs.dtype) @ vs  # (k, H, L, D)
                attentions.extend(w.unbind(0))
            else:
                o = F.scaled_dot_product_attention(qs, ks, vs)  # (k, H, L, D), softmax(q k^T / sqrt(D)) v
            outs.append(o.transpose(1, 2).reshape(n_seg * L, H * D))  # (k*L, C)
        out = self.proj(torch.cat(outs))  # (N, C)
        return (out, attentions) if return_attentions else out
