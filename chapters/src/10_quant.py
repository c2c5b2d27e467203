# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · Making the 9B fit
#
# The 9B model needs 20.6 GB for its bf16 weights alone, before the KV cache and the activations. Most readers
# have less: a 16 GB card, a 16–24 GB laptop whose GPU shares its memory with everything else. This chapter
# stores the decoder's weights in 8 or 4 bits instead of 16 (*weight-only* quantization: activations, the cache
# and the arithmetic stay in bf16), measures what that costs in accuracy, and what it gains in memory and speed.
#
# Plan: the memory budget of the 9B in bf16, int8 and int4 against common machines; the quantization math on one
# real row and one real group; `minglm4v.quant` on the tiny trained checkpoint, layer by layer; the error on layers
# with the 9B's widths; held-out TinyVQA accuracy; decode speed from the benchmark.

# %%
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch
from torch import nn

from minglm4v import glm41v_9b, tinyvqa, tinyvqa_eval, weights
from minglm4v.cache import kv_bytes_per_token
from minglm4v.processor import load_processor
from minglm4v.quant import QuantLinear, model_bytes, prepare, quantize_model
from minglm4v.quant_math import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8
from minglm4v.train import TEST_SEED

torch.manual_seed(0)
torch.set_num_threads(1)
ROOT = Path.cwd().parent
CKPT = ROOT / "data" / "tiny-glm4v"
GB = 1e9

# %% [markdown]
# ## 1. The memory plan
#
# Weights: the 9B built on the meta device (no memory), its Linears swapped for empty QuantLinears by
# `quant.prepare`, and every parameter and buffer counted. Embeddings, norms and the vision tower stay bf16. The KV
# cache holds, per token, a key and a value for each of the 40 layers' 2 KV heads of 128 numbers. Activations for
# one 1080p image are estimated from the widths: 10,764 patches through a vision block (residual, norms, q/k/v,
# the 4096-wide MLP; with a fused attention kernel, no patches × patches matrix), and the 2,719-token prefill
# through a decoder layer (the 27,392-wide gate/up projection); the larger of the two is what must fit on top.

# %%
cfg = glm41v_9b()
sizes = {}
for fmt in ("bf16", "int8", "int4"):
    m = weights.build(cfg, "meta").to(torch.bfloat16)
    if fmt != "bf16":
        prepare(m, fmt, 128)
    sizes[fmt] = model_bytes(m)
kv_token = kv_bytes_per_token(cfg, torch.bfloat16)
N_PATCH, L_PREFILL = 78 * 138, 2719  # 1080p: 78 x 138 patches, 2691 image tokens + the prompt
act_vision = N_PATCH * (3 * 4096 + 4 * 1536) * 2
act_prefill = L_PREFILL * (2 * 13696 + 13696 + 4 * 4096) * 2
act = max(act_vision, act_prefill)
RUNTIME = 1.0 * GB  # CUDA context and allocator slack: an allowance, not measured here
for fmt, b in sizes.items():
    print(f"{fmt}: weights {b / GB:5.2f} GB ({b / sizes['bf16']:.2f} x bf16)")
print(f"KV cache: {kv_token / 1024:.0f} KiB per token -> {8192 * kv_token / GB:.2f} GB at 8k, "
      f"{32768 * kv_token / GB:.2f} GB at 32k tokens")
print(f"activations, one 1080p image: vision block {act_vision / GB:.2f} GB, prefill layer "
      f"{act_prefill / GB:.2f} GB -> {act / GB:.2f} GB")

# %%
machines = {"16 GB GPU": 16, "24 GB GPU": 24, "40 GB GPU": 40, "80 GB GPU": 80}
laptops = {"16 GB laptop": 16, "24 GB laptop": 24, "32 GB laptop": 32}
rows = [(fmt, ctx) for fmt in ("bf16", "int8", "int4") for ctx in (8192, 32768)]
colours = {"weights": "tab:blue", "KV cache": "tab:orange", "activations (1080p image)": "tab:green",
           "runtime allowance": "tab:gray"}
fig, ax = plt.subplots(figsize=(9, 3.8), dpi=100)
for i, (fmt, ctx) in enumerate(rows):
    parts = [sizes[fmt], ctx * kv_token, act, RUNTIME]
    left = 0
    for part, colour in zip(parts, colours.values()):
        ax.barh(i, part / GB, left=left / GB, color=colour)
        left += part
    ax.text(left / GB + 0.5, i, f"{left / GB:.1f} GB", va="center", fontsize=8)
