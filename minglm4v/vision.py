"""The GLM-4.1V vision tower: rows of patch pixels in, one feature vector per image placeholder token out.

Mirrors transformers' `Glm4vVisionModel` and its parts (`Glm4vVisionPatchEmbed`, `Glm4vVisionEmbeddings`,
`Glm4vVisionRotaryEmbedding`, `Glm4vVisionBlock`, `Glm4vVisionAttention`, `Glm4vVisionPatchMerger`), docs/glm41v.md §4:

    pixel rows (N, 1176) -> patch embed (a Conv3d that is really a Linear) -> RMSNorm -> + learned position table
    resampled to the image's grid -> depth x [pre-norm attention with 2-D rotary, pre-norm SwiGLU MLP] -> RMSNorm
    -> m x m downsample conv -> patch merger (Linear, LayerNorm, GELU, SwiGLU)  -> (N / m^2, out_hidden_size)

Several images (and the temporal patches of a video) go through in one call; attention never crosses from one to
another (see `vision_attention.py`). Rows arrive in *merge-window order* (patchify.py): every m*m consecutive rows are
one m x m window, windows in raster order; everything position-dependent here follows that order.

Shapes: N patches, n items (images or video temporal patches), t h w grid (in patches), m merge size, P position-table
entries (S x S), C vision width (hidden_size), Co out_hidden_size, I intermediate_size, H heads, D head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig
from .errors import VisionInputError
from .norms import RMSNorm
from .vision_attention import (
    VisionAttention,
    merge_window_order,
    segment_lengths,
    vision_rotary_angles,
)

# ---------------------------------------------------------------------- positions

def interpolate_pos_table(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resample the learned S x S position table to an h x w patch grid: (P, C) -> (h, w, C) float32.

    Bicubic (PyTorch's cubic kernel, A = -0.75) with half-pixel centres: output cell (r, c) reads the table at
    source coordinates ((r + 0.5) * S/h - 0.5, (c + 0.5) * S/w - 0.5), taps clamped to the table's edge.
    This is the same sample transformers takes with `grid_sample(..., align_corners=False, padding_mode="border")`
    (docs/glm41v.md §4 step 5); a grid of S x S gives back the table itself."""
    P, C = table.shape
    S = int(round(P**0.5))
    if S * S != P:
        raise VisionInputError(f"position table has {P} rows, which is not a square number; a GLM-4.1V table is "
                               f"(image_size / patch_size)^2 rows")
    grid = table.float().reshape(S, S, C).permute(2, 0, 1)  # (C, S, S)
    out = F.interpolate(grid[None], size=(h, w), mode="bicubic", align_corners=False)[0]  # (C, h, w)
    return out.permute(1, 2, 0)  # (h, w, C)


def position_embeddings(table: torch.Tensor, grid_thw: torch.Tensor, m: int) -> torch.Tensor:
    """(N, C) float32: each item's resampled table in merge-window order, repeated for each temporal patch."""
    out, cache = [], {}
    for t, h, w in grid_thw.tolist():
        if (h, w) not in cache:
            cache[h, w] = merge_window_order(interpolate_pos_table(table, h, w), m)  # (h*w, C)
        out.append(cache[h, w].repeat(t, 1))  # (t*h*w, C)
    return torch.cat(out)


# ---------------------------------------------------------------------- layers

class PatchEmbed(nn.Module):
    """One pixel row (C_in * tp * p * p = 1176 values) -> one C-vector.

    The checkpoint stores a Conv3d whose kernel equals its stride and its input: it sees each patch exactly once,
    so it is a Linear on the flattened patch, with weight `proj.weight.reshape(C, 1176)` (same c, t, y, x order as
    the row). We keep the Conv3d (its weight shape is what checkpoints hold) and compute the Linear."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        k = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel_size=k, stride=k, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight.reshape(self.proj.out_channels, -1)  # (C, 1176)
        return F.linear(x, w, self.proj.bias)  # (N, C)


class VisionMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). Its width is out_hidden_size (4096 in the 9B), not intermediate_size."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        C, hidden = config.hidden_size, config.out_hidden_size
        self.gate_proj = nn.Linear(C, hidden, bias=False)
        self.up_proj = nn.Linear(C, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    """Pre-norm ViT block: x = x + attn(norm1(x)); x = x + mlp(norm2(x))."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = VisionAttention(config)
        self.norm2 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x, cos, sin, lengths: list[int], return_attentions: bool = False):
        """x (N, C); cos, sin (N, D); lengths: patches per attention segment. Returns x, or (x, [(H, L, L)])."""
        a = self.attn(self.norm1(x), cos, sin, lengths, return_attentions=return_attentions)
        a, attn = a if return_attentions else (a, None)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return (x, attn) if return_attentions else x


class PatchMerger(nn.Module):
    """x = proj(x); x = gelu(LayerNorm(x)) (exact, erf); out = down(silu(gate(x)) * up(x)), SwiGLU width Ci."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        Co, Ci = config.out_hidden_size, config.intermediate_size
        self.proj = nn.Linear(Co, Co, bias=False)
        self.post_projection_norm = nn.LayerNorm(Co, eps=1e-5)
        self.gate_proj = nn.Linear(Co, Ci, bias=False)
        self.up_proj = nn.Linear(Co, Ci, bias=False)
        self.down_proj = nn.Linear(Ci, Co, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.post_projection_norm(self.proj(x)), approximate="none")
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ---------------------------------------------------------------------- the tower

class _PositionTable(nn.Module):
    """Holds `position_embedding.weight` (P, C) under the checkpoint's name; see `interpolate_pos_table`."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.position_embedding = nn.Embedding(config.num_positions, config.hidden_size)


