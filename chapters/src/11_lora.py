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
# # 11 · Teaching it something new
#
# The tiny GLM-4.1V of chapter 08 answers "What colour is the circle?" perfectly. Ask it the way a new user would,
# "What color is the shape?", and it is right only now and then: it knows its training phrasings and nothing else.
# This chapter teaches it paraphrases and one new skill with **LoRA** (low-rank adapters, `minglm4v/lora.py`): the
# model's own weights stay frozen and a few small matrices next to them learn the change. The adapter is a
# PEFT-format folder that 🤗 peft loads onto transformers' model with the same logits, and it can be merged back
# into an ordinary checkpoint. At the end: the memory plan for doing the same to the real 9B model, in bf16 (LoRA)
# and on an int4 base (QLoRA), and a few real training steps on a model with the 9B's widths.

# %%
# NBVAL_CHECK_OUTPUT
import json
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import minglm4v
from minglm4v import adapters, finetune, lora, tinyvqa, tinyvqa_eval
from minglm4v.processor import load_processor
from minglm4v.train import TEST_SEED

sys.path.insert(0, "../data")
import make_lora_data  # noqa: E402  (data/make_lora_data.py: the teaching set of this chapter)

torch.manual_seed(0)
torch.set_num_threads(1)  # small models: one thread is quickest on a busy CPU
ADAPTER = Path("../data/tiny-glm4v-lora")
base = minglm4v.load(tinyvqa.CHECKPOINT)
processor = load_processor(tinyvqa.CHECKPOINT)
print("base model:", tinyvqa.CHECKPOINT.name, f"{sum(p.numel() for p in base.parameters()):,} parameters")

# %% [markdown]
# ## 1. The failure
#
# Twelve seeded scenes with one shape each, and the question in American spelling, about "the shape" (section 4
# measures the same on more questions and more phrasings):

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(12)
scenes = [make_lora_data.example(rng, "the shape") for _ in range(12)]
for e in scenes:
    e.question = "What color is the shape?"
said = tinyvqa_eval.answer_batch(base, processor, scenes)
print("answers:", said)
print(f"right: {sum(s == e.answer for s, e in zip(said, scenes))} of {len(scenes)}")