for name, gb in machines.items():
    ax.axvline(gb, color="k", ls="--", lw=0.8)
    ax.text(gb + 0.3, len(rows) + 0.45, name, fontsize=7)
for name, gb in laptops.items():
    ax.axvline(gb, color="tab:red", ls=":", lw=1)
    ax.text(gb + 0.3, len(rows) - 0.15, name, fontsize=7, color="tab:red")
ax.set_yticks(range(len(rows)), [f"{fmt}, {ctx // 1024}k tokens" for fmt, ctx in rows])
ax.set_ylim(-0.6, len(rows) + 0.9)
ax.set_xlabel("memory (GB)")
ax.legend(handles=[Patch(color=c, label=k) for k, c in colours.items()], fontsize=7, loc="lower right")
ax.set_title("GLM-4.1V-9B: what must fit, against GPUs (dashed) and unified-memory laptops (dotted)", fontsize=10)
ax.set_xlim(0, 85)
plt.tight_layout()
plt.show()

for fmt, ctx in rows:
    need = sizes[fmt] + ctx * kv_token + act + RUNTIME
    fits = [n for n, gb in {**machines, **laptops}.items() if need <= gb * GB]
    print(f"{fmt:5s} {ctx // 1024:2d}k: {need / GB:5.1f} GB -> fits {', '.join(fits)}")

# %% [markdown]
# A laptop's memory also holds the operating system and every open program, so the dotted lines are upper limits:
# the GPU of a unified-memory laptop gets only part of it.
#
# ## 2. The math, on one row and one group
#
# **int8**, one scale per output channel (row): `s = max|w| / 127`, codes `q = round(w / s)` in [-127, 127], and
# `w ≈ s·q`. **int4**, one scale *and* one offset per group of G input columns: `s = (max − min) / 15`,
# `z = min + 8s` (the value of code 8), codes `q = round((w − z) / s + 8)` in [0, 15], and `w ≈ s·(q − 8) + z`.
# Each weight is off by at most half a step. Here is layer 0's `gate_up_proj` of the trained tiny model.

# %%
model = weights.load(CKPT)
w = model.language_model.layers[0].mlp.gate_up_proj.weight.detach()  # (768, 128)
row = w[:1]
q8, s8 = quantize_int8(row)
print("row 0: max|w| =", round(row.abs().max().item(), 4), " s =", round(s8.item(), 6))
print("first 6 weights:", [round(v, 4) for v in row[0, :6].tolist()])
print("codes:          ", q8[0, :6].tolist())
print("back:           ", [round(v, 4) for v in dequantize_int8(q8, s8, torch.float32)[0, :6].tolist()])
q4, s4, z4 = quantize_int4(row, 32)
g = row[0, :32]
print(f"group 0: min {g.min():.4f} max {g.max():.4f} -> s = {s4[0, 0]:.5f}, z = {z4[0, 0]:.5f}")
print("codes:          ", q4[0, :6].tolist())
print("back:           ", [round(v, 4) for v in dequantize_int4(q4, s4, z4, torch.float32)[0, :6].tolist()])

# %%
q8, s8 = quantize_int8(w)
err8 = (dequantize_int8(q8, s8, torch.float32) - w) / s8[:, None]  # in steps
q4, s4, z4 = quantize_int4(w, 32)
err4 = ((dequantize_int4(q4, s4, z4, torch.float32) - w).view(768, 4, 32) / s4[..., None]).flatten()
fig, axes = plt.subplots(1, 3, figsize=(11, 3), dpi=100)
axes[0].hist(w.flatten().numpy(), bins=80, color="tab:blue")
levels = (torch.arange(16) - 8) * s4[0, 0] + z4[0, 0]
for v in levels:
    axes[0].axvline(v, color="tab:red", lw=0.5)
axes[0].set_xlabel("weight value")
axes[0].set_ylabel("count")
axes[0].set_title("weights; red: the 16 int4 levels of group 0", fontsize=9)
axes[1].hist(err8.flatten().numpy(), bins=60, color="tab:green")
axes[1].set_xlabel("error (int8 steps)")
axes[1].set_title("int8 error: uniform in ±0.5 step", fontsize=9)
axes[2].hist(err4.numpy(), bins=60, color="tab:purple")
axes[2].set_xlabel("error (int4 steps)")
axes[2].set_title("int4 error, groups of 32", fontsize=9)
plt.tight_layout()
plt.show()
print(f"max |error|: int8 {err8.abs().max():.3f} steps, int4 {err4.abs().max():.3f} steps; "
      f"one int4 step is {(s4.mean() / s8.mean()):.1f} x an int8 step")

