# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · The vision encoder
#
# Chapter 01 turned a photo into `pixel_values` `(N, 1176)` and a grid `(t, h, w)`. This chapter rebuilds the
# vision tower that turns those rows into one feature vector per `<|image|>` token: `minglm4v/vision.py` (and
# `vision_attention.py` for the attention), mirroring transformers' `Glm4vVisionModel` (docs/glm41v.md §4).
#
# ```
# pixel rows (N, 1176)
#   -> patch embed: Conv3d(3 -> C, kernel = stride = (2, 14, 14))   == a Linear on the 1176-vector
#   -> RMSNorm
#   -> + learned 24x24 position table, resampled bicubically to this image's own h x w grid
#   -> depth x block:  x += attn(RMSNorm(x))   (2-D rotary on q, k; attention only inside one image)
#                      x += SwiGLU(RMSNorm(x)) (width out_hidden_size!)
#   -> RMSNorm
#   -> downsample: Conv2d(C -> Co, kernel = stride = 2) over each 2x2 merge window   (N/4, Co)
#   -> merger: Linear, LayerNorm, exact GELU, SwiGLU of width intermediate_size      (N/4, Co)
# ```
#
# Shapes follow the package legend: `N` patches, `t h w` grid, `m` merge size, `H` heads, `D` head dim, `C` ViT
# width, `Co` = `out_hidden_size`. For the 9B model `C = 1536`, `H = 12`, `D = 128`, `Co = 4096`, 24 blocks.
# Here we use small random configs so everything runs on a laptop CPU in seconds. **The weights are random**: the
# numbers and pictures show the *mechanics* (shapes, orders, which patch may look at which), not what a trained
# model sees. A later chapter trains a tiny model.

# %%
import sys

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minglm4v.config import VisionConfig, tiny
from minglm4v.patchify import load_image, preprocess, unpatchify
from minglm4v.vision import VisionModel, interpolate_pos_table, position_embeddings
from minglm4v.vision_attention import (
    apply_rotary,
    patch_coords,
    rotary_inv_freq,
    segment_lengths,
    vision_rotary_angles,
)

torch.manual_seed(0)
# A small tower with the real 24x24 position table (image_size 336 / patch 14) and 4 heads of 16 dims.
vcfg = VisionConfig(depth=2, hidden_size=64, num_heads=4, intermediate_size=128, out_hidden_size=64, image_size=336)
model = VisionModel(vcfg).eval()

