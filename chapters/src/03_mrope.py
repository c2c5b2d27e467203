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
# # 03 · M-RoPE: positions in three dimensions
#
# A language model needs to know where each token sits. Text is a line, so one number per token does. An image is a
# grid, and a video is a stack of grids over time, so GLM-4.1V gives **every token three positions (t, h, w)** and lets
# different frequency bands of its rotary embedding turn with different axes: **M-RoPE** (multimodal rotary position
# embedding, from Qwen2-VL). This chapter rebuilds `minglm4v/mrope.py`:
#
# 1. the position ids: text, an image, a video, a padded batch (transformers' `get_rope_index`);
# 2. `rope_deltas`, which carry the positions on during cached decoding;
# 3. the rotation itself: interleaved pairs, `mrope_section` bands, partial rotary.
#
# Everything here works on token ids and grids; the pixels are only drawn.

# %%
# NBVAL_CHECK_OUTPUT
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minglm4v.config import glm41v_9b
from minglm4v.errors import InputError
from minglm4v.mrope import (
    apply_mrope,
    band_axis,
    decode_position_ids,
    get_rope_index,
    inv_freq,
    rotary_cos_sin,
    text_position_ids,
    token_types,
)
from minglm4v.patchify import load_image, preprocess, unpatchify
from minglm4v.viz import draw_patch_grid

torch.manual_seed(0)
cfg = glm41v_9b()
IMG, BOI, EOI, BOV, EOV = (cfg.image_token_id, cfg.image_start_token_id, cfg.image_end_token_id,
                           cfg.video_start_token_id, cfg.video_end_token_id)
print("<|image|>", IMG, "| <|begin_of_image|>", BOI, "| <|end_of_image|>", EOI,
      "| <|begin_of_video|>", BOV, "| <|end_of_video|>", EOV)

# %% [markdown]
# ## 1. A prompt with one image
#
# The cat photo, shrunk with a small pixel budget so the picture stays readable: a grid of (t, h, w) = (1, 6, 12)
# patches of 14 px, i.e. 3 × 6 **merge windows** of 2 × 2 patches. Each window becomes one `<|image|>` token, in raster
# order. The prompt is the chat template's `[gMASK]<sop><|user|>\n<|begin_of_image|>` + 18 × `<|image|>` +
# `<|end_of_image|>`, a short question, then `<|assistant|>\n`. (The four question ids are stand-ins; the tokenizer
# comes in chapter 05.)
#
# `[gMASK]` and `<sop>` are two special tokens that open every GLM prompt, left over from the GLM pre-training
# objective: `[gMASK]` marks "generate the masked span that follows" and `<sop>` means "start of piece". The model
# expects them; nothing else in this book depends on their meaning. Chapter 05 lists every special token.

# %%
# NBVAL_CHECK_OUTPUT
photo = load_image(Path("..") / "data" / "cat.png")
pixel_values, grid = preprocess(photo, max_pixels=28 * 28 * 48)
m = cfg.vision_config.spatial_merge_size
t, gh, gw = grid[0].tolist()
n_img = t * gh * gw // m**2
labels = ["[gMASK]", "<sop>", "<|user|>", "\\n", "<|begin_of_image|>"] + ["<|image|>"] * n_img + \
         ["<|end_of_image|>", "What", " is", " this", "?", "<|assistant|>", "\\n"]
