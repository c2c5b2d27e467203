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
# # 04 · The decoder and the whole forward pass
#
# The vision tower (chapter 02) turns pixels into one vector per `<|image|>` placeholder; M-RoPE (chapter 03) gives
# every token a (t, h, w) position. This chapter puts the rest around them: the **GLM-4 text decoder**
# (`minglm4v/decoder.py`), the **whole model** (`minglm4v/model.py`) and the **checkpoint loader**
# (`minglm4v/weights.py`). At the end our logits match transformers' layer by layer, and a small tool
# (`minglm4v/debug.py`) names the first layer where two models part ways.
#
# ```
# input_ids ──embed_tokens──► x (B, L, C) ──write vision features over the <|image|> slots──► x
# x ──40 × DecoderLayer(x, cos/sin from 3-D positions, causal+padding mask)──► norm ──► lm_head ──► logits (B, L, V)
# ```
#
# transformers appears in this chapter only as the **oracle**: a model we compare with. Nothing in `minglm4v/`
# imports it.

# %%
# NBVAL_CHECK_OUTPUT
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from minglm4v.config import glm41v_9b, tiny
from minglm4v.debug import compare
from minglm4v.decoder import DecoderLayer, attention_mask_4d
from minglm4v.norms import RMSNorm
from minglm4v.weights import build, load, save

torch.manual_seed(0)
cfg = tiny()
t = cfg.text_config
print("tiny text config: C =", t.hidden_size, "| layers =", t.num_hidden_layers, "| H =", t.num_attention_heads,
      "| Hkv =", t.num_key_value_heads, "| D =", t.head_dim, "| rotary dims =", t.rotary_dim, "| V =", t.vocab_size)


# %% [markdown]
# ## 1. RMSNorm
#
# Every norm in GLM-4.1V is an RMSNorm: divide by the root-mean-square of the vector, then scale per channel.
#
# $$y = w \odot \frac{x}{\sqrt{\tfrac1C\sum_i x_i^2 + \varepsilon}}$$
#
# The statistics are taken in float32 and the weight is applied *after* casting back to the activation dtype, which
# matters in bfloat16. A three-line version, checked against the package:

# %%
# NBVAL_CHECK_OUTPUT
def rms_norm(x, w, eps):
    x32 = x.float()
    return w * (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


norm = RMSNorm(8, eps=1e-5)
with torch.no_grad():
    norm.weight.copy_(torch.linspace(0.5, 1.5, 8))
x = torch.randn(2, 3, 8)
print("max |ours - package| =", (rms_norm(x, norm.weight, 1e-5) - norm(x)).abs().max().item())
print("RMS of each output row / weight:", (norm(x) / norm.weight).pow(2).mean(-1).sqrt().round(decimals=4).tolist())

# %% [markdown]
# ## 2. One decoder layer: sandwich norms
#
# Llama-style layers normalise only *before* each sub-block. GLM-4.1V's decoder comes from the GLM-4-0414 text models
# ("0414" is their release date, 14 April 2025: GLM-4-9B-0414, GLM-4-32B-0414), which normalise before **and
# after**, then add to the residual stream:
#
# ```
# x = x + post_self_attn_layernorm( self_attn( input_layernorm(x) ) )
# x = x + post_mlp_layernorm(       mlp( post_attention_layernorm(x) ) )
# ```
#
# Mind the names: `post_attention_layernorm` is really the norm *before* the MLP (the name is inherited from Llama);
# `post_self_attn_layernorm` and `post_mlp_layernorm` are the two extra ones. Forgetting them gives a model that
# runs and writes garbage (docs/glm41v.md §9). The layer's modules, in the order `forward` uses them:

# %%
# NBVAL_CHECK_OUTPUT
layer = DecoderLayer(t)
for name, p in layer.named_parameters():
    print(f"{name:36} {str(tuple(p.shape)):12}")

# %% [markdown]
# ## 3. Grouped-query attention, shapes
#
# The 9B decoder has **H = 32** query heads but only **Hkv = 2** key/value heads, each of **D = 128** dims: every KV
# head serves 16 consecutive query heads (`repeat_interleave` on the head axis). That shrinks `k_proj`/`v_proj` to
# 4096 → 256 and, later, the KV cache 16-fold. q, k and v carry a bias; `o_proj` does not. The MLP fuses gate and up
# into one `gate_up_proj` (first half gate, second half up): `down(up * silu(gate))`.
#
# Built on the meta device, the 9B layer costs no memory, yet has every shape:

# %%
# NBVAL_CHECK_OUTPUT
t9 = glm41v_9b().text_config
with torch.device("meta"):
    layer9 = DecoderLayer(t9)
a = layer9.self_attn
B, L = 1, 10
x = torch.empty(B, L, t9.hidden_size, device="meta")
q = a.q_proj(x).view(B, L, a.num_heads, a.head_dim).transpose(1, 2)
k = a.k_proj(x).view(B, L, a.num_kv_heads, a.head_dim).transpose(1, 2)
print("x           ", tuple(x.shape), "  (B, L, C)")
print("q           ", tuple(q.shape), "  (B, H, L, D)")
print("k, v        ", tuple(k.shape), "  (B, Hkv, L, D)")
print("k repeated  ", tuple(k.repeat_interleave(a.num_heads // a.num_kv_heads, dim=1).shape), "  (B, H, L, D)")
print("KV head j serves query heads", [list(range(j * 16, j * 16 + 16))[::15] for j in range(2)], "(first, last)")
for name, p in layer9.named_parameters():
    print(f"{name:36} {str(tuple(p.shape)):14} {p.numel():>12,}")
print(f"{'per layer':36} {'':14} {sum(p.numel() for p in layer9.parameters()):>12,}")

# %% [markdown]
# Drawn: each query head (top) reads the keys and values of one KV head (bottom). The 9B has 32 → 2; the tiny config
# of this chapter 4 → 2.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 2.4), dpi=100, gridspec_kw={"width_ratios": [3, 1]})
for ax, tc, name in [(axes[0], t9, "glm41v_9b()"), (axes[1], t, "tiny()")]:
    H, Hkv = tc.num_attention_heads, tc.num_key_value_heads
    kv_x = (np.arange(Hkv) + 0.5) * H / Hkv - 0.5                  # KV heads centred under their query heads
    for h in range(H):
        ax.plot([h, kv_x[h // (H // Hkv)]], [1, 0], color=f"C{h // (H // Hkv)}", lw=0.8)
    ax.scatter(range(H), [1] * H, s=18, color="k", zorder=3)
    ax.scatter(kv_x, [0] * Hkv, s=80, color=[f"C{j}" for j in range(Hkv)], zorder=3)
    ax.set_yticks([0, 1], ["KV head", "query head"])
    ax.set_xlabel("head index")
    ax.set_title(f"{name}: H = {H} query heads, Hkv = {Hkv} KV heads", fontsize=9)
    ax.set_ylim(-0.3, 1.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The attention mask: causal, plus left padding
#
# In a batch, shorter prompts are padded **on the left** so every row ends at the same column and generation appends
# to all rows at once. A query may look at a key when the key is not in its future and is a real token. A pad query
# would have nothing to look at (and softmax over nothing is NaN), so it may look at itself; its output is filler that
# nobody reads. Row 0 below has two pads.
#
# `attention_mask_4d` returns two values: the boolean mask (or `None` when no tensor is needed) and `is_causal`, a flag
# for `scaled_dot_product_attention`. Without padding no mask tensor is built: a prefill passes `None` with
# `is_causal=True` and lets the attention kernel apply the causal rule itself. With padding, as here, the causal rule
# is already inside the tensor, so the flag is `False`.

# %%
# NBVAL_CHECK_OUTPUT
mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
m4, is_causal = attention_mask_4d(mask, 6)  # (B, 1, L, L), True = may attend
print("mask shape", tuple(m4.shape), "| is_causal", is_causal)
print("no padding:", attention_mask_4d(torch.ones(2, 6, dtype=torch.long), 6))
for b in range(2):
    print(f"row {b} (query down, key across):")
    for i in range(6):
        print("   ", " ".join("■" if v else "·" for v in m4[b, 0, i].tolist()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.2), dpi=100)
for b, ax in enumerate(axes):
    shown = ax.imshow(m4[b, 0].int(), cmap="Blues", vmin=0, vmax=1)
    ax.set_title(f"row {b}: " + ("2 left pads" if b == 0 else "no padding"), fontsize=9)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
cbar = fig.colorbar(shown, ax=list(axes), ticks=[0, 1], fraction=0.03)
cbar.ax.set_yticklabels(["masked", "may attend"])
plt.show()

# %% [markdown]
# ## 5. The whole model, loaded from a checkpoint folder
#
# A seeded tiny random model is built with transformers and saved with `save_pretrained`, exactly the layout the
# real checkpoint is published in (`config.json`, `model.safetensors`, or shards with an index). `load`
# builds our model on the **meta** device (no memory), reads each safetensors header itself, checks every tensor's
# name, shape and dtype against the model, and puts each tensor in place one at a time (on the CPU as a view of the
# memory-mapped file; on a GPU through a small staging buffer, never a whole CPU copy). Our module tree uses the
# checkpoint's names, so nothing is renamed; the loader counts what it read and refuses anything unknown, missing or
# mis-shaped.

# %%
# NBVAL_CHECK_OUTPUT
import contextlib
import io
import sys

sys.path.insert(0, str(Path("..") / "tests"))
with contextlib.redirect_stderr(io.StringIO()):  # keep transformers' progress bars out of the page
    import oracle  # tests/oracle.py: the seeded random transformers model (the oracle)
    folder = Path(tempfile.mkdtemp()) / "tiny-glm4v"
    hf = oracle.save_oracle(cfg, folder, seed=0)
print(sorted(p.name for p in folder.iterdir()))

model = load(folder)
r = model.load_report
print("files:", r.files, "| tensors:", r.tensors, "| parameters:", f"{r.parameters:,}", "| dtype:", r.dtype)
print("model.config == tiny():", model.config == cfg,
      "| model.visual is model.model.visual:", model.visual is model.model.visual)

# %% [markdown]
# A prompt with one image. The placeholders are already expanded: an image of grid (t, h, w) = (1, 4, 6) patches
# becomes 4·6/2² = 6 `<|image|>` tokens (id 9 in the tiny vocabulary) between `<|begin_of_image|>` (7) and
# `<|end_of_image|>` (8). Seeded random pixels stand in for a photo; the tiny model is random anyway.
#
# transformers 5 also wants `mm_token_type_ids`: one number per token, 0 for text, 1 for an image placeholder, 2 for
# a video placeholder, which its processor returns beside `input_ids` (the same classification as chapter 03's
# `token_types`). Our model works it out from the ids, so only the oracle gets it.

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)


def text(n):
    return torch.randint(20, cfg.text_config.vocab_size, (n,), generator=g).tolist()


ids = torch.tensor([text(4) + [7] + [9] * 6 + [8] + text(5)])
types = (ids == 9).long()                    # mm_token_type_ids for the oracle: 0 text, 1 image
grid = torch.tensor([[1, 4, 6]])
pixels = torch.randn(24, cfg.vision_config.patch_dim, generator=g)
print("input_ids", ids.tolist())
print("pixel_values", tuple(pixels.shape), "| image_grid_thw", grid.tolist())

with torch.no_grad():
    ours = model(ids, pixel_values=pixels, image_grid_thw=grid)
    theirs = hf(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=types).logits
print("logits", tuple(ours.shape), "(B, L, V)")
print("max |ours - oracle| < 1e-4:", (ours - theirs).abs().max().item() < 1e-4)
print("greedy next tokens equal:", torch.equal(ours.argmax(-1), theirs.argmax(-1)))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"max |ours - oracle| = {(ours - theirs).abs().max().item():.2e}   (float32, depends on the CPU's kernels)")

# %% [markdown]
# ### The residual stream through the layers
#
# With sandwich norms every sub-block adds a *normalised* vector (times the learned scale of
# `post_self_attn_layernorm` / `post_mlp_layernorm`) to the residual stream, so its size changes by about the same
# step in every layer, whatever the input. Forward hooks record the stream's RMS per token at the decoder's input
# (embeddings with the vision features written in) and after each layer; the final norm brings it back to the scale
# of its weight. (Random tiny model: the mechanics, not a trained model's numbers.)

# %%
stages = {}
lm = model.model.language_model
hooks = [lm.register_forward_pre_hook(lambda mod, args, kw: stages.__setitem__("input", args[0] if args else
                                                                                kw["inputs_embeds"]), with_kwargs=True)]
for i, blk in enumerate(lm.layers):
    hooks.append(blk.register_forward_hook(lambda mod, args, out, i=i: stages.__setitem__(f"after layer {i}", out)))
hooks.append(lm.register_forward_hook(lambda mod, args, out: stages.__setitem__("final norm", out)))
with torch.no_grad():
    model(ids, pixel_values=pixels, image_grid_thw=grid)
for h in hooks:
    h.remove()
rms = torch.stack([x[0].pow(2).mean(-1).sqrt() for x in stages.values()])   # (stages, L)
fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
for kind, sel, colour in [("text tokens", types[0] == 0, "C0"), ("image tokens", types[0] == 1, "C1")]:
    ax.plot(range(len(stages)), rms[:, sel].numpy(), color=colour, lw=0.8, alpha=0.6)
    ax.plot([], [], color=colour, label=kind)
ax.set_xticks(range(len(stages)), list(stages))
ax.set_ylabel("RMS of the residual stream")
ax.set_xlabel("stage of the decoder (one line per token)")
ax.legend(fontsize=8)
ax.set_title("tiny random model: the stream grows layer by layer; the final norm rescales it", fontsize=9)
plt.show()

# %% [markdown]
# ## 6. Layer by layer: where do two models part ways?
#
# When a port is wrong, the logits are simply different; that says nothing about *where*. `minglm4v.debug.compare`
# puts forward hooks on modules with the same dotted name in both models (our names are the checkpoint's, which are
# also transformers' module names), runs each model once, and lists the largest difference per module in forward
# order. It does not import transformers: the caller passes the oracle in.

# %%
# NBVAL_CHECK_OUTPUT
def run_ours(m):
    return m(ids, pixel_values=pixels, image_grid_thw=grid)


def run_theirs(m):
    return m(input_ids=ids, pixel_values=pixels, image_grid_thw=grid, mm_token_type_ids=types)


report = compare(model, hf, run_ours, run_theirs, atol=1e-4)
print([(row.name, row.shape, row.ok) for row in report.rows])
print("first divergence:", report.first_divergence)

# %%
# NBVAL_IGNORE_OUTPUT
print(report)

# %% [markdown]
# Now break our model the way a Llama-minded port would: drop the two extra sandwich norms of layer 1 (replace them by
# the identity). The vision tower, the embeddings and layer 0 still agree; the tool names layer 1.

# %%
# NBVAL_CHECK_OUTPUT
broken = load(folder)
broken.model.language_model.layers[1].post_self_attn_layernorm = torch.nn.Identity()
broken.model.language_model.layers[1].post_mlp_layernorm = torch.nn.Identity()
report = compare(broken, hf, run_ours, run_theirs, atol=1e-4)
print([(row.name, row.ok) for row in report.rows])
print("first divergence:", report.first_divergence)

# %% [markdown]
# ## 7. A left-padded batch
#
# Two prompts of different lengths, the shorter one padded on the left. Positions count only real tokens
# (chapter 03), and the padding mask keeps pads out of every softmax, so the real tokens of the padded row get the
# same logits as when that prompt runs alone.

# %%
# NBVAL_CHECK_OUTPUT
short, long_ = text(5), text(9)
batch = torch.tensor([[cfg.text_config.pad_token_id] * 4 + short, long_])
mask = torch.tensor([[0] * 4 + [1] * 5, [1] * 9])
with torch.no_grad():
    padded = model(batch, attention_mask=mask)
    alone = model(torch.tensor([short]))
print("padded row vs alone, max diff < 1e-5:", (padded[0, 4:] - alone[0]).abs().max().item() < 1e-5)
print("same greedy tokens:", torch.equal(padded[0, 4:].argmax(-1), alone[0].argmax(-1)))

# %% [markdown]
# ## 8. The 9B model, on the meta device
#
# Built from `glm41v_9b()` on the meta device (names and shapes only, no memory), our model has exactly the published
# checkpoint's tensors: 10,292,777,472 parameters, 20.6 GB in bfloat16. The loader reads those files one shard at a
# time and keeps bf16 as bf16 unless `dtype=` asks for something else.

# %%
# NBVAL_CHECK_OUTPUT
big = build(glm41v_9b(), "meta")
parts = {"model.visual": big.model.visual, "model.language_model": big.model.language_model, "lm_head": big.lm_head}
for name, mod in parts.items():
    print(f"{name:22} {sum(p.numel() for p in mod.parameters()):>16,}")
total = sum(p.numel() for p in big.parameters())
print(f"{'total':22} {total:>16,}   = {total * 2 / 1e9:.1f} GB in bfloat16")
print("tensors:", len(big.state_dict()), "| first:", list(big.state_dict())[:2])

# %% [markdown]
# Saving writes the same layout back (`minglm4v.weights.save(model, folder, max_shard_size=...)`), sharded with an
# index when the weights exceed `max_shard_size`; transformers' `from_pretrained` reads it.

# %%
# NBVAL_CHECK_OUTPUT
out = Path(tempfile.mkdtemp()) / "resaved"
written = save(model, out, max_shard_size="200KB")
print([p.name for p in written])
again = load(out)
print("identical after the round trip:",
      all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items()))

# %% [markdown]
# ## Test this chapter's code
#
# ```
# pytest tests/test_ch04_decoder.py tests/test_ch04_weights.py
# ```