# %%
def show_scenes(exs, answers, title):
    fig, axes = plt.subplots(2, 6, figsize=(10, 3.9), dpi=100)
    for k, (ax, e, a) in enumerate(zip(axes.flat, exs, answers)):
        ax.imshow(e.image, extent=(0, tinyvqa.SIZE, tinyvqa.SIZE, 0))
        ax.set_title(f"said {a!r}", color="green" if a == e.answer else "red", fontsize=9)
        ax.set_xticks([0, 42, 84])
        ax.set_yticks([0, 42, 84])
        ax.tick_params(labelsize=7)
        if k >= 6:
            ax.set_xlabel("x (px)", fontsize=8)
        if k % 6 == 0:
            ax.set_ylabel("y (px)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()


show_scenes(scenes, said, "base model, 'What color is the shape?' (green: right, red: wrong)")

# %% [markdown]
# Why: the tokenizer was trained on the task's own words, so "color" is two pieces it never saw in training, and
# "shape" after "the" never came before a colour question. The model has no idea what is being asked and answers
# with whatever its weights lean towards: a shape, a count, a direction.

# %%
# NBVAL_CHECK_OUTPUT
for q in ("What colour is the circle?", "What color is the shape?", "Which colour is the circle?"):
    print(f"{q:30s}", [processor.tokenizer.id_to_token(i) for i in processor.tokenizer.encode(q)])

# %% [markdown]
# ## 2. LoRA in one line
#
# A LoRA layer keeps the frozen layer W (C_out x C_in) and adds a rank-r detour (Hu et al. 2021,
# arXiv:2106.09685):
#
# ```
# y = W x + (alpha / r) · B (A x)          A: (r, C_in), random;  B: (C_out, r), zeros at the start
# ```
#
# B starts at zero, so a fresh adapter changes nothing; training moves only A and B. After training, the update can
# be folded into the weight, W' = W + (alpha / r) · B A, and the model is an ordinary checkpoint again.
# `lora.add_lora(model, LoraConfig(...))` wraps the decoder's q/k/v/o and gate_up/down projections (the vision tower
# and merger on request) and freezes everything else:

# %%
# NBVAL_CHECK_OUTPUT
model = minglm4v.load(tinyvqa.CHECKPOINT)
config = lora.LoraConfig(r=8, alpha=16.0)
paths = lora.add_lora(model, config)
print(len(paths), "layers adapted, e.g.", paths[0], "and", paths[5])
print(model.get_submodule(paths[0]))
trained, total = lora.parameter_counts(model)
print(f"trainable: {trained:,} of {total:,} parameters = {100 * trained / total:.2f}%")
inputs = processor.apply_chat_template([e.conversation() for e in scenes])
with torch.no_grad():
    print("a fresh adapter changes nothing:", torch.equal(model(**inputs), base(**inputs)))

# %% [markdown]
# ## 3. The teaching set
#
# `data/make_lora_data.py` draws TinyVQA scenes and asks three kinds of new question, mixed with the old ones
# (replayed, so that the model keeps what it knew):
#
# * **paraphrase**: "What color is the square?", "What is the colour of …", "Which colour/color is …";
# * **the shape**: any colour question about "the shape" when the scene has exactly one;
# * **count5**, the new skill: "How many shapes are there?" about 1 to **5** shapes (the base model only ever saw
#   1 to 3, so it has never answered 4 or 5).

# %%
# NBVAL_CHECK_OUTPUT
print("training mix:", make_lora_data.MIX)
for e in make_lora_data.mixed(np.random.default_rng(3), 6):
    print(f"  {e.kind:10s} {e.question:36s} -> {e.answer}")

# %% [markdown]
# ## 4. Before
#
# Held-out questions: new scenes (their own seeds) of the three new kinds, 40 each, and chapter 08's test set of
# old questions. The prompts are built once and reused for every model below.

# %%
held_new = make_lora_data.held_out(seed=7, per_kind=40)
held_old = tinyvqa.examples(TEST_SEED, 180, tinyvqa.IMAGE_KINDS)


def prepare(exs, size=60):
    return [(exs[i:i + size], processor.apply_chat_template([e.conversation() for e in exs[i:i + size]]))
            for i in range(0, len(exs), size)]


@torch.no_grad()
def accuracy(model, prepared):
    """Fraction of exact greedy answers per kind, and 'all'."""
    right = {}
    for exs, inputs in prepared:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, inputs["input_ids"].shape[1]:]
        for e, row in zip(exs, out):
            right.setdefault(e.kind, []).append(processor.decode(row, skip_special_tokens=True).strip() == e.answer)
    acc = {k: float(np.mean(v)) for k, v in right.items()}
    acc["all"] = float(np.mean([x for v in right.values() for x in v]))
    return acc


prep_new, prep_old = prepare(held_new), prepare(held_old)
before = {"new": accuracy(base, prep_new), "old": accuracy(base, prep_old)}

# %%
# NBVAL_CHECK_OUTPUT
for part, acc in before.items():
    print(f"before, {part} held-out:", {k: round(v, 3) for k, v in acc.items()})

# %% [markdown]
# ## 5. Training
#
# Training for the targets takes 500 steps of 16 questions, which is several minutes on this CPU; so the adapter in
# `data/tiny-glm4v-lora/` was trained by the command line, exactly as a user would fine-tune on their own files:
#
# ```
# python data/make_lora_data.py --out /tmp/tinyvqa-plus --n 6000      # 6000 scenes (PNG) + train.jsonl
# python -m minglm4v.finetune --model data/tiny-glm4v --data /tmp/tinyvqa-plus/train.jsonl \
#     --out data/tiny-glm4v-lora --steps 500 --batch-size 16 --lr 3e-3 --checkpoint-every 100 --threads 1
# ```
#
# (rank 8, alpha 16, decoder projections only; 10% of the lines held out; loss on the answers only; only the final
# adapter and its `training_log.json` are shipped, not the checkpoints.) Here is its log, and then a short live run
# of the same code (`finetune.finetune`) on freshly drawn questions, to show that the loss falls from the first steps.

# %%
# NBVAL_CHECK_OUTPUT
log = json.loads((ADAPTER / "training_log.json").read_text())
print({k: log[k] for k in ("steps", "batch_size", "lr", "r", "alpha", "train_conversations",
                           "held_out_conversations", "trainable_parameters")})