# %% [markdown]
# ## 3. The whole model, and the error layer by layer
#
# `quantize_model(model, scheme, group_size)` swaps every Linear of the decoder and `lm_head` for a `QuantLinear`
# in place. A QuantLinear has two ways to compute `x Wᵀ + b`: the readable *reference* (dequantize W, then
# `F.linear`) and the *fast* path, PyTorch's packed weight-only kernels where the device has one
# (`torch._weight_int8pack_mm`; the int4 kernels take the codes re-tiled for the CPU or the GPU). They agree to the
# rounding of the compute dtype.

# %%
q_model = weights.load(CKPT)
report = quantize_model(q_model, "int4", 128)
print(len(report.layers), "layers quantized, e.g.", report.layers[:2], "...", report.layers[-1])
print(f"their weights: {report.float_bytes:,} -> {report.quant_bytes:,} bytes; the model: "
      f"{report.model_bytes_before:,} -> {report.model_bytes_after:,}")
layer = q_model.language_model.layers[0].mlp.gate_up_proj
x = torch.randn(1, 128)
fast = layer(x)
layer.fast = False
ref = layer(x)
layer.fast = True
print(layer)
print(f"fast vs reference: relative difference {((fast - ref).norm() / ref.norm()).item():.1e}")

# %%
proc = load_processor(CKPT)
kinds = tinyvqa.IMAGE_KINDS + tinyvqa.VIDEO_KINDS
batch = proc.apply_chat_template([e.conversation() for e in tinyvqa.examples(TEST_SEED, 14, tinyvqa.IMAGE_KINDS)])
inputs = {}
hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs.setdefault(n, a[0].detach()))
         for n, m in model.named_modules() if n in report.layers]
with torch.no_grad():
    model(**batch)
for h in hooks:
    h.remove()
per_layer = {}
for scheme, G in (("int8", 128), ("int4", 128), ("int4", 32)):
    errs = []
    for n in report.layers:
        lin = model.get_submodule(n)
        y = lin(inputs[n])
        errs.append(((QuantLinear.from_linear(lin, scheme, G)(inputs[n]) - y).norm() / y.norm()).item())
    per_layer[f"{scheme}" + (f", G={G}" if scheme == "int4" else "")] = errs
fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
width = 0.27
for k, (name, errs) in enumerate(per_layer.items()):
    ax.bar(np.arange(len(errs)) + (k - 1) * width, np.array(errs) * 100, width, label=name)
ax.set_xticks(range(len(report.layers)), [n.replace("model.language_model.layers.", "L").replace("self_attn.", "")
                                         .replace("mlp.", "") for n in report.layers], rotation=70, fontsize=7)
ax.set_ylabel("relative output error (%)")
ax.set_title("each quantized layer on the inputs it sees for 14 TinyVQA prompts")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
for name, errs in per_layer.items():
    print(f"{name:12s} median {np.median(errs) * 100:.2f} %, worst {max(errs) * 100:.2f} %")

# %% [markdown]
# ## 4. Layers with the 9B's widths
#
# A random layer initialised like the real ones (standard deviation 0.02), for two of the 9B's shapes, with
# 1,024 of their output rows (the relative error of `y = W x` is a per-row average, so the row count does not change
# it): the relative error for each scheme and group size.

# %%
gen = torch.Generator().manual_seed(1)
shapes = {"4096 -> 4096 (q_proj, o_proj)": 4096, "13696 -> 4096 (down_proj)": 13696}
table = {}
for label, K in shapes.items():
    lin = nn.Linear(K, 1024, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(1024, K, generator=gen) * 0.02)
    xs = torch.randn(4, K, generator=gen).to(torch.bfloat16)
    y = lin(xs).float()
    for scheme, G in (("int8", 128), ("int4", 32), ("int4", 64), ("int4", 128)):
        yq = QuantLinear.from_linear(lin, scheme, G)(xs).float()
        table[label, scheme if scheme == "int8" else f"int4 G={G}"] = ((yq - y).norm() / y.norm()).item()
for label in shapes:
    print(label + ": " + ", ".join(f"{s} {e * 100:.2f} %" for (lab, s), e in table.items() if lab == label))