ids = torch.tensor([[151331, 151333, 151336, 198, BOI] + [IMG] * n_img + [EOI, 3838, 374, 419, 30, 151337, 198]])
print("image_grid_thw", grid.tolist(), "->", n_img, "image tokens (", gh // m, "x", gw // m, "merged )")
print("prompt length", ids.shape[1])

# %% [markdown]
# `get_rope_index` walks the prompt in runs of equal token type, keeping a running start `st` (one past the largest
# position so far):
#
# * a **text** run of length L gets `st, st+1, …, st+L-1` on all three axes;
# * an **image** run gets `(st + t, st + row, st + col)` for its merged tokens in raster order;
# * after the image, `st` moves on by `max(h', w')` (h', w' the merged grid), not by the number of image tokens.

# %%
# NBVAL_CHECK_OUTPUT
pos, delta = get_rope_index(ids, cfg, image_grid_thw=grid)
print("position_ids", tuple(pos.shape), "(3, B, L) | rope_deltas", delta.tolist())
print(f"{'i':>3} {'token':20} {'t':>3} {'h':>3} {'w':>3}")
for i, lab in enumerate(labels):
    if lab != "<|image|>" or i in (5, 6, 10, 11, 5 + n_img - 1):
        print(f"{i:>3} {lab:20} {pos[0, 0, i].item():>3} {pos[1, 0, i].item():>3} {pos[2, 0, i].item():>3}")
    elif i == 12:
        print(f"{'':>3} {'...':20}")

# %% [markdown]
# The picture: each merge window labelled with its (h, w) positions. t is the same for all of them (5, the start of
# the image run); h goes up from 5 in the top row to 7 in the bottom row, w from 5 on the left to 10 on the right.

# %%
frame = unpatchify(pixel_values, grid[0])[0]
img_pos = pos[:, 0, ids[0] == IMG].view(3, gh // m, gw // m)  # (3, h', w')
fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
draw_patch_grid(ax, frame, grid[0], title="(h, w) position of each image token; t = 5 for all")
ax.set_xlabel("x (px)")
ax.set_ylabel("y (px)")
step = 14 * m
for r in range(gh // m):
    for c in range(gw // m):
        ax.text((c + 0.5) * step, (r + 0.5) * step, f"{img_pos[1, r, c].item()},{img_pos[2, r, c].item()}",
                color="white", ha="center", va="center", fontsize=9,
                bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0))
plt.show()


# %%
def plot_positions(ax, pos_row, ids_row, title):
    types = token_types(ids_row, cfg)
    x = np.arange(len(ids_row))
    for axis, (name, style) in enumerate(zip("thw", ["o-", "s--", "^:"])):
        ax.plot(x, pos_row[axis].numpy() + 0.08 * (axis - 1), style, ms=3, lw=0.8, label=name)
    for i in np.flatnonzero(types.numpy()):
        ax.axvspan(i - 0.5, i + 0.5, color="tab:orange" if types[i] == 1 else "tab:green", alpha=0.15, lw=0)
    ax.set_xlabel("token index")
    ax.set_ylabel("position")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)


fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
plot_positions(ax, pos[:, 0], ids[0], "t, h, w positions of every token (shaded: image tokens)")
plt.show()

# %% [markdown]
# ### Why text after an image resumes at `st + max(h', w')`
#
# The image block starts at `st` and its largest position on any axis is `st + max(h', w') - 1` (the last row on the h
# axis, the last column on the w axis). Resuming at `st + max(h', w')` is simply "one past the largest position so
# far", the same rule as for text, so the text that follows is *after* every part of the image on every axis, and no
# position is wasted: a 3 × 6 image costs 6 positions, not 18. It also keeps positions small for long videos.

# %%
# NBVAL_CHECK_OUTPUT
st = pos[0, 0, 5].item()
h_, w_ = gh // m, gw // m
largest = pos[:, 0, 5:5 + n_img].max().item()
after = pos[:, 0, 5 + n_img].tolist()
print(f"st = {st}, h' = {h_}, w' = {w_}: largest image position {largest} = st + max(h', w') - 1 = "
      f"{st + max(h_, w_) - 1}")
print(f"<|end_of_image|> gets {after} = st + max(h', w') = {st + max(h_, w_)}")
print(f"rope_delta = max position + 1 - length = {pos.max().item()} + 1 - {ids.shape[1]} = {delta.item()}")

# %% [markdown]
# ## 2. The reference's worked example, then two images
#
# The project's reference, docs/glm41v.md §6.2, states the position rule and ends with a worked example at full size:
# a 476 × 644 photo (grid 1 × 34 × 46, i.e. 17 × 23 merged tokens) after `[gMASK]<sop><|user|>\n<|begin_of_image|>`,
# which take positions 0–4. By the rule, the image gets t = 5, h = 5 … 5 + 17 − 1 = 21, w = 5 … 5 + 23 − 1 = 27, and
# `<|end_of_image|>` resumes at 5 + max(17, 23) = 28. The first line below is what `get_rope_index` computes for that
# prompt.
#
# With two images the running start simply goes on; each image starts its own block at one past the largest position
# so far (the last three lines).

# %%
# NBVAL_CHECK_OUTPUT
ex = torch.tensor([[151331, 151333, 151336, 198, BOI] + [IMG] * (17 * 23) + [EOI]])
p, _ = get_rope_index(ex, cfg, image_grid_thw=torch.tensor([[1, 34, 46]]))
blk = p[:, 0, 5:-1].view(3, 17, 23)
print("t:", blk[0].unique().tolist(), "| h:", blk[1].min().item(), "...", blk[1].max().item(),
      "| w:", blk[2].min().item(), "...", blk[2].max().item(), "| <|end_of_image|>:", p[:, 0, -1].tolist())

two = torch.tensor([[151331, 151333, BOI] + [IMG] * 4 + [EOI, 3838, BOI] + [IMG] * 6 + [EOI, 30]])
p2, d2 = get_rope_index(two, cfg, image_grid_thw=torch.tensor([[1, 4, 4], [1, 4, 6]]))
print("two images, t:", p2[0, 0].tolist())
print("            h:", p2[1, 0].tolist())
print("            w:", p2[2, 0].tolist())

# %% [markdown]
# ## 3. A video
#
# GLM-4.1V writes a video as `<|begin_of_video|>`, then for every **temporal patch** (two sampled frames) an image
# block `<|begin_of_image|>` + `<|image|>`×(h'·w') + `<|end_of_image|>` followed by its timestamp in seconds as plain
# digits, and finally `<|end_of_video|>` (docs/glm41v.md §3.3). The frames use the *image* placeholder id; being
# inside a video span is what makes them video tokens. Each temporal patch is positioned like an image starting at
# the running offset, so **time is encoded only by the growing offset**: t stays constant within a temporal patch and
# jumps between them. Below: a 6-frame clip at 2 fps, `video_grid_thw = (3, 4, 6)`, i.e. 3 temporal patches of
# 2 × 3 tokens, timestamps "0", "1", "2" (stand-in digit ids).

# %%
# NBVAL_CHECK_OUTPUT
DIGIT = {0: 15, 1: 16, 2: 17}  # stand-in ids for the digits "0", "1", "2"
vgrid = torch.tensor([[3, 4, 6]])
vids = [151331, 151333, 151336, 198, BOV]
for k in range(3):
    vids += [BOI] + [IMG] * 6 + [EOI, DIGIT[k]]
vids = torch.tensor([vids + [EOV, 3838, 30]])
vpos, vdelta = get_rope_index(vids, cfg, video_grid_thw=vgrid)
types = token_types(vids[0], cfg)
print("token types (0 text, 1 image, 2 video):", types.tolist())
frames = vpos[:, 0, types == 2].view(3, 3, 6)  # (axis, temporal patch, token)
for k in range(3):
    print(f"temporal patch {k}: t = {frames[0, k].unique().tolist()}, h = {frames[1, k].tolist()}, "
          f"w = {frames[2, k].tolist()}")
print("rope_delta", vdelta.tolist())

# %%
fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
plot_positions(ax, vpos[:, 0], vids[0], "a video: 3 temporal patches of 2 x 3 tokens (shaded green)")
plt.show()

# %% [markdown]
# A prompt with both images and a video is refused: they share the placeholder id, the official model card rules it
# out, and transformers mixes them up (docs/glm41v.md §9). `get_rope_index` raises `InputError` saying so.

# %%
# NBVAL_CHECK_OUTPUT
mixed = torch.tensor([[BOI] + [IMG] * 4 + [EOI, BOV, BOI] + [IMG] * 4 + [EOI, 15, EOV]])
try:
    get_rope_index(mixed, cfg, image_grid_thw=torch.tensor([[1, 4, 4]]), video_grid_thw=torch.tensor([[1, 4, 4]]))
except InputError as e:
    print("InputError:", e)

# %% [markdown]
# ## 4. Left padding, `rope_deltas` and decoding
#
# In a batch, shorter prompts are padded on the left. Positions are computed over the real tokens only, so a padded
# prompt gets exactly the positions it gets alone; pads get 0 (filler: the attention mask hides them).
#
# For generation with a KV cache, the positions of new tokens are not recomputed from the whole prompt:
# `rope_delta = max position + 1 - length` (length = real tokens) is kept from the prefill, and the k-th new token,
# which has `length + k` real tokens before it, gets `length + k + rope_delta = max position + 1 + k` on all three axes.
# Counting *real* tokens matters in a padded batch: row 0 below continues from its own largest position.

# %%
# NBVAL_CHECK_OUTPUT
a = [151331, BOI] + [IMG] * 4 + [EOI, 30]
b = [151331, 151333, 3838, BOI] + [IMG] * 6 + [EOI, 374, 419, 30]
L = max(len(a), len(b))
batch = torch.tensor([[0] * (L - len(a)) + a, [0] * (L - len(b)) + b])
mask = torch.tensor([[0] * (L - len(a)) + [1] * len(a), [0] * (L - len(b)) + [1] * len(b)])
bpos, bdelta = get_rope_index(batch, cfg, image_grid_thw=torch.tensor([[1, 4, 4], [1, 4, 6]]), attention_mask=mask)
print("mask row 0    ", mask[0].tolist())
print("t row 0       ", bpos[0, 0].tolist())
print("w row 0       ", bpos[2, 0].tolist())
alone, _ = get_rope_index(torch.tensor([a]), cfg, image_grid_thw=torch.tensor([[1, 4, 4]]))
print("same as alone:", torch.equal(bpos[:, 0, L - len(a):], alone[:, 0]))
print("rope_deltas   ", bdelta.tolist())
new = decode_position_ids(bdelta, torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], dim=1), 3)
print("next 3 tokens, row 0:", new[0, 0].tolist(), "| row 1:", new[0, 1].tolist(),
      "| max prefill positions:", [bpos[:, i].max().item() for i in range(2)])