print("adapter files:", sorted(p.name for p in ADAPTER.iterdir()),
      f"{(ADAPTER / 'adapter_model.safetensors').stat().st_size / 1e3:.0f} kB")

# %%
# NBVAL_IGNORE_OUTPUT
live = minglm4v.load(tinyvqa.CHECKPOINT)
# 24 questions of the new kinds
probe = [e.conversation(with_answer=True) for e in make_lora_data.held_out(seed=99, per_kind=8)]
probe_before = finetune.held_out_loss(live, processor, probe, batch_size=24)
t0 = time.perf_counter()
hist = finetune.finetune(live, processor, [], probe, config=config, steps=30, batch_size=8, lr=2e-3, quiet=True,
                   checkpoint_every=10,
                   sample=lambda rng, b: [e.conversation(with_answer=True) for e in make_lora_data.mixed(rng, b)])
print(f"live run: 30 steps of 8 in {time.perf_counter() - t0:.1f} s; loss on 24 held-out new-kind questions "
      f"{probe_before:.3f} before, then", ", ".join(f"{loss:.3f} at step {s}" for s, loss in hist.held_out))

# %%
fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
loss = np.array(log["loss"])
ax.plot(np.arange(1, len(loss) + 1), loss, color="0.75", lw=0.8, label="shipped run, per step")
smooth = np.convolve(loss, np.ones(20) / 20, mode="valid")
ax.plot(np.arange(20, len(loss) + 1), smooth, color="C0", label="shipped run, mean of 20 steps")
steps, held = zip(*log["held_out_loss"])
ax.plot(steps, held, "o-", color="C3", label="shipped run, held-out lines")
live_steps, live_held = zip(*hist.held_out)
ax.plot((0,) + live_steps, (probe_before,) + live_held, "s-", color="C2", label="live run, 24 held-out new-kind")
ax.set_yscale("log")
ax.set_xlabel("training step")
ax.set_ylabel("cross-entropy on answer tokens (nats)")
ax.set_title("LoRA fine-tuning of the tiny GLM-4.1V")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 6. After
#
# `adapters.load_adapter` reads the folder (it checks every tensor against the model and the config's target_modules)
# and wraps the same layers again:

# %%
tuned = minglm4v.load(tinyvqa.CHECKPOINT)
adapters.load_adapter(tuned, ADAPTER)
after = {"new": accuracy(tuned, prep_new), "old": accuracy(tuned, prep_old)}

# %%
# NBVAL_CHECK_OUTPUT
for part, acc in after.items():
    print(f"after, {part} held-out: ", {k: round(v, 3) for k, v in acc.items()})
print(f"target new forms >= 95%: {after['new']['all']:.1%}  met: {after['new']['all'] >= 0.95}")
print(f"target old held-out >= 99%: {after['old']['all']:.1%}  met: {after['old']['all'] >= 0.99}")
said_after = tinyvqa_eval.answer_batch(tuned, processor, scenes)
print(f"the twelve scenes of section 1: {sum(s == e.answer for s, e in zip(said_after, scenes))} of 12 right")

