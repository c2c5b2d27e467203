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
# # 09 · The real GLM-4.1V-9B-Thinking
#
# Everything so far ran on tiny models. This chapter runs the published checkpoint, `zai-org/GLM-4.1V-9B-Thinking`
# (20.6 GB of bf16 weights), with the same package: find it, plan the memory, load it straight onto the GPU, ask it
# about an image and a video, separate its thinking from its answer, and measure time to first token, decode speed and
# peak GPU memory **on your machine**.
#
# Where there is no checkpoint or no GPU (as in this book's CI), every cell runs on the tiny checkpoint on the CPU
# instead and says so. To run the real model:
#
# ```
# export MINGLM4V_9B=/path/to/GLM-4.1V-9B-Thinking      # a folder with config.json, the 4 shards and their index
# # or have it in the Hugging Face cache (~/.cache/huggingface/hub), or opt in to a 20.6 GB download:
# export MINGLM4V_DOWNLOAD=1                             # needs `pip install huggingface_hub`
# ```

# %%
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from minglm4v import hub, tinyvqa, weights
from minglm4v.cache import kv_bytes_per_token
from minglm4v.chat import split_thinking
from minglm4v.config import Glm4vConfig, glm41v_9b, tiny
from minglm4v.debug import compare
from minglm4v.fast import decode_step, generate_static, timed_generate
from minglm4v.generation import generate, generate_steps
from minglm4v.patchify import load_image
from minglm4v.processor import Processor, load_processor
from minglm4v.quant import model_bytes, prepare

torch.manual_seed(0)
ROOT = Path.cwd().parent
DATA = ROOT / "data"

# %% [markdown]
# ## 1. Find the checkpoint
#
# `hub.find_checkpoint()` looks at `$MINGLM4V_9B` (then `$GLM41V_PATH`), then the Hugging Face cache for
# `zai-org/GLM-4.1V-9B-Thinking` and its old name `THUDM/GLM-4.1V-9B-Thinking` (complete snapshots only: every shard
# the index lists must be there). It downloads only when `MINGLM4V_DOWNLOAD=1`, and only then imports
# `huggingface_hub`.
# A variable that points at a missing folder is an error, not a silent fallback.

# %%
# NBVAL_IGNORE_OUTPUT
path_9b, how = hub.find_checkpoint()
gpu = torch.cuda.is_available()
print("checkpoint:", path_9b, "|", how)
print("GPU:", torch.cuda.get_device_name(0) if gpu else "none")


# %%
def tiny_checkpoint():
    # The tiny model trained in chapter 08 when it is there; otherwise a seeded random tiny one (its words are noise).
    trained = DATA / "tiny-glm4v"
    if (trained / "config.json").is_file():
        return trained, "the tiny GLM-4.1V trained in chapter 08 (data/tiny-glm4v)"
    from minglm4v.tokenizer import train_tokenizer
    folder = Path(tempfile.mkdtemp(prefix="tiny-glm4v-"))
    torch.manual_seed(0)
    weights.save(weights.build(tiny(), "cpu"), folder)
    corpus = ["What animal is this? A cat.", "What happens in this video? A ball moves to the right."] * 8
    Processor(train_tokenizer(corpus, vocab_size=400)).save_pretrained(folder)
    return folder, "a tiny random GLM-4.1V (seeded; data/tiny-glm4v is not there)"


REAL = path_9b is not None and gpu
if REAL:
    path, device, which = path_9b, "cuda", "GLM-4.1V-9B-Thinking on the GPU"
else:
    path, which = tiny_checkpoint()
    device = "cpu"
    why = "no GLM-4.1V-9B checkpoint found (set MINGLM4V_9B=...)" if path_9b is None else "no GPU"

# %%
# NBVAL_CHECK_OUTPUT
if REAL:
    print("Running", which)
else:
    print(f"{why[0].upper() + why[1:]}; running {which} on the CPU instead.")

# %% [markdown]
# ## 2. The memory plan
#
# Before loading 20 GB anywhere, count it. The weights are counted on the meta device (shapes, no memory); the KV
# cache needs, per token of context, keys and values for every layer: 2 × 40 layers × 2 KV heads × 128 dims × 2 bytes.
# Grouped query attention (2 KV heads for 32 query heads) is what keeps this at 40 KiB instead of 640 KiB.