print("text only: cumsum of the mask - 1 ->", text_position_ids(mask)[0][0, 0].tolist())

# %% [markdown]
# ## 5. The rotation: frequency bands, interleaved pairs, partial rotary
#
# Each attention head has D = 128 dims. Only the first `rotary_dim = D · partial_rotary_factor = 64` rotate; the other
# 64 pass through unchanged. The rotary dims form 32 **pairs**, and pair j turns by an angle
#
# $$\theta_j = \text{pos}_{\text{axis}(j)} \cdot \omega_j, \qquad \omega_j = 10000^{-2j/64},$$
#
# where `mrope_section = (8, 12, 12)` says which axis drives which pair: pairs 0–7 follow **t**, 8–19 follow **h**,
# 20–31 follow **w**. The fast frequencies (small j) go to time, the slow ones to the width axis.

# %%
# NBVAL_CHECK_OUTPUT
tc = cfg.text_config
axis = band_axis(tc)
w = inv_freq(tc)
print("head_dim", tc.head_dim, "| rotary_dim", tc.rotary_dim, "| pairs", len(w), "| mrope_section", tc.mrope_section)
print("axis of each pair:", "".join("thw"[a] for a in axis.tolist()))
for band, name in enumerate("thw"):
    sel = w[axis == band]
    print(f"{name}: pairs {int((axis == band).nonzero()[0])}..{int((axis == band).nonzero()[-1])}, "
          f"omega from {sel.max().item():.3g} to {sel.min().item():.3g} rad/position "
          f"(period {2 * math.pi / sel.max().item():.3g} to {2 * math.pi / sel.min().item():.3g} positions)")

