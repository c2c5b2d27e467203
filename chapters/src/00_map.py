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
# | vision tower (`model.visual`) | a 24-block ViT over 14×14 pixel patches, then a 2×2 merge and an MLP | ~0.9 B parameters |
# | language model (`model.language_model` + `lm_head`) | a 40-layer GLM-4 decoder with grouped-query attention and 3-D rotary positions (M-RoPE) | ~9.4 B parameters |
#
# The road an image and a prompt take (each stop is a chapter):
#
# 1. **Pixels → patches** (ch. 01, `patchify.py`): resize so both sides are multiples of 28, normalise, cut into
#    14×14 patches, duplicate a still image along time, flatten in *merge-window order*.
# 2. **Patches → features** (ch. 02, `vision.py`): the ViT turns each patch into a vector; every 2×2 window of patches
#    becomes **one** feature vector of the language model's width.
# 3. **Prompt → tokens** (ch. 05): the chat template writes `<|begin_of_image|><|image|><|end_of_image|>`; the
#    processor repeats `<|image|>` once per feature vector.
# 4. **Positions** (ch. 03, `mrope.py`): text tokens count 0, 1, 2, …; image tokens get (time, row, column) positions.
# 5. **Decoder** (ch. 04, `decoder.py`, `model.py`): token embeddings, with image features spliced into the
#    placeholder slots, flow through 40 decoder layers to next-token logits.
# 6. **Generation** (ch. 06): a KV cache and a sampler turn logits into an answer.

# %%
# NBVAL_IGNORE_OUTPUT
# Environment check: versions differ from machine to machine, so nbval does not compare this cell.
import platform, sys
import numpy, PIL, torch, matplotlib
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
from minglm4v import glm41v_9b, tiny

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
# ## How big is it? Counting parameters from the config
#
# Each weight matrix is a product of config numbers, so the parameter count follows from the config alone
# (docs/glm41v.md §4.1, §5.1). Chapter 04 checks this arithmetic against a model built on PyTorch's `meta` device.

# %%
# NBVAL_CHECK_OUTPUT
def vision_params(v):
    C, O, I, p = v.hidden_size, v.out_hidden_size, v.intermediate_size, v.patch_size
    patch = C * v.patch_dim + C                        # Conv3d weight [C, 3, 2, 14, 14] + bias
    pos = v.num_positions * C                          # learned position table
    block = 2 * C + 3 * C * C + C * C + 3 * C * O      # 2 norms, qkv, proj, SwiGLU (gate, up, down) of width O
    merge = C * O * v.spatial_merge_size**2 + O        # 2x2 downsample conv + bias
    merger = O * O + 2 * O + 3 * O * I                 # proj, LayerNorm (w, b), SwiGLU of width I
    return patch + C + pos + v.depth * block + C + merge + merger   # (+ post-conv and post norms)

def text_params(t):
    C, I, V, D = t.hidden_size, t.intermediate_size, t.vocab_size, t.head_dim
    kv = t.num_key_value_heads * D
    attn = (C * C + C) + 2 * (C * kv + kv) + C * C     # q (+bias), k, v (+bias), o
    layer = attn + C * 2 * I + I * C + 4 * C           # fused gate_up, down, 4 sandwich norms
    return V * C + t.num_hidden_layers * layer + C + V * C   # embeddings, layers, final norm, lm_head

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
#
# ## The road, drawn

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

stops = [("photo\nH×W×3", "data/"), ("patches\nN×1176", "ch 01"), ("ViT + 2×2 merge\nN/4 × 4096", "ch 02"),
         ("splice into\n<|image|> slots", "ch 04/05"), ("40 decoder layers\n+ M-RoPE", "ch 03/04"),
         ("logits → tokens", "ch 06")]
fig, ax = plt.subplots(figsize=(9, 2.2), dpi=80)
for i, (label, chap) in enumerate(stops):
    x = i * 1.55
    ax.add_patch(FancyBboxPatch((x, 0), 1.25, 1, boxstyle="round,pad=0.05", fc="#dbe9f6", ec="#2b6cb0"))
    ax.text(x + 0.625, 0.55, label, ha="center", va="center", fontsize=8)
    ax.text(x + 0.625, -0.25, chap, ha="center", va="center", fontsize=7, color="#555")
    if i:
        ax.annotate("", (x - 0.03, 0.5), (x - 0.27, 0.5), arrowprops=dict(arrowstyle="->"))
ax.text(4 * 1.55 + 0.625, 1.35, "prompt text tokens join here", ha="center", fontsize=7, color="#555")
ax.set_xlim(-0.2, 9.3); ax.set_ylim(-0.5, 1.6); ax.axis("off")
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
