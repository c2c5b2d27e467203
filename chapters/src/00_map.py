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
# # 00 · The map: what GLM-4.1V is and the road through it
#
# **GLM-4.1V-9B-Thinking** (Zhipu AI / Tsinghua, July 2025) is a vision-language model: it reads images, videos and
# text and writes text, usually a `<think>…</think>` reasoning trace followed by an `<answer>…</answer>`.
# In 🤗 transformers it is `Glm4vForConditionalGeneration`. This book rebuilds it from scratch in plain PyTorch,
# one file per component in `minglm4v/`, and checks every piece against transformers numerically.
#
# The model has two halves glued together by *placeholder tokens*:
#
# | half | what | size (9B) |
# |---|---|---|
# | vision tower (`model.visual`) | a 24-block ViT over 14×14 pixel patches, a 2×2 merge, an MLP | ~0.9 B parameters |
# | language model (`model.language_model`, `lm_head`) | 40-layer GLM-4 decoder, grouped-query attn, M-RoPE | ~9.4 B |
#
# (M-RoPE: rotary positions in three dimensions, time, row and column; chapter 03.)
#
# The road through the book, one chapter per stop:
#
# 0. **The map** (this chapter): the configuration, the parameter count, the conventions.
# 1. **Pixels → patches** (ch. 01, `patchify.py`): resize so both sides are multiples of 28, normalise, cut into
#    14×14 patches, duplicate a still image along time, flatten in *merge-window order*.
# 2. **Patches → features** (ch. 02, `vision.py`): the ViT turns each patch into a vector; every 2×2 window of patches
#    becomes **one** feature vector of the language model's width.
# 3. **Positions** (ch. 03, `mrope.py`): text tokens count 0, 1, 2, …; image tokens get (time, row, column) positions.
# 4. **Decoder** (ch. 04, `decoder.py`, `model.py`): token embeddings, with image features spliced into the
#    placeholder slots, flow through 40 decoder layers to next-token logits; loading a checkpoint.
# 5. **Prompt → tokens** (ch. 05, `tokenizer.py`, `chat.py`, `processor.py`): the chat template writes
#    `<|begin_of_image|><|image|><|end_of_image|>`; the processor repeats `<|image|>` once per feature vector.
# 6. **Generation** (ch. 06, `generation.py`, `sampling.py`, `cache.py`): a KV cache and a sampler turn logits into an
#    answer.
# 7. **Video** (ch. 07, `video.py`): frames sampled in time, two frames per temporal patch, timestamps in the prompt.
# 8. **Training a tiny GLM-4.1V** (ch. 08, `tinyvqa.py`, `train.py`): the same architecture at a million parameters,
#    trained on coloured shapes, and where it looks.
# 9. **The real 9B** (ch. 09, `weights.py`, `fast.py`): loading the published checkpoint, memory, speed.
# 10. **Making the 9B fit** (ch. 10, being written): weight-only int8/int4 quantization of the decoder's linear layers.
# 11. **Teaching it something new** (ch. 11, being written): LoRA fine-tuning, small trainable matrices beside frozen
#     weights.

# %%
# NBVAL_IGNORE_OUTPUT
# Environment check: versions differ from machine to machine, so nbval does not compare this cell.
import platform
import sys

import matplotlib
import numpy
import PIL
import torch

import minglm4v

print("python    ", sys.version.split()[0], platform.machine())
print("torch     ", torch.__version__, "| CUDA available:", torch.cuda.is_available())
print("numpy     ", numpy.__version__, "| pillow", PIL.__version__, "| matplotlib", matplotlib.__version__)
print("minglm4v  ", minglm4v.__version__, "from", minglm4v.__file__)

# %% [markdown]
# ## The configuration
#
# Everything about the architecture lives in three frozen dataclasses with the Hugging Face field names
# (`minglm4v/config.py`). `glm41v_9b()` is the published checkpoint's `config.json`; `tiny()` is the same architecture
# at toy width, used by the tests and most chapters so that everything runs on a laptop CPU.

# %%
# NBVAL_CHECK_OUTPUT
from minglm4v.config import glm41v_9b, tiny

