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
# # 01 · From pixels to patches
#
# Before the vision tower sees anything, GLM-4.1V's image processor turns a photo into a matrix `pixel_values` of
# shape `(N, 1176)` and a grid `image_grid_thw = (t, h, w)`. This chapter rebuilds that step
# (`minglm4v/patchify.py`) and checks it against transformers' `Glm4vImageProcessor` bit for bit.
#
# The pipeline:
#
# ```
# photo --RGB--> (H, W, 3) uint8 --smart_resize + bicubic--> (h, w, 3) --/255, (x-mean)/std--> (3, h, w) float32
#       --repeat along time--> (2, 3, h, w) --cut into 2×14×14 patches--> pixel_values (t·h/14·w/14, 1176)
# ```

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minglm4v.patchify import (
    MAX_PIXELS,
    MIN_PIXELS,
    load_image,
    num_image_tokens,
    patchify,
    preprocess,
    smart_resize,
    unpatchify,
)
from minglm4v.viz import draw_patch_grid

torch.manual_seed(0)
DATA = Path("../data")
photos = {name: load_image(DATA / f"{name}.{ext}") for name, ext in
          [("cat", "png"), ("coffee", "png"), ("astronaut", "png"), ("rocket", "jpg")]}

# %%
fig, axes = plt.subplots(1, 4, figsize=(10, 2.6), dpi=100)
for ax, (name, im) in zip(axes, photos.items()):
    ax.imshow(im)
    ax.set_title(f"{name}: {im.width}×{im.height}", fontsize=9)
    ax.set_xlabel("x (px)", fontsize=8)
    ax.tick_params(labelsize=7)
