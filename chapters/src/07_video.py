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
# # 07 · Video in, text out
#
# GLM-4.1V reads a video as a short stack of pictures with the time written next to them. Nothing in the vision
# tower is new: a video is cut into **temporal patches** (two consecutive sampled frames each), and every temporal
# patch goes through the tower like one image. What is new is all on the way in (`minglm4v/video.py` and the video
# half of `minglm4v/processor.py`):
#
# ```
# clip.mp4 --PyAV--> fps, frame count
#          --sample_indices--> 2 frames per second (at most 300 s; longer clips: 600 frames spread evenly)
#          --one size for all frames, under a pixel budget shared by the whole clip-->
#          --pairs of frames -> temporal patches--> pixel_values_videos (N, 1176), video_grid_thw [t, h, w]
# prompt:  <|begin_of_video|> then per temporal patch k:
#          <|begin_of_image|> <|image|> x (h*w/4) <|end_of_image|> "seconds of patch k"   ... <|end_of_video|>
# ```
#
# The frames use the **image** placeholder id; the timestamps are ordinary text digits. The clip used here,
# `data/shapes.mp4`, is made by `data/make_video.py`: 6 s at 12 fps, 192×144, a red square sliding right while a
# blue ball bounces.

# %%
# NBVAL_CHECK_OUTPUT
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minglm4v import video
from minglm4v.config import tiny
from minglm4v.errors import ProcessorError
from minglm4v.model import Glm4vForConditionalGeneration
from minglm4v.mrope import get_rope_index, token_types
from minglm4v.patchify import unpatchify
from minglm4v.processor import Processor
from minglm4v.tokenizer import train_tokenizer

torch.manual_seed(0)
np.random.seed(0)
CLIP = Path("..") / "data" / "shapes.mp4"
info = video.probe(CLIP)
print(info)
print(f"duration {info.duration:.1f} s = {info.total_frames} frames / {info.fps:g} fps")

# %% [markdown]
# ## 1. Which frames: 2 per second
#
# `sample_indices` needs only the metadata (fps and frame count), so a long clip is planned without decoding it.
# Up to 300 s it keeps `n = floor(duration · 2)` frames, frame i at `ceil(i · fps / 2)`; then duplicates go and an odd
# count repeats its last frame, so the frames pair up. For our clip: every 6th frame.

# %%
# NBVAL_CHECK_OUTPUT
clip = video.load_video(CLIP)  # decodes only up to the last frame it keeps
print("frames kept", clip.frames.shape, "(T, H, W, 3)", clip.frames.dtype)
print("indices   ", clip.indices)
print("timestamps", clip.timestamps, "s")

