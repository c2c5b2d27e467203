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
# The model here has random weights, so its words are noise; the mechanics are what matter (chapter 08 trains a model).

# %%
import time
import torch
import matplotlib.pyplot as plt

from minglm4v.config import Glm4vConfig, TextConfig, VisionConfig
from minglm4v.model import Glm4vForConditionalGeneration
from minglm4v.sampling import SamplingConfig, warp, next_token
from minglm4v.generation import generate, generate_steps

torch.manual_seed(0)
text = TextConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=4096, partial_rotary_factor=0.5,
                  mrope_section=(2, 3, 3), pad_token_id=0, eos_token_id=(0,), dtype="float32")
vision = VisionConfig(depth=1, hidden_size=64, num_heads=4, intermediate_size=128, out_hidden_size=256, image_size=56)
cfg = Glm4vConfig(text_config=text, vision_config=vision, image_token_id=9, video_token_id=12,
                  image_start_token_id=7, image_end_token_id=8, video_start_token_id=10, video_end_token_id=11)
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
            "T = 2": SamplingConfig(do_sample=True, temperature=2.0), "top-k 20": SamplingConfig(do_sample=True, top_k=20),
            "top-p 0.3": SamplingConfig(do_sample=True, top_p=0.3), "min-p 0.5": SamplingConfig(do_sample=True, min_p=0.5)}
order = logits.argsort(descending=True)[:60]
fig, axes = plt.subplots(2, 3, figsize=(9, 4), dpi=72, sharex=True)
for ax, (name, s) in zip(axes.flat, settings.items()):
    p = warp(logits[None], s).softmax(-1)[0]
    ax.bar(range(60), p[order].numpy(), width=1.0, color="#2b6cb0")
    ax.set_title(f"{name}: {int((p > 0).sum())} tokens left", fontsize=9)
for ax in axes[1]:
    ax.set_xlabel("tokens, most likely first")
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
print("seed 1      ", generate(model, prompt, do_sample=True, temperature=0.8, top_k=50, seed=1, **kw)[0, 24:].tolist())
print("seed 1 again", generate(model, prompt, do_sample=True, temperature=0.8, top_k=50, seed=1, **kw)[0, 24:].tolist())
print("seed 2      ", generate(model, prompt, do_sample=True, temperature=0.8, top_k=50, seed=2, **kw)[0, 24:].tolist())

# %% [markdown]
# ## 3. What the cache saves
#
# Without a cache, step k runs the whole sequence (prompt + k tokens) through every layer again, so a step costs more
# as the text grows. With the cache, a step runs **one** token per sequence and reads the stored keys and values of
# everything before it: the cost stays nearly flat. The cache's size is `2 × layers × Hkv × D` numbers per token
# (for the 9B model in bfloat16: 2 · 40 · 2 · 128 · 2 bytes = 40 KiB per token).
#
# Below: the time of each decode step, with and without the cache, from a 32-token prompt to 224 tokens.

# %%
torch.manual_seed(0)
long_prompt = torch.randint(13, 1000, (1, 32))
steps = 192

def with_cache():
    times, t0 = [], time.perf_counter()
    for _ in generate_steps(model, long_prompt, max_new_tokens=steps, eos_token_id=[999]):
        t1 = time.perf_counter(); times.append(t1 - t0); t0 = t1
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

cached = with_cache()
uncached, ids_nc = without_cache()
same = torch.equal(generate(model, long_prompt, max_new_tokens=steps, eos_token_id=[999]), ids_nc)

# %%
# NBVAL_CHECK_OUTPUT
print("cached and uncached greedy tokens identical:", same)

# %%
# NBVAL_IGNORE_OUTPUT
import statistics
first, last = slice(0, 10), slice(-10, None)
for name, t in [("with cache", cached), ("without cache", uncached)]:
    print(f"{name:14} first steps {1e3 * statistics.median(t[first]):6.2f} ms   last steps {1e3 * statistics.median(t[last]):6.2f} ms")
print(f"speed-up at the end: {statistics.median(uncached[last]) / statistics.median(cached[last]):.1f}x")

# %%
fig, ax = plt.subplots(figsize=(8, 3.2), dpi=72)
x = range(34, 34 + len(cached))
ax.plot(x, [1e3 * t for t in uncached], label="without cache: recompute everything")
ax.plot(x, [1e3 * t for t in cached], label="with KV cache: one token per step")
ax.set_xlabel("sequence length at the step"); ax.set_ylabel("ms per step"); ax.set_ylim(bottom=0)
ax.legend(fontsize=8); ax.set_title("decode step time (this machine's CPU)", fontsize=9)
plt.show()

# %% [markdown]
# ## 4. Streaming
#
# `minglm4v.generation.stream(model, processor, inputs)` yields text pieces as tokens arrive (it waits when a
# token ends in the middle of a UTF-8 character). The command line uses it:
#
# ```
# python -m minglm4v generate --image data/cat.png --prompt "What animal is this?"
# ```
#
# Test this chapter's code (samplers against transformers' logits processors, greedy tokens against
# transformers' `generate`, the cache, the command line):
#
# ```
# pytest tests/test_ch06_sampling.py tests/test_ch06_generation.py tests/test_ch06_cli.py
# ```
