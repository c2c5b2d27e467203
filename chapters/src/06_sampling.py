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
# # 06 · Sampling and the KV cache
#
# The model gives a vector of logits for the next token. Turning logits into text takes two more pieces:
# a **sampler** that picks a token (`minglm4v/sampling.py`) and a **loop** that feeds it back, made fast by a
# **KV cache** (`minglm4v/cache.py`, `minglm4v/generation.py`).
#
# ```
# prefill:  logits = model(prompt)                 the whole prompt once; keys/values of every layer go to the cache
# step:     token = sample(logits[-1])             greedy, or a draw after temperature / top-k / top-p / min-p
#           logits = model(token, cache)           ONE new token; attends to the cached keys/values
# ```
#
# The model of sections 1-3 has random weights, so its words are noise; the mechanics are what matter. Section 4 opens
# the cache of the small trained model of chapter 08, which answers questions about coloured shapes.

# %%
import statistics
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import torch

from minglm4v import tinyvqa_eval
from minglm4v.config import TINY_SPECIAL_IDS, Glm4vConfig, TextConfig, VisionConfig
from minglm4v.generation import generate, generate_steps, prefill
from minglm4v.model import Glm4vForConditionalGeneration
from minglm4v.patchify import load_image
from minglm4v.sampling import SamplingConfig, warp

torch.manual_seed(0)
torch.set_num_threads(1)  # small models: one thread is quickest, and timings stay steady on a busy machine
text = TextConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096, partial_rotary_factor=0.5,
                  mrope_section=(2, 3, 3), pad_token_id=0, eos_token_id=(0,), dtype="float32")
vision = VisionConfig(depth=1, hidden_size=64, num_heads=4, intermediate_size=128, out_hidden_size=256, image_size=56)
cfg = Glm4vConfig(text_config=text, vision_config=vision, **TINY_SPECIAL_IDS)  # the tiny preset's special ids
model = Glm4vForConditionalGeneration(cfg).eval()
prompt = torch.randint(13, 1000, (1, 24))
with torch.no_grad():
    logits = model(prompt)[0, -1]          # (V,): scores for the token after the prompt
print("logits", tuple(logits.shape))

# %% [markdown]
# ## 1. One distribution, several samplers
#
# * **temperature** T divides the logits: T < 1 sharpens, T > 1 flattens;
# * **top-k** keeps the k most likely tokens;
# * **top-p** keeps the smallest set of most likely tokens whose probabilities add up to at least p;
# * **min-p** keeps tokens at least `min_p ×` as likely as the best one.
#
# Each removes tokens by setting their score to −∞, in the order transformers applies them (temperature, top-k, top-p,
# min-p); the tests compare each with transformers' logits processor of the same name.

# %%
settings = {"T = 1": SamplingConfig(do_sample=True), "T = 0.5": SamplingConfig(do_sample=True, temperature=0.5),
            "T = 2": SamplingConfig(do_sample=True, temperature=2.0),
            "top-k 20": SamplingConfig(do_sample=True, top_k=20),
            "top-p 0.3": SamplingConfig(do_sample=True, top_p=0.3),
            "min-p 0.5": SamplingConfig(do_sample=True, min_p=0.5)}
order = logits.argsort(descending=True)[:60]
fig, axes = plt.subplots(2, 3, figsize=(10, 4.2), dpi=100, sharex=True, sharey=True)   # one scale for all six
for ax, (name, s) in zip(axes.flat, settings.items()):
    p = warp(logits[None], s).softmax(-1)[0]
    ax.bar(range(60), p[order].numpy(), width=1.0, color="#2b6cb0")
    ax.set_title(f"{name}: {int((p > 0).sum())} tokens left", fontsize=9)
for ax in axes[1]:
    ax.set_xlabel("the 60 most likely tokens (rank)")
for ax in axes[:, 0]:
    ax.set_ylabel("probability")
fig.tight_layout()
plt.show()

# %%
# NBVAL_CHECK_OUTPUT
for name, s in settings.items():
    p = warp(logits[None], s).softmax(-1)[0]
    print(f"{name:10} tokens left {int((p > 0).sum()):>4}   top probability {p.max().item():.3f}")

# %% [markdown]
# ## 2. Greedy and seeded sampling
#
# Greedy decoding (`do_sample=False`) always takes the argmax: it is what the tests compare with transformers token
# for token. Sampling draws from the warped distribution; a `seed` makes the draw repeatable.