# %%
fig, axes = plt.subplots(2, 6, figsize=(10, 3.6), dpi=100)
for k, ax in enumerate(axes.flat):
    ax.imshow(clip.frames[k])
    ax.set_title(f"#{clip.indices[k]} · {clip.timestamps[k]:.1f} s", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():  # frames of one temporal patch share a colour
        side.set_edgecolor(plt.cm.tab10(k // 2))
        side.set_linewidth(3)
fig.suptitle("the 12 sampled frames; each coloured pair becomes one temporal patch", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# The rule on clips of other lengths and rates, from metadata alone. A clip longer than 300 s keeps 600 frames at
# evenly spaced times from 0 to the end, so its timestamps jump by about `duration / 300` seconds per temporal patch
# (the model still sees at most 300 of them). The shortest clip, two frames, keeps frame 0 twice.

# %%
# NBVAL_CHECK_OUTPUT
clips = {"10 s @ 30 fps": (300, 30), "3.3 s @ 24 fps": (79, 24), "7 s @ 12.5 fps": (87, 12.5),
         "2 frames @ 30 fps": (2, 30), "400 s @ 30 fps": (12000, 30)}


def show(xs):
    return str(xs) if len(xs) <= 8 else f"[{', '.join(map(str, xs[:5]))}, ..., {xs[-1]}]"


for name, (total, fps) in clips.items():
    idx = video.sample_indices(total, fps)
    secs = [int(s) for s in video.patch_timestamps(idx, fps)]
    print(f"{name:18} {len(idx):>3} frames {show(idx):38} patch seconds {show(secs)}")

# %% [markdown]
# ## 2. One size for every frame, one budget for the clip
#
# `smart_resize` is the image one (chapter 01) with the frame count in the budget: T · h · w ≤ 47 040 000 pixels,
# so a longer clip gets smaller frames and the whole video stays under ~30 000 tokens. Our 12 frames of 192×144 fit
# easily and only snap to multiples of 28: 196×140. Resizing is torch's bicubic with antialias on each frame as it is
# decoded, rounded back to uint8.

# %%
# NBVAL_CHECK_OUTPUT
print("shapes.mp4, 12 frames of 192x144 ->", video.video_size(12, 144, 192), "(h, w)")
for frames in (20, 60, 200, 600):
    h, w = video.video_size(frames, 720, 1280)
    print(f"720p, {frames:>3} frames -> {w}x{h} px, {(h // 28) * (w // 28):>4} tokens per temporal patch, "
          f"{frames // 2 * (h // 28) * (w // 28):>6} in all")

# %% [markdown]
# ## 3. Pairs of frames, temporal patches
#
# `preprocess_videos` normalises the resized frames and hands them to the same `patchify` as images, with
# `temporal_patch_size = 2`: each row of `pixel_values_videos` is a 14×14 patch **of two consecutive sampled frames**
# (3 channels × 2 frames × 14 × 14 = 1176 numbers), rows ordered temporal patch → merge window → patch in window.
# `video_grid_thw` is `[T/2, h/14, w/14]`; the timestamp of temporal patch k is the time of its first frame.

# %%
# NBVAL_CHECK_OUTPUT
vin = video.preprocess_videos([CLIP])
grid = vin.video_grid_thw[0].tolist()
t, gh, gw = grid
print("pixel_values_videos", tuple(vin.pixel_values_videos.shape), "| video_grid_thw", vin.video_grid_thw.tolist())
print("rows per temporal patch", gh * gw, "| tokens per temporal patch", gh * gw // 4)
print("timestamps per temporal patch", vin.timestamps[0])

# %%
frames = unpatchify(vin.pixel_values_videos, grid)  # (T, h, w, 3): the two frames inside each temporal patch
fig, axes = plt.subplots(2, 3, figsize=(10, 4.4), dpi=100)
diffs = [np.abs(frames[2 * k].astype(int) - frames[2 * k + 1].astype(int)).sum(-1) for k in range(3)]
top = max(d.max() for d in diffs)
for k in range(3):
    a, b = frames[2 * k], frames[2 * k + 1]
    axes[0, k].imshow(np.concatenate([a, np.full((a.shape[0], 4, 3), 255, np.uint8), b], axis=1))
    axes[0, k].set_title(f"temporal patch {k}: frames {clip.indices[2 * k]} and {clip.indices[2 * k + 1]}",
                         fontsize=9)
    shown = axes[1, k].imshow(diffs[k], cmap="magma", vmin=0, vmax=top)   # one scale for the three pairs
    axes[1, k].set_title("what changes inside the pair", fontsize=9)
for ax in axes.flat:
    ax.set_xlabel("x (px)", fontsize=8)
    ax.tick_params(labelsize=7)
for ax in axes[:, 0]:
    ax.set_ylabel("y (px)", fontsize=8)
fig.tight_layout()
fig.colorbar(shown, ax=list(axes[1]), label="|a - b|, sum over RGB")
plt.show()


# %% [markdown]
# Inside a patch, the Conv3d of the vision tower (chapter 02) sees both frames at once: motion within half a second
# is folded into one token. Across patches, the model sees time only through the timestamps and the position ids.
#
# ## 4. Tokens against duration
#
# The placeholder count follows from the metadata alone, so we can plot it for clips we never decode. Below 300 s the
# count grows with the number of sampled frames until the pixel budget starts to shrink each frame; past 300 s the
# 600-frame cap holds it flat. A small clip like ours never reaches the budget: its count simply follows the number
# of sampled frames, 35 tokens per pair, up to 300 pairs.

# %%
def video_tokens(seconds, fps, height, width):
    idx = video.sample_indices(max(1, round(seconds * fps)), fps)
    h, w = video.video_size(len(idx), height, width)
    per_patch = (h // 28) * (w // 28)
    return len(idx) // 2 * per_patch


durations = np.unique(np.round(np.geomspace(1, 900, 60), 1))
fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
for (hh, ww), style in zip([(1080, 1920), (720, 1280), (144, 192)], ["-", "--", ":"]):
    ax.plot(durations, [video_tokens(d, 30, hh, ww) for d in durations], style, label=f"{ww}x{hh} @ 30 fps")
ax.axvline(300, color="gray", lw=0.8)
ax.text(310, 1500, "300 s cap", fontsize=9, color="gray")
ax.axhline(30000, color="gray", lw=0.8, ls="-.")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("clip duration (s)")
ax.set_ylabel("<|image|> tokens in the prompt")
ax.set_title("video tokens against duration (the pixel budget caps them near 30 000)", fontsize=10)
ax.legend(fontsize=8)
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
for d in (6, 60, 300, 900):
    print(f"{d:>4} s of 720p @ 30 fps -> {video_tokens(d, 30, 720, 1280):>6} video tokens")

# %% [markdown]
# ## 5. The prompt
#
# The processor puts it together. The tokenizer here is a small byte-level BPE trained on a few sentences
# (`minglm4v.tokenizer.train_tokenizer`) with GLM-4.1V's special tokens at the ids of the `tiny()` config; the real
# checkpoint ships its own `tokenizer.json`. Below, runs of `<|image|>` are collapsed, and the other tokens are
# printed as vocabulary entries, where `Ċ` is a newline and `Ġ` a space (the byte-level markers of chapter 05).

# %%
# NBVAL_CHECK_OUTPUT
corpus = ["Which way does the ball move? Left, right, up, down.", "How many shapes are there? One, two, three.",
          "A red square slides to the right while a blue ball bounces.", "Describe this video in one sentence."] * 4
tok = train_tokenizer(corpus, vocab_size=400)
proc = Processor(tok)
question = "Which way does the ball move?"
conv = [{"role": "user", "content": [{"type": "video", "video": str(CLIP)}, {"type": "text", "text": question}]}]
inputs = proc.apply_chat_template(conv)
print({k: tuple(v.shape) for k, v in inputs.items()})


def collapsed(ids):
    out, run = [], 0
    for i in ids + [-1]:
        if i == proc.image_token_id:
            run += 1
            continue
        if run:
            out.append(f"<|image|>x{run}")
            run = 0
        if i >= 0:
            out.append(tok.id_to_token(i))
    return " ".join(out)


print(collapsed(inputs["input_ids"][0].tolist()))

# %% [markdown]
# Six blocks of 5 × 7 = 35 `<|image|>` tokens, each followed by its second: 0 … 5. `<|video|>` itself is gone; the
# `<|begin_of_video|>` … `<|end_of_video|>` span is how the model (and `mrope.token_types`) tells video tokens from
# image tokens, since they share an id.
#
# ## 6. Position ids of a video prompt
#
# `get_rope_index` (chapter 03) treats each temporal patch as its own block: `(st, st + row, st + col)` with `st` one
# past the largest position so far. The timestamp digits and image markers between blocks are text, so time moves
# forward through the growing offset (here by 7 + 3 per patch: the block's width plus `<|end_of_image|>`, the
# digit and the next `<|begin_of_image|>`), not through the fps.

# %%
# NBVAL_CHECK_OUTPUT
cfg = tiny()
ids = inputs["input_ids"]
pos, delta = get_rope_index(ids, cfg, video_grid_thw=inputs["video_grid_thw"])
types = token_types(ids[0], cfg)
blocks = (torch.diff(torch.cat([torch.tensor([0]), (types == 2).long()])) == 1).nonzero().flatten().tolist()
for k, start in enumerate(blocks[:3]):
    block = pos[:, 0, start:start + 35]
    print(f"temporal patch {k}: starts at token {start}, t = {block[0].unique().tolist()}, "
          f"h = {block[1].min().item()}..{block[1].max().item()}, w = {block[2].min().item()}..{block[2].max().item()}")
print("length", ids.shape[1], "| largest position", pos.max().item(), "| rope_delta", delta.item())

# %%
fig, ax = plt.subplots(figsize=(9, 3.4), dpi=100)
x = np.arange(ids.shape[1])
for axis, (name, style) in enumerate(zip("thw", ["o-", "s--", "^:"])):
    ax.plot(x, pos[axis, 0].numpy() + 0.15 * (axis - 1), style, ms=2, lw=0.7, label=name)
for i in np.flatnonzero((types == 2).numpy()):
    ax.axvspan(i - 0.5, i + 0.5, color="tab:green", alpha=0.12, lw=0)
ax.set_xlabel("token index")
ax.set_ylabel("position")
ax.set_title("t, h, w positions of the video prompt (shaded: video tokens, one block per temporal patch)",
             fontsize=10)
ax.legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# ## 7. Two videos, frames in memory, and what is refused
#
# A video can also be a list of frames with their frame rate (`{"type": "video", "video": frames, "fps": 12}`); it
# goes through the same sampling. Each video keeps its own timestamps: below, a 3.3 s clip (patches at 0, 1, 2 s) and
# our 6 s clip (0 … 5 s). Images and videos in one request are refused: they share the placeholder id, and the
# reference implementation mixes their features up (docs/glm41v.md §5).

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
noise = rng.integers(0, 256, (40, 56, 84, 3), dtype=np.uint8)  # 40 frames at 12 fps = 3.3 s
two = [{"role": "user", "content": [{"type": "video", "video": noise, "fps": 12},
                                    {"type": "video", "video": str(CLIP)},
                                    {"type": "text", "text": "How many shapes are there?"}]}]
both = proc.apply_chat_template(two)
print("video_grid_thw", both["video_grid_thw"].tolist())
print("text without special tokens:", repr(proc.decode(both["input_ids"][0], skip_special_tokens=True)))
try:
    proc.apply_chat_template([{"role": "user", "content": [{"type": "image", "image": noise[0]},
                                                           {"type": "video", "video": str(CLIP)}]}])
except ProcessorError as e:
    print("ProcessorError:", str(e)[:110], "...")

# %% [markdown]
# ## 8. Text out
#
# `model.generate` (chapter 06) takes the processor's output as it is: the video rows go through the vision tower
# (each temporal patch attends only within itself), land on the `<|image|>` slots, and decoding proceeds with the
# cache. The model below is the `tiny()` config with **random weights**, so its answer is noise: the point is that a
# video prompt runs end to end. (The tests check these greedy tokens against transformers; a later chapter trains a
# tiny model that can actually answer.)

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(0)
model = Glm4vForConditionalGeneration(cfg).eval()
out = model.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=[999])
new = out[0, ids.shape[1]:]
print("prompt", ids.shape[1], "tokens -> generated", len(new), "tokens")

# %%
# NBVAL_IGNORE_OUTPUT
print("new ids:", new.tolist())
print("as text (noise):", repr(proc.decode(new, skip_special_tokens=True)))

# %% [markdown]
# ## Test this chapter's code
#
# ```
# pytest tests/test_ch07_video.py
# ```