# %% [markdown]
# The angle map for the image prompt of section 1: one row per pair, one column per token. The slow pairs hardly
# turn over 30 tokens, so the colour is θ_j divided by its largest value in the prompt (every pair uses the full
# range). Text tokens advance all bands together; across the image block (boxed) the t band stands still, the h band
# steps from one row of windows to the next, and the w band sweeps along each row, three times.

# %%
theta = pos[axis, 0].T.float() * w  # (L, 32): angle of pair j at token i = pos[axis(j)] * omega_j
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100, gridspec_kw={"width_ratios": [1, 3]})
for band, name in enumerate("thw"):
    axes[0].semilogy(np.flatnonzero(axis.numpy() == band), w[axis == band].numpy(), "o", ms=3, label=name)
axes[0].set_xlabel("pair j")
axes[0].set_ylabel("omega_j (rad / position)")
axes[0].legend(fontsize=8)
axes[0].set_title("frequency bands", fontsize=10)
im = axes[1].imshow((theta / theta.max(0).values).T.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
for y in (7.5, 19.5):
    axes[1].axhline(y, color="w", lw=0.8)
axes[1].axvspan(4.5, 4.5 + n_img, color="none", ec="w", lw=1.5)
axes[1].set_xlabel("token index (box: image tokens)")
axes[1].set_ylabel("pair j  (t | h | w)")
axes[1].set_title("theta_j / max theta_j, per token", fontsize=10)
fig.colorbar(im, ax=axes[1], fraction=0.03, label="theta_j / max theta_j")
plt.tight_layout()
plt.show()


# %% [markdown]
# **Interleaved pairs.** Pair j is the two *adjacent* dims (2j, 2j+1) (GPT-J style), not dims j and j + 32 as in
# Llama's "rotate half"; the vision tower uses rotate-half, the text decoder interleaved (docs/glm41v.md §9). Each
# pair is turned like a 2-D vector:
#
# $$\begin{pmatrix} y_{2j} \\ y_{2j+1} \end{pmatrix} =
#   \begin{pmatrix} \cos\theta_j & -\sin\theta_j \\ \sin\theta_j & \cos\theta_j \end{pmatrix}
#   \begin{pmatrix} x_{2j} \\ x_{2j+1} \end{pmatrix}$$
#
# A loop-over-pairs version, checked against `apply_mrope`:

# %%
# NBVAL_CHECK_OUTPUT
def rotate_by_hand(x, pos3, cfg_text):
    # x (L, D) one head; pos3 (3, L) -> (L, D)
    y = x.clone()
    omega, ax = inv_freq(cfg_text), band_axis(cfg_text)
    for i in range(x.shape[0]):
        for j in range(len(omega)):
            th = pos3[ax[j], i] * omega[j]
            a, b = x[i, 2 * j], x[i, 2 * j + 1]
            y[i, 2 * j], y[i, 2 * j + 1] = a * th.cos() - b * th.sin(), a * th.sin() + b * th.cos()
    return y


q = torch.randn(1, 1, 10, tc.head_dim)  # (B, H, L, D)
pos3 = pos[:, :, 3:13]                  # ten tokens around the start of the image
cos10, sin10 = rotary_cos_sin(pos3, tc, torch.float32)
package = apply_mrope(q, cos10, sin10)[0, 0]
by_hand = rotate_by_hand(q[0, 0], pos3[:, 0], tc)
print("max |by hand - package| < 1e-5:", (by_hand - package).abs().max().item() < 1e-5)
print("dims 64..127 untouched:", torch.equal(package[:, 64:], q[0, 0, :, 64:]))

# %% [markdown]
# **What the rotation buys.** A rotation by θ(p) on the query and θ(p') on the key leaves their dot product depending
# only on the differences p − p' per axis. Shift every position of a prompt by the same amount on all three axes and
# the attention scores do not change:

# %%
# NBVAL_CHECK_OUTPUT
k = torch.randn(1, 1, 10, tc.head_dim)


def scores(p3):
    c, s = rotary_cos_sin(p3, tc, torch.float64)
    return apply_mrope(q.double(), c, s)[0, 0] @ apply_mrope(k.double(), c, s)[0, 0].T  # (L, L)


print("scores unchanged by a shift of +100:", torch.allclose(scores(pos3), scores(pos3 + 100), atol=1e-8))
moved = pos3.clone()
moved[2, 0, 0] += 1  # the first token one column further right: its w differences to the others change
print("scores changed by moving one token's w:", not torch.allclose(scores(pos3), scores(moved), atol=1e-8))

# %% [markdown]
# ## Test this chapter's code
#
# ```
# pytest tests/test_ch03_mrope.py
# ```