# %%
# NBVAL_CHECK_OUTPUT
n_9b, bytes_9b = weights.weight_bytes(glm41v_9b(), torch.bfloat16)
kv_9b = kv_bytes_per_token(glm41v_9b(), torch.bfloat16)
print(f"GLM-4.1V-9B: {n_9b:,} parameters = {bytes_9b:,} bytes = {bytes_9b / 1e9:.1f} GB in bf16")
print(f"KV cache: {kv_9b:,} bytes per token = {kv_9b * 8192 / 1e9:.2f} GB for an 8K context, "
      f"{kv_9b * 65536 / 1e9:.2f} GB for the full 64K")
free = 80e9 - bytes_9b
print(f"an 80 GB GPU has room for ~{free / kv_9b / 1e6:.2f} M cached tokens next to the weights")

# %%
ctx = torch.arange(0, 65537, 1024)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=100, gridspec_kw={"width_ratios": [3, 2]})
ax = axes[0]
for batch in (1, 4, 16):
    ax.plot(ctx / 1024, (bytes_9b + batch * ctx * kv_9b) / 1e9, label=f"batch {batch}")
ax.axhline(80, color="grey", ls="--", lw=1)
ax.text(1, 76, "80 GB (H100)", fontsize=8, color="grey")
ax.set_xlabel("context (K tokens)")
ax.set_ylabel("GB (weights + KV cache)")
ax.set_title("GLM-4.1V-9B in bf16: weights + KV cache", fontsize=9)
ax.legend(fontsize=8)
# the same plan as a stacked bar: what one request at batch 1 with an 8K context needs
meta9 = weights.build(glm41v_9b(), "meta")                        # shapes only


def bf16_bytes(module):
    return 2 * sum(p.numel() for p in module.parameters())


parts = {"vision tower": bf16_bytes(meta9.model.visual),
         "decoder layers + embeddings": bf16_bytes(meta9.model.language_model),
         "lm_head": bf16_bytes(meta9.lm_head), "KV cache, 8K tokens": kv_9b * 8192}
bottom = 0.0
for k, (name, nbytes) in enumerate(parts.items()):
    axes[1].bar(0, nbytes / 1e9, bottom=bottom, color=f"C{k}", width=0.5, label=f"{name}: {nbytes / 1e9:.2f} GB")
    bottom += nbytes / 1e9