# %%
# NBVAL_CHECK_OUTPUT
print("head_dim", vcfg.head_dim, "| position table", vcfg.num_positions, "=", vcfg.image_size // vcfg.patch_size,
      "x", vcfg.image_size // vcfg.patch_size, "| patch_dim", vcfg.patch_dim)
for name, p in list(model.named_parameters())[:6]:
    print(f"{name:42} {tuple(p.shape)}")
print("...", sum(p.numel() for p in model.parameters()), "parameters;", len(model.state_dict()), "tensors")

# %% [markdown]
# ## 1. Patch embedding: a Conv3d that is a Linear
#
# A pixel row holds one patch: 3 channels × 2 frames × 14 × 14 pixels, in `c, t, y, x` order. The checkpoint stores
# a `Conv3d` with `kernel = stride = (2, 14, 14)` over exactly that block: the kernel sees each patch once, in one
# position, so the convolution is a dot product of the flattened patch with each flattened filter, i.e. a `Linear`
# with weight `proj.weight.reshape(C, 1176)`. We keep the Conv3d parameter (so checkpoints load as they are) and
# compute the Linear.

# %%
# NBVAL_CHECK_OUTPUT
px = torch.randn(6, vcfg.patch_dim)
conv = model.patch_embed.proj
with torch.no_grad():
    as_conv = conv(px.view(6, 3, 2, 14, 14)).view(6, -1)            # (N, C): the checkpoint's view
    as_linear = F.linear(px, conv.weight.reshape(conv.out_channels, -1), conv.bias)   # (N, C)
    ours = model.patch_embed(px)
print("conv weight", tuple(conv.weight.shape), "-> linear weight", (conv.out_channels, vcfg.patch_dim))
print("conv vs linear agree:", torch.allclose(as_conv, as_linear, atol=1e-5),
      "| package agrees:", torch.equal(ours, as_linear))

# %% [markdown]
# Then an RMSNorm (`w * x / sqrt(mean(x²) + eps)`, computed in float32), and the learned position table is added.
#
# ## 2. The position table, resampled to every image's own grid
#
# The checkpoint has one learned vector per cell of a 24 × 24 grid (`embeddings.position_embedding.weight`,
# `(576, C)`), but images arrive with any grid, e.g. 22 × 32 patches for the cat photo. The table is resampled to the
# image's **unmerged** patch grid with bicubic interpolation at half-pixel centres: output cell `(r, c)` reads the
# table at `((r + 0.5)·24/h − 0.5, (c + 0.5)·24/w − 0.5)` (transformers does this with `grid_sample(...,
# align_corners=False, padding_mode="border")`; `F.interpolate(..., mode="bicubic", align_corners=False)` takes the
# same samples).
#
# A random table looks like noise, so to *see* the geometry we write a pattern into channel 0: a checkerboard of
# 4 × 4 cells with a bright corner.

# %%
S = 24
pattern = torch.zeros(S, S)
pattern[(torch.arange(S)[:, None] // 4 + torch.arange(S)[None, :] // 4) % 2 == 0] = 1.0
pattern[:4, :4] = 2.0                                        # mark the top-left corner
with torch.no_grad():
    model.embeddings.position_embedding.weight[:, 0] = pattern.flatten()
table = model.embeddings.position_embedding.weight.detach()   # (576, C)

cat = load_image("../data/cat.png")
cat_px, cat_grid = preprocess(cat)
grids = [(S, S), tuple(cat_grid[0, 1:].tolist()), (8, 20)]
fig, axes = plt.subplots(1, 3, figsize=(10, 2.9), dpi=100)
for ax, (h, w) in zip(axes, grids):
    img = interpolate_pos_table(table, h, w)[..., 0]           # (h, w): channel 0
    shown = ax.imshow(img, cmap="magma", vmin=-0.3, vmax=2.2, interpolation="nearest")   # one scale for all three
    ax.set_title(f"{h} x {w}" + (" (the table)" if (h, w) == (S, S) else ""), fontsize=9)
    ax.set_xlabel("patch column")
axes[0].set_ylabel("patch row")
fig.colorbar(shown, ax=list(axes), label="channel 0 of the position vector")
plt.show()

# %% [markdown]
# The 22 × 32 cat grid stretches the 24 columns of the table over 32 patches and squeezes 24 rows into 22: position
# vectors describe *relative* place in the image (top-left corner, middle, ...), whatever its size. Bicubic overshoots
# a little around sharp edges (values slightly below 0 and above 1), which a learned, smooth table hardly shows.
#
# The rows of `pixel_values` are not in raster order but in **merge-window order** (chapter 01): every 4 consecutive
# rows are one 2 × 2 window. The resampled table, the rotary angles and the downsample all follow that order;
# `patch_coords` gives the `(row, col)` of each pixel row:

# %%
# NBVAL_CHECK_OUTPUT
grid = torch.tensor([[1, 4, 6]])
rc = patch_coords(grid, m=2)                                    # (N, 2)
print("grid", grid.tolist(), "-> rows", len(rc))
print("first 12 (row, col):", [tuple(x) for x in rc[:12].tolist()])
pos = position_embeddings(table, grid, m=2)                     # (N, C), merge-window order
raster = interpolate_pos_table(table, 4, 6)                     # (h, w, C), raster order
r, c = rc[5].tolist()
print(f"row 5 of pos is raster cell ({r}, {c}):", torch.equal(pos[5], raster[r, c]))

# %% [markdown]
# ## 3. 2-D rotary embedding
#
# Each head of `D` dims is split in two halves of `D/2` pairs: dim `i` rotates together with dim `i + D/2`
# ("rotate half", NeoX style; the *text* decoder pairs neighbours instead, chapter 03). The first `D/4` pairs turn
# with the patch's **row**, the next `D/4` with its **column**, at frequencies `1/10000^(2j/(D/2))`:
#
# `angle(row, col) = [row·f_0, …, row·f_{D/4−1}, col·f_0, …, col·f_{D/4−1}]`, written twice (for `i` and `i + D/2`).
#
# Rotating `q` and `k` by angles that depend on position makes `q·k` depend only on the *offset* between two
# patches. The rotation runs in float32 even when the model runs in bfloat16.

# %%
# NBVAL_CHECK_OUTPUT
D = vcfg.head_dim
print("inv_freq (D/4 =", D // 4, "values):", [round(f, 4) for f in rotary_inv_freq(D).tolist()])
g = torch.tensor([[1, 16, 16]])
angles = vision_rotary_angles(g, D, m=2)                        # (N, D) float32
print("angles", tuple(angles.shape), angles.dtype, "| dims i and i+D/2 share an angle:",
      torch.equal(angles[:, : D // 2], angles[:, D // 2 :]))

# %% [markdown]
# Our toy head has only `D/4 = 4` frequencies per axis. The picture uses the 9B model's head (`D = 128`, 32
# frequencies per axis; the angles depend on no weight) over a 32 × 32 patch grid: a few row and column dims,
# `cos(angle)` per patch.

# %%
g32 = torch.tensor([[1, 32, 32]])
angles128, rc = vision_rotary_angles(g32, 128, m=2), patch_coords(g32, m=2)
inv128 = rotary_inv_freq(128)
fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), dpi=100)
for ax, (dim, what) in zip(axes, [(0, "row"), (6, "row"), (32, "col"), (38, "col")]):
    img = torch.zeros(32, 32)
    img[rc[:, 0], rc[:, 1]] = angles128[:, dim].cos()          # back to raster order for the picture
    what = f"{what}, f={inv128[dim % 32].item():.2f} rad/patch"
    shown = ax.imshow(img, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_title(f"cos(angle) dim {dim}\n({what})", fontsize=9)
    ax.set_xlabel("patch column")
axes[0].set_ylabel("patch row")
fig.colorbar(shown, ax=list(axes), label="cos(angle)")
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
# q.k after rotation depends only on the offset between the two patches: compare two pairs with the same offset.
q, k = torch.randn(1, 1, D), torch.randn(1, 1, D)
def rotated_dot(p, r):
    inv = rotary_inv_freq(D)

    def ang(rc):
        return torch.cat([rc[0] * inv, rc[1] * inv]).repeat(2)[None]   # (1, D)

    qr = apply_rotary(q, ang(p).cos(), ang(p).sin())
    kr = apply_rotary(k, ang(r).cos(), ang(r).sin())
    return (qr * kr).sum().item()
print("offset (1, 2) at (0,0)->(1,2):", round(rotated_dot((0, 0), (1, 2)), 4),
      "| at (5,7)->(6,9):", round(rotated_dot((5, 7), (6, 9)), 4),
      "| offset (2, 1):", round(rotated_dot((0, 0), (2, 1)), 4))

# %% [markdown]
# ## 4. Attention stays inside each image
#
# Several images go through the tower in one call, their rows concatenated. A patch may only attend to patches of
# its **own** image (and for a video, of its own temporal patch: a `[t, h, w]` grid is `t` separate segments). The
# attention matrix over all rows is block-diagonal. We never build that `N × N` matrix: `segment_lengths` cuts the
# rows into segments, and each run of equal-length segments goes through `scaled_dot_product_attention` as one batch.
#
# For the picture we ask for the attention weights (`return_attentions=True`, a slower explicit-softmax path that
# gives the same features) of two images and paste the per-segment maps into one big matrix:

# %%
# NBVAL_CHECK_OUTPUT
two = torch.tensor([[1, 4, 6], [1, 6, 8]])
px2 = torch.randn(int(two.prod(-1).sum()), vcfg.patch_dim)
with torch.no_grad():
    fast = model(px2, two)
    feats, attn = model(px2, two, return_attentions=True)
lengths = segment_lengths(two)
print("segments", lengths, "| rows", sum(lengths), "| features", tuple(feats.shape),
      "| same as the fast path:", torch.allclose(feats, fast, atol=1e-6))
print("attention maps per block:", [tuple(a.shape) for a in attn[0]], "(H, L, L)")
print("computed scores:", sum(L * L for L in lengths), "of", sum(lengths) ** 2, "in a full N x N matrix")

# %%
full = torch.zeros(sum(lengths), sum(lengths))
start = 0
for L, a in zip(lengths, attn[0]):
    full[start:start + L, start:start + L] = a[0]               # head 0 of block 0
    start += L
fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
shown = ax.imshow(full ** 0.5, cmap="viridis")
fig.colorbar(shown, ax=ax, label="sqrt(attention weight)")
ax.set_title("block 0, head 0: attention of every row (query) to every row (key)\n"
             "two images = two blocks; everything else is never computed", fontsize=8)
ax.set_xlabel("key row")
ax.set_ylabel("query row")
plt.show()

# %% [markdown]
# ## 5. Attention of one patch over its image, per head
#
# Now a real photo (the cat, 22 × 32 patches). We take block 0, pick the patch at the centre of the image and show,
# per head, how its attention spreads over the image (mapped back from merge-window order to the picture). Again:
# **random weights**. The maps still have structure, from the rotary angles (which favour some offsets per head), the
# position table and the pixels themselves, but they say nothing about what GLM-4.1V looks at.

# %%
with torch.no_grad():
    _, cat_attn = model(cat_px, cat_grid, return_attentions=True)
h, w = cat_grid[0, 1:].tolist()
rc = patch_coords(cat_grid, m=2)
query = int(((rc[:, 0] == h // 2) & (rc[:, 1] == w // 2)).nonzero())   # row of the centre patch
frame = unpatchify(cat_px, cat_grid[0])[0]                                # (H, W, 3) uint8
maps = torch.zeros(vcfg.num_heads, h, w)
maps[:, rc[:, 0], rc[:, 1]] = cat_attn[0][0][:, query]                    # (H, h, w), back to raster order
fig, axes = plt.subplots(1, vcfg.num_heads + 1, figsize=(12, 2.2), dpi=100)
axes[0].imshow(frame)
axes[0].set_title("cat, centre patch", fontsize=8)
axes[0].plot((w // 2 + 0.5) * 14, (h // 2 + 0.5) * 14, "r+", ms=10)
for head, ax in enumerate(axes[1:]):
    ax.imshow(frame, alpha=0.35)
    shown = ax.imshow(maps[head], cmap="inferno", alpha=0.75, extent=(0, w * 14, h * 14, 0),
                      vmin=0, vmax=maps.max().item())                      # one scale for every head
    ax.set_title(f"head {head}", fontsize=8)
for ax in axes:
    ax.set_xlabel("x (px)", fontsize=7)
    ax.tick_params(labelsize=6)
axes[0].set_ylabel("y (px)", fontsize=7)
fig.colorbar(shown, ax=list(axes), label="attention weight", fraction=0.02)
plt.show()

# %% [markdown]
# ## 6. Merge: 2 × 2 patches → one token
#
# After the last block and a final RMSNorm, the `downsample` Conv2d (kernel = stride = 2) maps each 2 × 2 merge
# window (4 consecutive rows, thanks to merge-window order) to one `Co`-vector; again a Linear in disguise, on the
# `(C, 2, 2)` window. The merger then applies `Linear → LayerNorm → exact GELU → SwiGLU` (width `intermediate_size`).
# The output has one row per `<|image|>` placeholder, image by image, tokens in raster order: exactly the order in
# which the language model's prompt holds them.

# %%
# NBVAL_CHECK_OUTPUT
photos = [cat, load_image("../data/coffee.png")]
pv, gthw = preprocess(photos, max_pixels=300 * 28 * 28)
with torch.no_grad():
    out = model(pv, gthw)
print("pixel_values", tuple(pv.shape), "grids", gthw.tolist())
print("features", tuple(out.shape), out.dtype, "| tokens per image", (gthw.prod(-1) // 4).tolist())
# A video: grid [t, h, w] = [2, 6, 8] is two temporal patches, each attending only within itself.
video = torch.tensor([[2, 6, 8]])
with torch.no_grad():
    vid = model(torch.randn(96, vcfg.patch_dim), video)
print("video grid", video.tolist(), "-> segments", segment_lengths(video), "-> features", tuple(vid.shape))
with torch.device("meta"):
    lazy = VisionModel(vcfg)                       # no memory, no init: the loader fills it with assign=True
lazy.load_state_dict(model.state_dict(), assign=True)
print("built on meta, loaded with assign=True -> same features:", torch.equal(lazy(pv, gthw), out))

# %% [markdown]
# ## 7. Parity with transformers
#
# The oracle is transformers' `Glm4vForConditionalGeneration` built from the same tiny config with seeded random
# weights (`tests/oracle.py`). transformers is used **only** as this oracle, in tests and in this cell; the package
# never imports it. We copy its `model.visual` weights into our `VisionModel` (`strict=True`: every key, every shape)
# and feed three photos of different, non-square sizes in one call.

# %%
# NBVAL_CHECK_OUTPUT
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # transformers' tqdm, not our business
sys.path.insert(0, "../tests")
from oracle import build_oracle

cfg = tiny()                                           # vision: depth 2, width 64, 4 heads, a 4x4 position table
hf = build_oracle(cfg, seed=0)
ours = VisionModel(cfg.vision_config).eval()
ours.load_state_dict(hf.model.visual.state_dict(), strict=True)
imgs = [cat, load_image("../data/coffee.png"), load_image("../data/rocket.jpg")]
pv, gthw = preprocess(imgs)                            # 22x32, 28x42 and 30x46 patches
with torch.no_grad():
    mine = ours(pv, gthw)
    theirs = hf.model.visual(pv, grid_thw=gthw).pooler_output
diff = (mine - theirs).abs().max().item()
print("grids", gthw.tolist(), "-> features", tuple(mine.shape))
print("max abs diff below 1e-5:", diff < 1e-5)

# %%
# NBVAL_IGNORE_OUTPUT
import transformers

print(f"max abs diff {diff:.2e} (torch {torch.__version__}, transformers {transformers.__version__})")

# %% [markdown]
# The tests check each piece against the oracle on its own (patch embedding, position-table resampling, rotary
# tables, one block, the merger), the whole tower in float32 (≤ 1e-5) and bfloat16, a video grid, that changing one
# image never changes another's features, and that the attention-weights path gives the same features:
#
# ```
# pytest tests/test_ch02_vision.py
# ```
#
# Timings against transformers on this CPU: `python benchmarks/bench_vision.py`.