big, small = glm41v_9b(), tiny()
rows = [("vision depth", "vision_config.depth"), ("vision width", "vision_config.hidden_size"),
        ("vision heads", "vision_config.num_heads"), ("vision head dim", "vision_config.head_dim"),
        ("position table", "vision_config.num_positions"), ("patch row length", "vision_config.patch_dim"),
        ("text layers", "text_config.num_hidden_layers"), ("text width", "text_config.hidden_size"),
        ("query heads", "text_config.num_attention_heads"), ("key/value heads", "text_config.num_key_value_heads"),
        ("head dim", "text_config.head_dim"), ("rotary dims", "text_config.rotary_dim"),
        ("mrope_section", "text_config.mrope_section"), ("vocabulary", "text_config.vocab_size")]


def get(cfg, path):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


print(f"{'':18}{'glm41v_9b()':>16}{'tiny()':>12}")
for name, path in rows:
    print(f"{name:18}{str(get(big, path)):>16}{str(get(small, path)):>12}")

# %% [markdown]
# ## The rules a configuration must keep
#
# Any size works, small or large, as long as the pieces still fit together. Three rules, checked below for both
# presets (later chapters, e.g. 08, shrink the model and keep them):
#
# * the vision tower's output width `out_hidden_size` equals the decoder's `hidden_size` (its features replace token
#   embeddings);
# * the vision head dim is divisible by 4 (2-D rotary: a quarter of the dims turns with the row, a quarter with the
#   column, chapter 02);
# * the three parts of `mrope_section` (time, row, column) add up to half the text rotary dims (chapter 03).

# %%
# NBVAL_CHECK_OUTPUT
for name, cfg in [("glm41v_9b", big), ("tiny", small)]:
    v, t = cfg.vision_config, cfg.text_config
    print(f"{name:10} out_hidden_size {v.out_hidden_size} == hidden_size {t.hidden_size}: "
          f"{v.out_hidden_size == t.hidden_size} | vision head dim {v.head_dim} % 4 == 0: {v.head_dim % 4 == 0} | "
          f"2 x sum{tuple(t.mrope_section)} == rotary dims {t.rotary_dim}: {2 * sum(t.mrope_section) == t.rotary_dim}")

# %% [markdown]
# ## How big is it? Counting parameters from the config
#
# Each weight matrix is a product of config numbers, so the parameter count follows from the config alone
# (docs/glm41v.md §4.1, §5.1). Chapter 04 checks this arithmetic against a model built on PyTorch's `meta` device.

# %%
# NBVAL_CHECK_OUTPUT
def vision_params(v):
    C, Co, Ci = v.hidden_size, v.out_hidden_size, v.intermediate_size
    patch = C * v.patch_dim + C                          # Conv3d weight [C, 3, 2, 14, 14] + bias
    pos = v.num_positions * C                            # learned position table
    block = 2 * C + 3 * C * C + C * C + 3 * C * Co       # 2 norms, qkv, proj, SwiGLU (gate, up, down) of width Co
    merge = C * Co * v.spatial_merge_size**2 + Co        # 2x2 downsample conv + bias
    merger = Co * Co + 2 * Co + 3 * Co * Ci              # proj, LayerNorm (w, b), SwiGLU of width Ci
    return patch + C + pos + v.depth * block + C + merge + merger   # (+ post-conv and post norms)


def text_parts(t):
    """Parameters of the decoder by part: embeddings, the stack of layers, final norm, lm_head."""
    C, Ci, D = t.hidden_size, t.intermediate_size, t.head_dim
    kv = t.num_key_value_heads * D
    attn = (C * C + C) + 2 * (C * kv + kv) + C * C       # q (+bias), k, v (+bias), o
    layer = attn + C * 2 * Ci + Ci * C + 4 * C           # fused gate_up, down, 4 sandwich norms
    return {"embeddings": t.vocab_size * C, "decoder layers": t.num_hidden_layers * layer, "final norm": C,
            "lm_head": t.vocab_size * C}


def text_params(t):
    return sum(text_parts(t).values())


for name, cfg in [("glm41v_9b", big), ("tiny", small)]:
    v, t = vision_params(cfg.vision_config), text_params(cfg.text_config)
    print(f"{name:10} vision {v:>14,}  text {t:>15,}  total {v + t:>15,}")
total = vision_params(big.vision_config) + text_params(big.text_config)
print(f"bf16 bytes of the 9B weights: {2 * total:,}")
t = big.text_config
print(f"without the two vocabulary tables: {total - 2 * t.vocab_size * t.hidden_size:,}")