# %%
kinds = [("new", k) for k in make_lora_data.NEW_KINDS] + [("old", k) for k in tinyvqa.IMAGE_KINDS]
x = np.arange(len(kinds))
fig, ax = plt.subplots(figsize=(9, 3.4), dpi=100)
ax.bar(x - 0.2, [100 * before[p][k] for p, k in kinds], 0.4, label="base model", color="0.6")
ax.bar(x + 0.2, [100 * after[p][k] for p, k in kinds], 0.4, label="base + LoRA adapter", color="C0")
ax.axhline(95, color="C3", lw=0.8, ls="--", label="95% (target for the new kinds)")
ax.set_xticks(x, [f"{k}\n({p})" for p, k in kinds], fontsize=8)
ax.set_ylabel("held-out accuracy (%)")
ax.set_ylim(0, 105)
ax.set_title(f"before and after: {len(held_new)} new and {len(held_old)} old held-out questions")
ax.legend(fontsize=8, loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. Merging
#
# For serving, fold the adapter into the weights: `lora.merge_and_unload` replaces every LoRA layer by a plain
# Linear holding W + (alpha / r) · B A. `minglm4v.save` then writes an ordinary checkpoint in the published layout,
# which transformers' `from_pretrained` (and any server built on it) loads unchanged; `tests/test_ch11_lora.py`
# checks that, and that `peft.PeftModel.from_pretrained(transformers_model, "data/tiny-glm4v-lora")`-style loading
# gives the same logits as minglm4v with the adapter.

# %%
# NBVAL_CHECK_OUTPUT
with torch.no_grad():
    unmerged = tuned(**inputs)
    lora.merge_and_unload(tuned)
    print("LoRA layers left:", len(lora.lora_layers(tuned)), "| merged logits within 1e-4 of the adapter's:",
          bool((tuned(**inputs) - unmerged).abs().max() < 1e-4))
print("same answers:", tinyvqa_eval.answer_batch(tuned, processor, scenes) == said_after)

# %% [markdown]
# ## 8. The recipe for the 9B
#
# What training needs on a GPU, for the published GLM-4.1V-9B (10.3 B parameters; docs/glm41v.md §4, §5), with
# LoRA rank 16 on the decoder's q/k/v/o and gate_up/down projections, batch 1, a sequence of 4096 tokens (one large
# image plus text), gradient checkpointing, the vision tower frozen (so it runs without gradients):
#
# * **weights**: bf16 (2 bytes each); for QLoRA the decoder's Linears and lm_head in int4 with a bf16 scale and
#   zero per 128 weights (0.5 + 4/128 bytes), the rest (embeddings, vision tower) in bf16;
# * **adapter**: float32 weight, gradient and two AdamW moments: 16 bytes per LoRA parameter;
# * **activations with checkpointing**: each of the 40 layers keeps its (L, C) bf16 input; one layer's
#   recomputation holds about 8 (L, C) tensors and 3 (L, 2I) tensors; plus the (L, V) logits in float32 for the loss;
# * **overhead**: about 1.5 GB of CUDA context and allocator slack.

# %%
# NBVAL_CHECK_OUTPUT
from minglm4v.config import TINY_SPECIAL_IDS, glm41v_9b  # noqa: E402
from minglm4v.weights import build  # noqa: E402

cfg9 = glm41v_9b()
meta = build(cfg9, "meta")
t9 = cfg9.text_config
L_seq, GB = 4096, 1e9
rank9 = 16
targets9 = lora.target_paths(meta, lora.LoraConfig(r=rank9))
lora_params = sum(rank9 * (meta.get_submodule(p).in_features + meta.get_submodule(p).out_features) for p in targets9)
n_all = sum(p.numel() for p in meta.parameters())
n_quant = sum(meta.get_submodule(p).weight.numel() for p, m in meta.named_modules()
              if isinstance(m, torch.nn.Linear) and (p.startswith("model.language_model.") or p == "lm_head"))
C9, I9, V9 = t9.hidden_size, t9.intermediate_size, t9.vocab_size
act = (t9.num_hidden_layers * L_seq * C9 * 2 + (8 * L_seq * C9 + 3 * L_seq * 2 * I9) * 2 + L_seq * V9 * 4) / GB
plan = {
    "LoRA, bf16 base": {"weights": n_all * 2 / GB, "adapter + AdamW": lora_params * 16 / GB, "activations": act},
    "QLoRA, int4 base": {"weights": (n_quant * (0.5 + 4 / 128) + (n_all - n_quant) * 2) / GB,
                         "adapter + AdamW": lora_params * 16 / GB, "activations": act},
}
for name, parts in plan.items():
    parts["overhead"] = 1.5
    total = sum(parts.values())
    fits = [g for g, mem in (("RTX 4060 Ti 16 GB", 16), ("RTX 4090 / L4 24 GB", 24), ("A100 40 GB", 40),
                             ("L40S / A6000 48 GB", 48), ("A100 / H100 80 GB", 80)) if total < 0.92 * mem]
    print(f"{name:17s}", "  ".join(f"{k} {v:5.2f} GB" for k, v in parts.items()), f"= {total:5.1f} GB;",
          "fits:", ", ".join(fits))
print(f"LoRA parameters: {lora_params:,} ({100 * lora_params / n_all:.2f}% of {n_all:,})")
no_ckpt = t9.num_hidden_layers * (8 * L_seq * C9 + 3 * L_seq * 2 * I9) * 2 / GB
print(f"without gradient checkpointing every layer keeps its working set: {no_ckpt:.1f} GB of activations "
      f"instead of {act:.1f} GB")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
left = np.zeros(len(plan))
for k, colour in zip(("weights", "adapter + AdamW", "activations", "overhead"), ("C0", "C1", "C2", "0.6")):
    vals = np.array([parts[k] for parts in plan.values()])
    ax.barh(list(plan), vals, left=left, color=colour, label=k)
    left += vals
for mem in (16, 24, 40, 80):
    ax.axvline(mem, color="k", lw=0.7, ls=":")
    ax.text(mem, 1.45, f"{mem} GB", fontsize=8, ha="center")
ax.set_xlabel("GPU memory (GB, 1e9 bytes)")
ax.set_title("fine-tuning GLM-4.1V-9B: batch 1, 4096 tokens, rank 16, gradient checkpointing", fontsize=9)
ax.set_ylim(-0.6, 1.7)
ax.legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Without gradient checkpointing every layer would keep its whole working set (the last line above), which alone
# would fill a 40 GB card; `finetune.checkpoint_layers(model)` turns it on. The same code path, run for real: a
# random model with the 9B's
# widths (hidden 4096, MLP 13696, 32 query and 2 key/value heads, vision width 1536 with the full merger) but 2
# decoder layers, 1 vision block and a 4096-row vocabulary instead of 151,552 (drawing 1.2 B random embedding values
# alone would take longer than this whole chapter), in bf16, with a rank-16 adapter, gradient checkpointing and
# AdamW, on one small image and a short prompt. The weights come from one seeded table of 1,000,003 random values
# repeated through each tensor, again because drawing 700 M fresh values is slow.

# %%
# NBVAL_IGNORE_OUTPUT
import dataclasses  # noqa: E402

small_vocab = {"vocab_size": 4096, "pad_token_id": 0, "eos_token_id": (0, 1)}  # special ids moved into 4096 rows
cfg_w = dataclasses.replace(cfg9, text_config=dataclasses.replace(t9, num_hidden_layers=2, dtype="bfloat16",
                                                                   **small_vocab),
                            vision_config=dataclasses.replace(cfg9.vision_config, depth=1), **TINY_SPECIAL_IDS)
wide = build(cfg_w, "meta").to_empty(device="cpu").to(torch.bfloat16)
table = torch.randn(1_000_003, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16) * 0.02
with torch.no_grad():
    for name, p in wide.named_parameters():
        if "norm" in name or p.ndim == 1:
            p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
        else:
            flat, k = p.view(-1), table.numel()
            whole = flat.numel() // k
            flat[:whole * k].view(whole, k).copy_(table.expand(whole, k))
            flat[whole * k:].copy_(table[:flat.numel() - whole * k])
lora.add_lora(wide, lora.LoraConfig(r=16, alpha=32.0))
finetune.checkpoint_layers(wide)
n_train, n_total = lora.parameter_counts(wide)
print(f"9B-width model: {n_total / 1e9:.2f} B parameters in bf16, {n_train:,} trainable "
      f"({100 * n_train / n_total:.2f}%)")
g = torch.Generator().manual_seed(1)
grid = torch.tensor([[1, 4, 4]])  # 16 patches -> 4 image tokens
ids = [cfg_w.image_start_token_id] + [cfg_w.image_token_id] * 4 + [cfg_w.image_end_token_id]
ids = torch.tensor([ids + torch.randint(100, 4096, (10,), generator=g).tolist()])
labels = torch.cat([torch.full((1, 6), -100), ids[:, 7:], torch.tensor([[-100]])], 1)  # the text after the image
batch9 = {"input_ids": ids, "pixel_values": torch.randn(16, cfg_w.vision_config.patch_dim, generator=g),
          "image_grid_thw": grid, "labels": labels}
opt = torch.optim.AdamW(lora.trainable(wide), lr=1e-3)
for step in range(3):
    t0 = time.perf_counter()
    loss = finetune.loss_of(wide, batch9)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.3f}  ({time.perf_counter() - t0:.1f} s)")

# %% [markdown]
# The loss falls over three steps on the same batch, gradients reach only the adapter, and the base stays bf16
# (on a GPU, `quant.quantize_model(model, "int4")` before `add_lora` gives the QLoRA column of the plan: LoRA wraps
# any layer with `forward`, `in_features` and `out_features`, so a quantized Linear is adapted the same way).
#
# ## Test this chapter's code
#
# ```
# pytest tests/test_ch11_lora.py
# ```