axes[1].set_xlim(-0.5, 2.2)
axes[1].set_xticks([])
axes[1].set_ylabel("GB")
axes[1].set_title(f"batch 1, 8K context: {bottom:.1f} GB", fontsize=9)
axes[1].legend(fontsize=7, loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Which format fits
#
# Chapter 10 quantizes the decoder and `lm_head` to int8 or int4 while loading. This cell picks the largest format
# that fits the free memory of the GPU: bf16, then int8, then int4, each needing its weights, an 8K-token KV cache,
# about 0.6 GB of activations for a 1080p image (chapter 10's estimate) and a 1 GB allowance for the CUDA runtime.
# Without a GPU it says what the CPU would do instead: decoding reads every decoder and `lm_head` weight once per
# token, so the memory bandwidth measured here bounds the speed of the real 9B in int4.

# %%
# NBVAL_IGNORE_OUTPUT
need, per_token = {}, {}
for fmt in ("bf16", "int8", "int4"):
    m9 = weights.build(glm41v_9b(), "meta").to(torch.bfloat16)
    if fmt != "bf16":
        prepare(m9, fmt, 128)
    held = model_bytes(m9)
    need[fmt] = held + 8192 * kv_9b + int(0.6e9) + int(1e9)
    per_token[fmt] = held - model_bytes(m9.model.visual) - model_bytes(m9.model.language_model.embed_tokens)
if gpu:
    free_bytes = torch.cuda.mem_get_info()[0]
    fits = [fmt for fmt in need if need[fmt] <= free_bytes]
    FMT = fits[0] if fits else None
    print(f"free GPU memory {free_bytes / 1e9:.1f} GB; needed: " +
          ", ".join(f"{f} {b / 1e9:.1f} GB" for f, b in need.items()))
    print(f"-> {FMT}: the largest format that fits" if FMT else "-> none fits: the 9B needs at least "
          f"{need['int4'] / 1e9:.1f} GB in int4")
else:
    FMT = "bf16"
    x = torch.empty(64 << 20, dtype=torch.float32).fill_(1.0)      # 256 MiB, far beyond the caches
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    bandwidth = x.numel() * 4 / sorted(times)[2]                    # bytes / s, median of 5
    ram = int(open("/proc/meminfo").read().split("MemAvailable:")[1].split()[0]) * 1024
    print(f"no GPU. This CPU reads {bandwidth / 1e9:.1f} GB/s ({torch.get_num_threads()} thread(s), median of 5); "
          f"{ram / 1e9:.1f} GB of RAM free")
    for fmt in need:
        print(f"  9B in {fmt}: {need[fmt] / 1e9:5.1f} GB needed, {'fits' if need[fmt] <= ram else 'does not fit'} "
              f"in RAM; reads {per_token[fmt] / 1e9:.2f} GB per token -> at most "
              f"{bandwidth / per_token[fmt]:.2f} tokens/s")
    print("(an upper bound: chapter 10 measures how far below it each path decodes)")

# %%
# NBVAL_CHECK_OUTPUT
n_run, bytes_run = weights.weight_bytes(Glm4vConfig.from_pretrained(path), torch.float32)
print("the model that runs here:", "GLM-4.1V-9B-Thinking" if REAL else f"{n_run:,} parameters (tiny)")


# %% [markdown]
# ## 3. Load it straight onto the GPU
#
# `weights.load(path, device="cuda")` builds the model on the meta device, then reads each tensor from its shard into
# a `torch.empty` on the GPU through one 64 MiB pinned buffer: the CPU never holds more than that buffer, and the GPU
# holds the weights once (no second copy while loading). On the CPU, the parameters are views of the memory-mapped
# shards (read on first use). `benchmarks/bench_load_memory.py` measures the peak RSS against transformers.

# %%
# NBVAL_IGNORE_OUTPUT
def rss_gb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1e6


rss0, t0 = rss_gb(), time.perf_counter()
# on a GPU: the format chosen above (int8/int4 quantize each weight as it is read)
model = weights.load(path, device=device, quantize=None if not REAL or FMT == "bf16" else FMT)
load_s = time.perf_counter() - t0
proc = load_processor(path)
r = model.load_report
print(f"loaded {r.tensors} tensors, {r.parameters:,} parameters ({r.bytes_read / 1e9:.2f} GB, {r.dtype}) from "
      f"{len(r.files)} file(s) in {load_s:.1f} s; process RSS {rss0:.2f} -> {rss_gb():.2f} GB")
if REAL:
    print(f"GPU memory allocated: {torch.cuda.memory_allocated() / 1e9:.2f} GB")

# %%
# NBVAL_CHECK_OUTPUT
print(type(model).__name__, model.dtype, model.device.type, len(model.language_model.layers), "decoder layers")

# %% [markdown]
# ## 4. An image question and a video question
#
# The 9B model thinks first: it answers `<think>…</think><answer>…</answer>` (docs/glm41v.md §7.3). `split_thinking`
# separates the two; only the answer goes back into a multi-turn history. Decoding is greedy here so that runs repeat
# (the official settings sample). The 9B model gets the cat photo and `data/shapes.mp4`. The tiny checkpoint knows
# only TinyVQA (chapter 08), so on the CPU it gets TinyVQA questions: one about `data/scene.png` and a motion question
# about a TinyVQA clip; it answers with one word, without thinking.

# %%
if REAL:
    image, image_q = load_image(DATA / "cat.png"), "What animal is this, and what is it doing?"
    video, video_q = {"type": "video", "video": str(DATA / "shapes.mp4")}, "What happens in this video?"
else:
    image, image_q = load_image(DATA / "scene.png"), "What colour is the triangle?"
    clip = tinyvqa.examples(seed=7, n=1, kinds=["motion"])[0]     # 4 frames of one moving shape, at 2 fps
    video, video_q = {"type": "video", "video": clip.frames, "fps": tinyvqa.VIDEO_FPS}, clip.question
image_conv = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": image_q}]}]
video_conv = [{"role": "user", "content": [video, {"type": "text", "text": video_q}]}]
max_new = 1024 if REAL else 24
stops = model.config.text_config.eos_token_id


def answer(conv):
    inputs = proc.apply_chat_template([conv])
    out, timing = timed_generate(model, inputs, static=True, max_new_tokens=max_new)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]  # up to the stop token
    return inputs, new, proc.decode(new, skip_special_tokens=False), timing