axes[0].set_ylabel("y (px)", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 1. smart_resize: a size the ViT can cut
#
# The vision tower cuts 14×14 patches and later merges 2×2 patches into one token, so both sides must be multiples
# of **28**. `smart_resize` rounds each side to the nearest multiple of 28 and keeps the pixel count inside a budget:
#
# * `min_pixels = 12544` (112²) and `max_pixels = 9633792` from the checkpoint's `preprocessor_config.json` (the
#   keys are called `shortest_edge`/`longest_edge` but hold pixel *counts*);
# * the count that is checked is `2 · h · w`: a still image is treated as **two frames** (see section 5), so the
#   effective cap is 4,816,896 px = 6144 tokens;
# * rounding is Python's `round`, which rounds halves to even: 70 px / 28 = 2.5 → 2, i.e. 56 px.
#
# The floor is checked after the rounding, and it can win: 70 × 70 rounds to 56 × 56, but 2 · 56 · 56 = 6272 px is
# below `min_pixels`, so both sides are scaled up again and the result printed below is 84 × 84.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'photo':10} {'original':>10} {'resized':>10} {'grid (t,h,w)':>14} {'tokens':>7}")
for name, im in photos.items():
    h, w = smart_resize(2, im.height, im.width)
    grid = (1, h // 14, w // 14)
    print(f"{name:10} {im.width:>4}×{im.height:<5} {w:>4}×{h:<5} {str(grid):>14} {num_image_tokens(grid):>7}")

for H, W in [(70, 70), (1080, 1920), (2160, 3840), (10, 10)]:
    h, w = smart_resize(2, H, W)
    print(f"{W}×{H} -> {w}×{h}: {num_image_tokens((1, h // 14, w // 14))} tokens")

# %% [markdown]
# ## 2. The patch grid and the 2×2 merge windows
#
# Thin white lines are 14×14 patches (the ViT's tokens); thick yellow lines are the 2×2 **merge windows**: after the
# ViT, each window becomes one `<|image|>` token for the language model. The numbers are the token order in the
# prompt: merge windows in raster order.

# %%
# NBVAL_CHECK_OUTPUT
pixel_values, grid = preprocess(photos["cat"])
frame = unpatchify(pixel_values, grid[0])[0]   # (H, W, 3) uint8: the resized image, recovered from the patches
print("pixel_values", tuple(pixel_values.shape), pixel_values.dtype)
print("image_grid_thw", grid.tolist(), "->", num_image_tokens(grid[0]), "tokens")

# %%
fig, ax = plt.subplots(figsize=(8, 5.6), dpi=100)
draw_patch_grid(ax, frame, grid[0], numbers=True)
ax.set_xlabel("x (px)")
ax.set_ylabel("y (px)")
plt.show()

# %% [markdown]
# ## 3. The flattening order
#
# `pixel_values` is not in plain raster order. The `(T, C, H, W)` stack is viewed as
# `(t, tp, C, h/2, 2, 14, w/2, 2, 14)` = axes `(t, tp, c, bh, mh, py, bw, mw, px)` and permuted to
# `(t, bh, bw, mh, mw, c, tp, py, px)`:
#
# * **rows**: temporal patch → merged row `bh` → merged column `bw` → row inside the window `mh` → column inside `mw`.
#   Every 4 consecutive rows are one 2×2 merge window, so the merge after the ViT only has to take rows four at a
#   time (chapter 02).
# * **columns** of a row: `c·392 + tp·196 + py·14 + px` (channel, frame, pixel row, pixel column).
#
# Below, a small 4×6 patch grid with the row index of each patch in `pixel_values`.

# %%
# NBVAL_CHECK_OUTPUT
# Give every patch a constant value = its raster index, patchify, and read back where each one landed.
gh, gw = 4, 6
raster = torch.arange(gh * gw, dtype=torch.float32).view(gh, gw)
frames = raster.repeat_interleave(14, 0).repeat_interleave(14, 1).expand(2, 3, gh * 14, gw * 14)  # (T, C, H, W)
rows, g = patchify(frames)
row_of = torch.empty(gh * gw, dtype=torch.long)
row_of[rows[:, 0].long()] = torch.arange(gh * gw)
print("grid", g)
print("row of pixel_values holding each patch (patch laid out as in the image):")
print(row_of.view(gh, gw))

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
im = ax.imshow(row_of.view(gh, gw), cmap="viridis")
for r in range(gh):
    for c in range(gw):
        ax.text(c, r, int(row_of[r * gw + c]), ha="center", va="center", color="white")
for k in range(1, gw // 2):
    ax.axvline(2 * k - 0.5, color="yellow", lw=2)
for k in range(1, gh // 2):
    ax.axhline(2 * k - 0.5, color="yellow", lw=2)
ax.set_title("row index in pixel_values (yellow: merge windows)", fontsize=9)
ax.set_xticks(range(gw))
ax.set_yticks(range(gh))
ax.set_xlabel("patch column")
ax.set_ylabel("patch row")
fig.colorbar(im, ax=ax, label="row of pixel_values")
plt.show()

# %% [markdown]
# ## 4. The token budget as the image grows
#
# For a square image of side *s*, the number of image tokens grows like *s*² until the cap, then stays at (just under)
# 6144; small images are pushed up to the floor of 12544 / 2 px.

# %%
sides = np.unique(np.geomspace(10, 6000, 300).astype(int))


def tokens(H, W, **kw):
    h, w = smart_resize(2, H, W, **kw)
    return h * w // (28 * 28)


fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
ax.plot(sides, [tokens(s, s) for s in sides], label="square s×s")
ax.plot(sides, [tokens(s, int(s * 16 / 9)) for s in sides], label="16:9, height s")
ax.plot(sides, [tokens(s, s, max_pixels=2 * 1024 * 28 * 28) for s in sides], "--",
        label="square, max_pixels for 1024 tokens")
ax.axhline(MAX_PIXELS // 2 // 784, color="gray", lw=0.8, ls=":")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("image height s (px)")
ax.set_ylabel("image tokens")
ax.legend(fontsize=8)
ax.set_title("tokens per image (dotted: the cap of 6144)", fontsize=9)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
for s in [20, 100, 224, 448, 896, 1792, 3584]:
    print(f"{s:>5}×{s:<5} -> {tokens(s, s):>5} tokens")

# %% [markdown]
# ## 5. Why a still image is duplicated along time
#
# GLM-4.1V's patch embedding is a `Conv3d` with kernel `(2, 14, 14)`: it always looks at **two frames** at once, so
# that videos (chapter 07) can be compressed 2× in time. A still image is made into a two-frame video by repeating
# it. That is why each row has `3 · 2 · 14 · 14 = 1176` numbers and why the pixel budget counts `2·h·w`.
# The two halves of each channel block are identical:

# %%
# NBVAL_CHECK_OUTPUT
x = pixel_values.view(-1, 3, 2, 14, 14)     # (N, C, tp, py, px)
print("row layout (C, tp, py, px):", tuple(x.shape[1:]))
print("frame 0 == frame 1 for every patch:", bool(torch.equal(x[:, :, 0], x[:, :, 1])))

# %% [markdown]
# ## 6. Several images, modes and decisions
#
# * Several images are concatenated along `N`; `image_grid_thw` has one row per image.
# * Transparency is composited onto **white**; grayscale, palette, CMYK images are converted to RGB.
# * **EXIF orientation**: `load_image(path)` applies it (as transformers' `load_image` does), so a phone photo is
#   upright the way a viewer shows it. A PIL image or array handed to `preprocess` is used exactly as given.
# * **16-bit images**: transformers clips values above 255, which turns most 16-bit photos white. We scale them to
#   8 bits (`round(x / 257)`) instead; `preprocess(..., sixteen_bit="clip")` reproduces transformers exactly.
# * Images smaller than 28 px on a side are scaled up first; an aspect ratio above 200 is refused.

# %%
# NBVAL_CHECK_OUTPUT
pixel_values, grids = preprocess(list(photos.values()))
print("pixel_values", tuple(pixel_values.shape))
print("image_grid_thw", grids.tolist())
print("tokens per image", num_image_tokens(grids).tolist())

# %% [markdown]
# ## 7. Parity with transformers
#
# transformers is only the oracle here (it is installed with the test extra). Its image processor runs without
# torchvision as `Glm4vImageProcessorPil`, the same numbers as the slow processor that transformers 4.5x loads for
# the published checkpoint ("4.5x": the 4.53 to 4.57 releases of 2025, the transformers 4 versions GLM-4.1V first
# shipped in; this project tests against transformers 5, where the PIL processor has that new name).

# %%
# NBVAL_IGNORE_OUTPUT
import transformers  # the oracle; importing it may print library warnings

# %%
# NBVAL_CHECK_OUTPUT
hf = transformers.Glm4vImageProcessorPil()
out = hf(list(photos.values()), size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, return_tensors="pt")
print("grids equal:", out["image_grid_thw"].tolist() == grids.tolist())
print("max |pixel_values difference|:", (out["pixel_values"] - pixel_values).abs().max().item())

# %% [markdown]
# Test this chapter's code:
#
# ```
# pytest tests/test_ch01_patchify.py
# ```