# %%
# NBVAL_CHECK_OUTPUT
kw = dict(max_new_tokens=8, eos_token_id=[999])
print("greedy      ", generate(model, prompt, **kw)[0, 24:].tolist())
sample = dict(do_sample=True, temperature=0.8, top_k=50, **kw)
print("seed 1      ", generate(model, prompt, seed=1, **sample)[0, 24:].tolist())
print("seed 1 again", generate(model, prompt, seed=1, **sample)[0, 24:].tolist())
print("seed 2      ", generate(model, prompt, seed=2, **sample)[0, 24:].tolist())

# %% [markdown]
# ## 3. What the cache saves
#
# Without a cache, step k runs the whole sequence (prompt + k tokens) through every layer again, so a step costs more
# as the text grows. With the cache, a step runs **one** token per sequence and reads the stored keys and values of
# everything before it: the cost stays nearly flat. The cache's size is `2 × layers × Hkv × D` numbers per token
# (for the 9B model in bfloat16: 2 · 40 · 2 · 128 · 2 bytes = 40 KiB per token).
#
# Below: the time of each decode step, with and without the cache, from a 32-token prompt to 128 tokens. Each loop
# runs 3 times and every step's time is the median of its 3 runs, so a busy moment of the machine does not show as a
# spike.

# %%
torch.manual_seed(0)
long_prompt = torch.randint(13, 1000, (1, 32))
steps, repeats = 96, 3


def with_cache():
    times, t0 = [], time.perf_counter()
    for _ in generate_steps(model, long_prompt, max_new_tokens=steps, eos_token_id=[999]):
        t1 = time.perf_counter()
        times.append(t1 - t0)
        t0 = t1
    return times[1:]                         # drop the first: it includes the prefill


@torch.no_grad()
def without_cache():
    ids, times = long_prompt, []
    for _ in range(steps):
        t0 = time.perf_counter()
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)   # the whole sequence, every step
        ids = torch.cat([ids, nxt], 1)
        times.append(time.perf_counter() - t0)
    return times[1:], ids


def median_per_step(runs):
    return [statistics.median(step) for step in zip(*runs)]


cached = median_per_step([with_cache() for _ in range(repeats)])
runs = [without_cache() for _ in range(repeats)]
uncached, ids_nc = median_per_step([r[0] for r in runs]), runs[0][1]
same = torch.equal(generate(model, long_prompt, max_new_tokens=steps, eos_token_id=[999]), ids_nc)

# %%
# NBVAL_CHECK_OUTPUT
print("cached and uncached greedy tokens identical:", same)

# %%
# NBVAL_IGNORE_OUTPUT
first, last = slice(0, 10), slice(-10, None)
for name, t in [("with cache", cached), ("without cache", uncached)]:
    print(f"{name:14} first steps {1e3 * statistics.median(t[first]):6.2f} ms   "
          f"last steps {1e3 * statistics.median(t[last]):6.2f} ms")
print(f"speed-up at the end: {statistics.median(uncached[last]) / statistics.median(cached[last]):.1f}x")

# %%
fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
x = range(34, 34 + len(cached))
ax.plot(x, [1e3 * t for t in uncached], label="without cache: recompute everything")
ax.plot(x, [1e3 * t for t in cached], label="with KV cache: one token per step")
ax.set_xlabel("sequence length at the step (tokens)")
ax.set_ylabel(f"ms per step (median of {repeats} runs)")
ax.set_ylim(bottom=0)
ax.legend(fontsize=8)
ax.set_title("decode step time (this machine's CPU)", fontsize=9)
plt.show()

# %% [markdown]
# ## 4. The cache, opened up
#
# A model that has learnt something: the tiny GLM-4.1V of chapter 08 (`data/tiny-glm4v/`), asked a question about
# `data/scene.png`. `generation.prefill` runs the prompt once and returns the cache it filled. The cache is allocated
# at its final size (prompt + `max_new_tokens` slots) for every layer, one key tensor and one value tensor of shape
# `(B, Hkv, T, D)`; `cache.length` says how many slots hold real keys and values.

# %%
# NBVAL_CHECK_OUTPUT
vqa, vqa_proc = tinyvqa_eval.load()
scene = load_image("../data/scene.png")
question = "What colour is the triangle?"
conv = [{"role": "user", "content": [{"type": "image", "image": scene}, {"type": "text", "text": question}]}]
inputs = vqa_proc.apply_chat_template([conv])
ids, mask, grid = inputs["input_ids"], inputs["attention_mask"], inputs["image_grid_thw"]
new = 4
p = prefill(vqa, ids, mask, inputs["pixel_values"], grid, max_new_tokens=new)
cache = p.cache
print("prompt", tuple(ids.shape), "| image_grid_thw", grid.tolist())
print("layers:", len(cache.keys), "| keys[0]", tuple(cache.keys[0].shape), "| values[0]", tuple(cache.values[0].shape),
      "(B, Hkv, T, D) | T =", cache.max_len, "= prompt", ids.shape[1], "+", new)