# %% [markdown]
# int8 stays under 1 %; int4 is near 10 %, less with smaller groups (which cost more: a scale and a zero of
# 2 bytes each per group).
#
# ## 5. Accuracy on held-out TinyVQA
#
# The trained tiny model in four formats, on 20 questions of each of the 7 kinds (140; the test,
# `tests/test_ch10_quant.py`, runs all 350 and asks int8 to stay within 0.5 points of fp32 and int4 within 3).

# %%
exs = tinyvqa.examples(TEST_SEED, 20 * len(kinds), kinds)
acc = {}
for name, dtype, scheme in (("fp32", torch.float32, None), ("bf16", torch.bfloat16, None),
                            ("int8", torch.float32, "int8"), ("int4", torch.float32, "int4")):
    m = weights.load(CKPT, dtype=dtype)
    if scheme:
        quantize_model(m, scheme, 128)
    acc[name] = tinyvqa_eval.accuracy(m, proc, exs)
print(f"{'':6s}" + " ".join(f"{k[:8]:>9s}" for k in list(kinds) + ["all"]))
for name, a in acc.items():
    print(f"{name:6s}" + " ".join(f"{a[k]:9.3f}" for k in list(kinds) + ["all"]))
fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
ax.bar(list(acc), [a["all"] * 100 for a in acc.values()], color=["tab:blue", "tab:cyan", "tab:green", "tab:purple"])
ax.set_ylim(90, 100.5)
ax.set_ylabel("held-out accuracy (%)")
ax.set_title(f"TinyVQA, {len(exs)} held-out questions")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Speed
#
# Decoding at batch 1 reads every decoder weight once per token; where memory bandwidth is the limit, 2 or 4 times
# fewer bytes mean 2 or 4 times more tokens/s. `benchmarks/bench_quant.py` measures it on a 200 M-parameter random model
# with this machine's read bandwidth in the same run; the cell reads its last saved table.

# %%
# NBVAL_IGNORE_OUTPUT
results = ROOT / "benchmarks" / "results" / "quant.md"
text = results.read_text()
rows = re.findall(r"^\| ((?:minglm4v|transformers) \w+) \| (\d+) \| ([\d.]+) \| [\d.]+ \| ([\d.]+) \| ([\d.]+) \|",
                  text, re.M)
bw = float(re.search(r"\*\*([\d.]+) GB/s\*\*", text).group(1))
names = [r[0] for r in rows]
fig, axes = plt.subplots(1, 2, figsize=(11, 3), dpi=100)
axes[0].barh(names, [float(r[2]) for r in rows], color="tab:blue")
axes[0].set_xlabel("decode tokens/s, batch 1")
axes[1].barh(names, [float(r[3]) for r in rows], color="tab:orange")
axes[1].axvline(bw, color="k", ls="--")
axes[1].set_xlabel("achieved bandwidth (GB/s); dashed: measured read bandwidth")
for a in axes:
    a.invert_yaxis()
plt.tight_layout()
plt.show()
print(f"measured read bandwidth {bw} GB/s")
for r in rows:
    print(f"{r[0]:18s} {float(r[2]):7.1f} tokens/s, {r[1]:>4s} MB/token, {float(r[4]):.2f} x bandwidth")

# %% [markdown]
# In this table bf16 decodes no faster than fp32, and no path comes near the measured read bandwidth: on one
# shared CPU core the arithmetic (for int4, unpacking the 4-bit codes), not the memory, sets the pace, so the
# speed-ups follow the bytes only partly. The real 9B reads its 40 decoder layers and `lm_head` every token; the
# measured bandwidth then gives an upper limit on its decode speed on this machine:

# %%
# NBVAL_IGNORE_OUTPUT
m9 = weights.build(cfg, "meta").to(torch.bfloat16)
per_token = {}
for fmt in ("bf16", "int8", "int4"):
    if fmt != "bf16":
        m9 = weights.build(cfg, "meta").to(torch.bfloat16)
        prepare(m9, fmt, 128)
    lm = m9.language_model
    per_token[fmt] = sum(t.numel() * t.element_size() for mod in (lm.layers, m9.lm_head)
                         for t in list(mod.parameters()) + list(mod.buffers()))
for fmt, b in per_token.items():
    print(f"9B {fmt}: {b / GB:5.2f} GB read per token -> at most {bw * GB / b:5.2f} tokens/s at {bw} GB/s")

# %% [markdown]
# Test this chapter's code (the math by hand, both matmul paths, the checkpoint layout, quantizing while loading,
# generation on a quantized model, the accuracy targets):
#
# ```
# pytest tests/test_ch10_quant.py
# ```