# %%
# NBVAL_IGNORE_OUTPUT
image_inputs, image_ids, image_text, image_timing = answer(image_conv)
thinking, reply = split_thinking(image_text)
print("QUESTION:", image_q)
print(f"prompt: {image_inputs['input_ids'].shape[1]} tokens, image grid {image_inputs['image_grid_thw'].tolist()}")
print("THINKING:", thinking[:1500])
print("ANSWER:  ", reply)

# %%
# NBVAL_IGNORE_OUTPUT
video_inputs, video_ids, video_text, video_timing = answer(video_conv)
thinking, reply = split_thinking(video_text)
print("QUESTION:", video_q, "" if REAL else f"(TinyVQA's answer: {clip.answer})")
print(f"prompt: {video_inputs['input_ids'].shape[1]} tokens, video grid {video_inputs['video_grid_thw'].tolist()}")
print("THINKING:", thinking[:1500])
print("ANSWER:  ", reply)

# %%
# NBVAL_CHECK_OUTPUT
print("image prompt", tuple(image_inputs["input_ids"].shape),
      "| video prompt", tuple(video_inputs["input_ids"].shape))
print("split_thinking:", split_thinking("<think>Whiskers, fur: a cat.</think><answer>A cat, sleeping.</answer>"))

# %% [markdown]
# ## 5. Time to first token, decode speed, peak GPU memory
#
# `timed_generate` times the whole call: **time to first token** (vision tower + prefill + first pick), then **decode
# tokens/s** over the rest, and `torch.cuda.max_memory_allocated` on a GPU. Measured here, on this machine; on the CPU
# with the tiny model the numbers say little about the 9B model on a GPU. What to expect there: a decode step at batch
# 1
# reads the 40 decoder layers and lm_head once (17.6 GB), so an H100 (3.35 TB/s) is bound to at most about
# 3.35 TB/s / 17.6 GB ≈ 191 tokens/s.

# %%
# NBVAL_IGNORE_OUTPUT
for name, t in (("image", image_timing), ("video", video_timing)):
    peak = f"{t.peak_gpu_bytes / 1e9:.1f} GB" if t.peak_gpu_bytes is not None else "n/a (CPU)"
    print(f"{name}: prompt {t.prompt_tokens} tokens, {t.new_tokens} new | time to first token {t.ttft_s * 1e3:.0f} ms"
          f" | decode {t.decode_tokens_per_s:.1f} tokens/s | peak GPU memory {peak}")

# %% [markdown]
# **A decode timeline.** The same image question, token by token: the time at which each new token arrives (eager
# loop of chapter 06, `generate_steps`, 3 runs, the median arrival time of each token). The first token waits for the
# vision tower and the prefill; after it the tokens come at a steady pace, one decoder pass each.

# %%
def arrivals(inputs, n):
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    never = [model.config.text_config.vocab_size - 1]                 # an id it never writes: all n tokens come
    times, t0 = [], time.perf_counter()
    for _ in generate_steps(model, **inputs, max_new_tokens=n, eos_token_id=never):
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


n_timeline = 128 if REAL else 32
timeline = [statistics.median(ts) for ts in zip(*(arrivals(image_inputs, n_timeline) for _ in range(3)))]
fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
ax.plot(range(1, len(timeline) + 1), [1e3 * t for t in timeline], ".-", ms=3, lw=0.8)
ax.axhline(1e3 * timeline[0], color="grey", ls=":", lw=1)
ax.annotate("first token: vision tower + prefill", (1, 1e3 * timeline[0]),
            (len(timeline) * 0.3, 1e3 * timeline[0] * 0.4), fontsize=8, arrowprops=dict(arrowstyle="->", color="grey"))
ax.set_xlabel("new token")
ax.set_ylabel("arrival time (ms, median of 3 runs)")
ax.set_ylim(bottom=0)
ax.set_title(f"decode timeline of {which} ({device})", fontsize=9)
plt.show()