class VisionModel(nn.Module):
    """`model.visual`: `VisionModel(config)(pixel_values (N, patch_dim), grid_thw (n, 3)) -> (N / m^2, Co)`.

    A grid row [t, h, w] with t > 1 is a video of t temporal patches; each attends only within itself.
    Output rows: item by item, merged tokens in raster order, i.e. the order of the placeholder tokens."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config  # validated: e.g. attention_bias is refused by VisionConfig
        C, Co, m = config.hidden_size, config.out_hidden_size, config.spatial_merge_size
        self.patch_embed = PatchEmbed(config)
        self.post_conv_layernorm = RMSNorm(C, config.rms_norm_eps)
        self.embeddings = _PositionTable(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.post_layernorm = RMSNorm(C, config.rms_norm_eps)
        self.downsample = nn.Conv2d(C, Co, kernel_size=m, stride=m, bias=True)
        self.merger = PatchMerger(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    def check_inputs(self, pixel_values: torch.Tensor, grid_thw) -> torch.Tensor:
        """Validate the pair and return grid_thw as an (n, 3) long tensor."""
        cfg, m = self.config, self.config.spatial_merge_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 2:
            raise VisionInputError(f"pixel_values must be a 2-D tensor (patches, {cfg.patch_dim}), got "
                                   f"{getattr(pixel_values, 'shape', type(pixel_values).__name__)}; "
                                   "use minglm4v.patchify.preprocess to make it")
        if not pixel_values.is_floating_point():
            raise VisionInputError(f"pixel_values has dtype {pixel_values.dtype}, but it holds normalised pixels "
                                   "(floating point); use minglm4v.patchify.preprocess to make it")
        if pixel_values.shape[1] != cfg.patch_dim:
            raise VisionInputError(f"pixel_values rows have {pixel_values.shape[1]} values, but this vision config "
                                   f"expects patch_dim = 3 * {cfg.temporal_patch_size} * {cfg.patch_size}^2 = "
                                   f"{cfg.patch_dim}; preprocess with the same patch_size/temporal_patch_size")
        grid = torch.as_tensor(grid_thw)
        if grid.ndim != 2 or grid.shape[1] != 3 or grid.dtype.is_floating_point or grid.dtype == torch.bool:
            raise VisionInputError(f"grid_thw must be an integer tensor of shape (items, 3) = [t, h, w] per image, "
                                   f"got dtype {grid.dtype} shape {tuple(grid.shape)}")
        grid = grid.long()
        if (grid <= 0).any():
            raise VisionInputError(f"grid_thw has a zero or negative entry: {grid.tolist()}")
        bad = [g for g in grid.tolist() if g[1] % m or g[2] % m]
        if bad:
            raise VisionInputError(f"grid_thw rows {bad}: h and w must be multiples of spatial_merge_size={m} "
                                   f"(resize images to multiples of patch_size * m = {cfg.patch_size * m} pixels)")
        total = int(grid.prod(-1).sum())
        if total != pixel_values.shape[0]:
            raise VisionInputError(f"pixel_values has {pixel_values.shape[0]} rows, but grid_thw {grid.tolist()} "
                                   f"describes sum(t*h*w) = {total} patches; pass the grid that came with the pixels")
        finite = torch.isfinite(pixel_values)
        if not bool(finite.all()):
            n_nan, n_inf = int(pixel_values.isnan().sum()), int(pixel_values.isinf().sum())
            row = int((~finite).any(-1).nonzero()[0])
            raise VisionInputError(f"pixel_values holds {n_nan} NaN and {n_inf} inf values (the first in row {row}); "
                                   "the pixels themselves are not finite, so the model cannot see them: check how "
                                   "they were made (minglm4v.patchify.preprocess gives finite pixels)")
        return grid.to(pixel_values.device)

    def forward(self, pixel_values: torch.Tensor, grid_thw, return_attentions: bool = False):
        """Merged features (N / m^2, Co) in the weights' dtype.

        With `return_attentions=True` returns (features, attentions), attentions[block][segment] = (H, L, L) softmax
        weights of each attention segment (an image, or one temporal patch of a video). Slower; for pictures."""
        cfg, m = self.config, self.config.spatial_merge_size
        grid = self.check_inputs(pixel_values, grid_thw)
        lengths = segment_lengths(grid)  # patches per attention segment

        x = self.patch_embed(pixel_values.to(self.dtype))  # (N, C)
        x = self.post_conv_layernorm(x)
        table = self.embeddings.position_embedding.weight
        x = x + position_embeddings(table, grid, m).to(x.dtype)  # (N, C)

        angles = vision_rotary_angles(grid, cfg.head_dim, m).to(x.device)  # (N, D) float32
        cos, sin = angles.cos(), angles.sin()

        attentions = []
        for blk in self.blocks:
            x = blk(x, cos, sin, lengths, return_attentions=return_attentions)
            if return_attentions:
                x, a = x
                attentions.append(a)
        x = self.post_layernorm(x)

        # m x m downsample: a Conv2d with kernel = stride = m over each merge window, i.e. a Linear on the window.
        # Consecutive m*m rows are one window (merge-window order), rows (mh, mw) inside it.
        C = x.shape[-1]
        x = x.reshape(-1, m, m, C).permute(0, 3, 1, 2)  # (N/m^2, C, m, m), the conv weight's (in, kh, kw) order
        w = self.downsample.weight.reshape(self.downsample.out_channels, -1)  # (Co, C*m*m)
        x = F.linear(x.reshape(x.shape[0], -1), w, self.downsample.bias)  # (N/m^2, Co)

        x = self.merger(x)  # (N/m^2, Co)
        return (x, attentions) if return_attentions else x