print("after prefill: cache.length =", cache.length, "| filled keys[0][:, :, :length]",
      tuple(cache.keys[0][:, :, :cache.length].shape))

# %% [markdown]
# **`rope_deltas` carry the positions on.** The prompt's positions come from M-RoPE (chapter 03): the 3 × 3 image
# takes only 3 positions for its 9 tokens, so the largest position is smaller than the prompt length.
# `rope_delta = max position + 1 − length` is computed once at the prefill and kept; every new token then gets
# `slot + rope_delta` on all three axes, where `slot` counts the real tokens before it. Each decode step below embeds
# one token, writes its key and value into the next free slot of every layer and attends to the filled slots:

# %%
# NBVAL_CHECK_OUTPUT
pos, deltas = vqa.position_ids(ids, mask, grid)
L = ids.shape[1]
print(f"prompt length {L} | largest prompt position {pos.max().item()} | rope_delta {deltas.item()} "
      f"= {pos.max().item()} + 1 - {L}")
token, position = p.logits.argmax(-1), p.position                      # greedy: (B,), (B, 1)
mine = []
with torch.no_grad():
    for step in range(new - 1):
        mine.append(token.item())
        print(f"step {step}: token {token.item():>3} {vqa_proc.tokenizer.decode([token.item()])!r:12} at slot "
              f"{cache.length} gets position {position.item()} = {cache.length} + ({deltas.item()})")
        x = vqa.language_model.embed_tokens(token[:, None])            # (B, 1, C)
        logits = vqa.logits(x, position.expand(3, 1, 1), None, cache, last_only=True)[:, -1]   # (B, V)
        filled = tuple(cache.keys[0][:, :, :cache.length].shape)
        print(f"        cache.length -> {cache.length}, filled keys[0] {filled}")
        token, position = logits.argmax(-1), position + 1
again = generate(vqa, ids, mask, pixel_values=inputs["pixel_values"], image_grid_thw=grid, max_new_tokens=new - 1)
again = again[0, L:].tolist()                                          # it stops after the first stop id, <|user|>
print("these steps:", mine, "| generate():", again, "| same:", mine[:len(again)] == again)

# %% [markdown]
# The keys of layer 0, KV head 0, slot by slot: the prompt's slots written by the prefill, then one slot per decode
# step, and the slots still free (zeros, never read: attention only looks at `[0, length)`).

# %%
k0 = cache.keys[0][0, 0]                                               # (T, D)
lim = k0.abs().max().item()
fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
shown = ax.imshow(k0.T.numpy(), aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
ax.axvline(L - 0.5, color="k", lw=1.5)
ax.axvline(cache.length - 0.5, color="k", lw=1.5, ls="--")
ax.text(L / 2, -1.2, "prefill", ha="center", fontsize=8)
ax.text((L + cache.length) / 2, -1.2, "decode", ha="center", fontsize=8)
ax.set_xlabel("cache slot (solid line: end of the prompt; dashed: cache.length)")
ax.set_ylabel("key dimension")
fig.colorbar(shown, ax=ax, label="key value")
ax.set_title("layer 0, KV head 0: the cached keys", fontsize=9, pad=14)
plt.show()

# %% [markdown]
# ## 5. Streaming and the command line
#
# `minglm4v.generation.stream(model, processor, inputs)` yields text pieces as tokens arrive (it waits when a
# token ends in the middle of a UTF-8 character). The command line uses it; by default it answers with the tiny
# model of chapter 08, so ask it a TinyVQA question about the TinyVQA scene:
#
# ```
# python -m minglm4v generate --image data/scene.png --prompt "What colour is the triangle?"
# ```

# %%
# NBVAL_CHECK_OUTPUT
cli = [sys.executable, "-m", "minglm4v", "generate", "--image", "data/scene.png", "--prompt", question]
run = subprocess.run(cli, cwd="..", capture_output=True, text=True, timeout=120)
print("exit status", run.returncode, "| answer:", run.stdout.strip())

# %% [markdown]
# Test this chapter's code (samplers against transformers' logits processors, greedy tokens against
# transformers' `generate`, the cache, the command line):
#
# ```
# pytest tests/test_ch06_sampling.py tests/test_ch06_generation.py tests/test_ch06_cli.py
# ```