# %% [markdown]
# ## 6. The fast decode path
#
# The eager loop of chapter 06 is written to be read. `minglm4v.fast.generate_static` decodes with a **static KV
# cache**: every step writes its keys and values at a slot held in a device tensor (`index_copy_`), attends over all
# slots with a key mask, and never asks the host anything (the loop looks at the tokens every 16 steps to stop). Same
# shapes every step, so `torch.compile` captures the step whole (`fullgraph=True` would fail on any host sync) and, on a
# GPU, `mode="reduce-overhead"` replays it as one CUDA graph. The tokens are exactly the eager loop's:

# %%
# NBVAL_CHECK_OUTPUT
inputs = proc.apply_chat_template([image_conv])
n = 64 if REAL else 24
NEVER = model.config.text_config.vocab_size - 1  # a padding row of the vocabulary as the stop id: all n are compared
eager = generate(model, **inputs, max_new_tokens=n, eos_token_id=[NEVER])
static = generate_static(model, **inputs, max_new_tokens=n, eos_token_id=[NEVER])
print("static-cache tokens == eager tokens:", torch.equal(eager, static), tuple(static.shape))

# %%
# NBVAL_IGNORE_OUTPUT
torch._dynamo.reset()
if REAL:
    step = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True)
else:  # on the CPU: only check that the step is captured whole. The "eager" backend runs the captured graph as it
    # is, without optimising it, so no speed-up is expected (its guard checks on every call can even cost a little).
    # (inductor would optimise, but adds a C++ compile of about 30 s here.)
    step = torch.compile(decode_step, fullgraph=True, backend="eager")
kw = dict(max_new_tokens=n, eos_token_id=[NEVER])
t0 = time.perf_counter()
compiled = generate_static(model, **inputs, step_fn=step, **kw)
print(f"first compiled run (includes compiling): {time.perf_counter() - t0:.1f} s; "
      f"tokens equal eager: {torch.equal(compiled, eager)}")
for label, fn in (("eager generate", None), ("generate_static", decode_step), ("generate_static + compile", step)):
    if fn is None:
        _, t = timed_generate(model, inputs, static=False, **kw)
    else:
        _, t = timed_generate(model, inputs, static=True, step_fn=fn, **kw)
    print(f"{label:27s} time to first token {t.ttft_s * 1e3:7.0f} ms | decode {t.decode_tokens_per_s:8.1f} tokens/s")

# %% [markdown]
# ## 7. Layer by layer against transformers
#
# If you have transformers too, `minglm4v.debug.compare` (chapter 04) runs both models on the same prompt and lists
# the largest difference per module, naming the first that goes over the tolerance. With the 9B model both copies
# must fit (about 41 GB of GPU memory); in bf16 expect differences of a few bf16 steps of the values, not zero.

# %%
# NBVAL_IGNORE_OUTPUT
try:
    import transformers
except ImportError:
    transformers = None
    print("transformers is not installed: skipping the comparison (pip install transformers to run it)")
if transformers is not None:
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    hf = transformers.Glm4vForConditionalGeneration.from_pretrained(path, dtype=model.dtype).to(device).eval()
    print("transformers", transformers.__version__)

# %%
# NBVAL_CHECK_OUTPUT
if transformers is not None:
    ids = inputs["input_ids"].to(device)
    px, grid = inputs["pixel_values"].to(device), inputs["image_grid_thw"].to(device)
    report = compare(model, hf, lambda m: m(ids, pixel_values=px, image_grid_thw=grid),
                     lambda m: m(input_ids=ids, pixel_values=px, image_grid_thw=grid,
                                 mm_token_type_ids=(ids == model.config.image_token_id).long()),
                     atol=1e-4 if model.dtype == torch.float32 else 5e-2)
    print(len(report.rows), "modules compared; all within tolerance:", all(r.ok for r in report.rows))
    print("first divergence:", report.first_divergence)

# %%
# NBVAL_IGNORE_OUTPUT
if transformers is not None:
    print(report)

# %% [markdown]
# Test this chapter's code (the static cache against the eager loop, compiling the step whole, the loader's device
# checks and memory, finding the checkpoint):
#
# ```
# pytest tests/test_ch09_fast.py
# ```