# %% [markdown]
# The total above is what the published checkpoint holds (20.6 GB in bfloat16). The "9B" in the name is a round
# figure: without its two vocabulary tables (input embeddings and `lm_head`) the model has the number printed last.
# Where the parameters sit, part by part:

# %%
import matplotlib.pyplot as plt

parts = {"vision tower": vision_params(big.vision_config), **text_parts(big.text_config)}
parts.pop("final norm")                                  # 4096 parameters: invisible at this scale
fig, ax = plt.subplots(figsize=(7, 2.4), dpi=110)
names, sizes = list(parts), [n / 1e9 for n in parts.values()]
bars = ax.barh(names, sizes, color=["#e6a23c", "#9bbce0", "#2b6cb0", "#9bbce0"])
for bar, n in zip(bars, sizes):
    ax.text(bar.get_width() + 0.05, bar.get_y() + bar.get_height() / 2, f"{n:.2f} B", va="center", fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("parameters (billions)")
ax.set_xlim(0, max(sizes) * 1.15)
ax.set_title(f"GLM-4.1V-9B: {total / 1e9:.1f} B parameters, {2 * total / 1e9:.1f} GB in bfloat16", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The road, drawn
#
# Each box is one chapter: what goes in and comes out at that stop. Chapters 10 and 11 (dashed) are being written.

# %%
from matplotlib.patches import FancyBboxPatch

stops = [("00", "the map\nconfig, sizes"), ("01", "pixels → patches\nN × 1176"),
         ("02", "ViT + 2×2 merge\nN/4 × 4096"), ("03", "M-RoPE\n(t, row, col) ids"),
         ("04", "decoder, 40 layers\n→ logits"), ("05", "chat template\n→ token ids"),
         ("06", "sampling +\nKV cache"), ("07", "video in,\ntext out"),
         ("08", "training a\ntiny GLM-4.1V"), ("09", "the real 9B\nmemory, speed"),
         ("10", "making the 9B fit\nint8 / int4 weights"), ("11", "teaching it\nnew: LoRA")]
fig, ax = plt.subplots(figsize=(10, 3.4), dpi=110)
bw, bh, gap = 1.55, 1.0, 0.25
for i, (num, label) in enumerate(stops):
    row, col = divmod(i, 6)
    x, y = col * (bw + gap), -row * (bh + 0.6)
    planned = num in ("10", "11")
    ax.add_patch(FancyBboxPatch((x, y), bw, bh, boxstyle="round,pad=0.04", fc="#f3f3f3" if planned else "#dbe9f6",
                                ec="#2b6cb0", ls="--" if planned else "-"))
    ax.text(x + bw / 2, y + 0.78, f"ch {num}", ha="center", va="center", fontsize=8, weight="bold")
    ax.text(x + bw / 2, y + 0.38, label, ha="center", va="center", fontsize=7)
    if col:
        ax.annotate("", (x - 0.02, y + bh / 2), (x - gap + 0.02, y + bh / 2), arrowprops=dict(arrowstyle="->"))
ax.annotate("", (bw / 2, -0.6 + 0.02), (5 * (bw + gap) + bw / 2, -0.02),
            arrowprops=dict(arrowstyle="->", connectionstyle="arc3,rad=0.0", color="#888"))
ax.set_xlim(-0.15, 6 * (bw + gap))
ax.set_ylim(-(bh + 0.6) - 0.15, bh + 0.15)
ax.axis("off")
ax.set_title("the road through the book: an image and a prompt in (01-05), an answer out (06); then video, "
             "training, the real model", fontsize=8)
plt.show()

# %% [markdown]
# ## Conventions used in every chapter
#
# * **Shape legend** (also in `minglm4v/__init__.py`): `B` batch, `L` sequence, `N` patches, `t h w` grid,
#   `m` merge size, `H`/`Hkv` query/key-value heads, `D` head dim, `C` width.
# * **The oracle.** transformers is only a *test* dependency. Tests build tiny random `Glm4vForConditionalGeneration`
#   models, save them with `save_pretrained`, load the folder with minglm4v and compare numbers.
# * Each chapter ends with the command that tests its code.
#
# Test this chapter's code (config and project set-up):
#
# ```
# pytest tests/test_ch00_config.py tests/test_ch00_setup.py
# ```
