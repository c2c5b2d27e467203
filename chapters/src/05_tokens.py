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
# # 05 · Tokens and the chat format
#
# The language model reads token ids. This chapter follows a conversation from Python dicts to the ids the model
# sees: the **chat format** GLM-4.1V was trained with (`minglm4v/chat.py`), the **tokenizer**
# (`minglm4v/tokenizer.py`, the `tokenizers` library reading the checkpoint's `tokenizer.json`), and the **processor**
# that expands every image into as many placeholder tokens as the vision tower will produce features
# (`minglm4v/processor.py`).
#
# The real `tokenizer.json` (a ~150k-entry byte-level BPE, ~20 MB) ships with the 9B checkpoint. Here we train a small
# byte-level BPE with the same special tokens, so everything runs offline; the processor works the same with either.

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from minglm4v.chat import render_chat, split_thinking
from minglm4v.config import glm41v_9b
from minglm4v.patchify import load_image
from minglm4v.processor import Processor
from minglm4v.tokenizer import SPECIAL_TOKENS, THINKING_TOKENS, train_tokenizer

torch.manual_seed(0)
corpus = ["What kind of animal is this? It is a cat with green eyes.",
          "Describe the image in one sentence. A white cup of coffee on a wooden table.",
          "An astronaut in an orange suit stands in front of a flag.",
          "How many shapes are there? One, two, three."] * 5
tok = train_tokenizer(corpus, vocab_size=400)
processor = Processor(tok)

# %% [markdown]
# ## 1. The special tokens
#
# A GLM prompt is framed by special tokens. Each is a single id that ordinary text can never produce. The 9B
# checkpoint's ids are in its `tokenizer.json`; `config.json` repeats the image/video ids and lists the stop ids
# (`text_config.eos_token_id`). Our small tokenizer puts the same tokens at 0…12.

# %%
# NBVAL_CHECK_OUTPUT
cfg = glm41v_9b()
real = {"<|endoftext|>": 151329, "[gMASK]": 151331, "<sop>": 151333, "<|system|>": 151335, "<|user|>": 151336,
        "<|assistant|>": 151337, "<|observation|>": 151338, "<|begin_of_image|>": cfg.image_start_token_id,
        "<|end_of_image|>": cfg.image_end_token_id, "<|begin_of_video|>": cfg.video_start_token_id,
        "<|end_of_video|>": cfg.video_end_token_id, "<|image|>": cfg.image_token_id, "<|video|>": cfg.video_token_id}
role = {"<|endoftext|>": "end of text, padding, stop", "[gMASK]": "opens every prompt", "<sop>": "start of piece",
        "<|system|>": "system turn", "<|user|>": "user turn (also a stop id)", "<|assistant|>": "assistant turn",
        "<|observation|>": "tool output (stop id)", "<|begin_of_image|>": "image starts",
        "<|end_of_image|>": "image ends", "<|image|>": "one image feature", "<|begin_of_video|>": "video starts",
        "<|end_of_video|>": "video ends", "<|video|>": "video slot (chat template only)"}
print(f"{'token':20} {'9B id':>7} {'ours':>5}  role")
for t in SPECIAL_TOKENS:
    print(f"{t:20} {real[t]:>7} {tok.token_to_id(t):>5}  {role[t]}")
print("stop ids of the 9B model:", list(cfg.text_config.eos_token_id))
print("not special, but single tokens:", THINKING_TOKENS)

# %% [markdown]
# `[gMASK]` and `<sop>` open every prompt (chapter 03). The model stops when it writes one of the four **stop ids**
# printed above, the `eos_token_id` list of the checkpoint's `config.json`: 151329 `<|endoftext|>`, 151336 `<|user|>`
# (the model opens the next user turn: its answer is over), 151338 `<|observation|>`, and **151348**, which is none of
# the tokens in the table. No public file we could check names it; the official demos stop on `</answer>`, so it is
# most likely that token (docs/glm41v.md §7.2). `<think>`, `</think>`, `<answer>` and `</answer>` are ordinary
# (not special) single tokens.

# %% [markdown]
# ## 2. Rendering a conversation
#
# Messages use transformers' format. The chat template writes `[gMASK]<sop>`, then each turn as
# `<|role|>\n` + content, and (with `add_generation_prompt`) a final `<|assistant|>\n` for the model to continue.
# An image item becomes `<|begin_of_image|><|image|><|end_of_image|>`; text items follow with no separator.

# %%
# NBVAL_CHECK_OUTPUT
cat = load_image("../data/cat.png")
messages = [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "image", "image": cat},
                                         {"type": "text", "text": "What kind of animal is this?"}]}]
prompt = render_chat(messages)
print(repr(prompt))

# %%
# NBVAL_CHECK_OUTPUT
ids = tok.encode(prompt)
print(len(ids), "tokens")
print(" | ".join(repr(tok.decode([i]))[1:-1] for i in ids))
print(ids)

# %% [markdown]
# Each piece above is the *decoded* text of one id. Inside the tokenizer the vocabulary entries look different: a
# **byte-level** BPE first maps every byte to a printable character, so spaces and newlines become visible letters.
# `Ġ` stands for a space (byte 32) and `Ċ` for a newline (byte 10); a word with a space before it is one entry,
# `Ġkind`. That is what `tok.id_to_token` shows, and what a vocabulary listing (chapter 08's, for example) prints:

# %%
# NBVAL_CHECK_OUTPUT
pieces = tok.encode("Answer in one word.\nWhat kind of animal is this?")
print([tok.id_to_token(i) for i in pieces])
print("decoded again:", repr(tok.decode(pieces)))

# %% [markdown]
# ## 3. One image becomes N placeholder tokens
#
# The vision tower returns one feature vector per 2×2 window of 14-pixel patches (chapter 01): the cat becomes a
# 22×32 patch grid, 176 windows. The processor therefore repeats `<|image|>` 176 times; the model later writes the 176
# vision features over exactly those positions.

# %%
# NBVAL_CHECK_OUTPUT
inputs = processor.apply_chat_template(messages)
for k, v in inputs.items():
    print(f"{k:15} {tuple(v.shape)} {v.dtype}")
image_id = tok.token_to_id("<|image|>")
n = int((inputs["input_ids"] == image_id).sum())
print("image_grid_thw", inputs["image_grid_thw"].tolist(), "-> t*h*w/4 =",
      int(inputs["image_grid_thw"].prod()) // 4)
print("<|image|> tokens in input_ids:", n)


def compact(ids):  # runs of the same token shown once with a count
    out, i = [], 0
    while i < len(ids):
        j = i
        while j < len(ids) and ids[j] == ids[i]:
            j += 1
        piece = tok.decode([ids[i]])
        out.append(repr(piece)[1:-1] + (f" ×{j - i}" if j - i > 1 else ""))
        i = j
    return " ".join(out)


print(compact(inputs["input_ids"][0].tolist()))

# %% [markdown]
# The same prompt drawn token by token, coloured by type: the 176 placeholders are most of it.

# %%
KINDS = ["pad", "text", "special token", "<|image|> placeholder"]
COLOURS = ListedColormap(["#dddddd", "#9ecae1", "#fdae6b", "#a1d99b"])
special_ids = torch.tensor([tok.token_to_id(t) for t in SPECIAL_TOKENS if t != "<|image|>"])


def token_kind(ids, mask):
    """0 pad, 1 text, 2 special, 3 image placeholder, per token."""
    kind = torch.where(ids == image_id, 3, torch.where(torch.isin(ids, special_ids), 2, 1))
    return torch.where(mask.bool(), kind, 0)


ids = inputs["input_ids"][0]
kind = token_kind(ids, inputs["attention_mask"][0])
fig, (ax, zoom) = plt.subplots(2, 1, figsize=(10, 2.8), dpi=100, gridspec_kw={"height_ratios": [1, 1.4]})
ax.imshow(kind[None].numpy(), aspect="auto", cmap=COLOURS, vmin=0, vmax=3, interpolation="nearest")
ax.set_yticks([])
ax.set_xlabel("token position")
ax.set_title(f"the whole prompt: {len(ids)} tokens", fontsize=9)
head = list(range(22)) + list(range(len(ids) - 10, len(ids)))     # the first 22 and the last 10 tokens
zoom.imshow(kind[head][None].numpy(), aspect="auto", cmap=COLOURS, vmin=0, vmax=3)
for x, i in enumerate(head):
    zoom.text(x, 0, repr(tok.decode([int(ids[i])]))[1:-1][:9], rotation=90, ha="center", va="center", fontsize=6)
zoom.set_xticks(range(len(head)), head, fontsize=6)
zoom.axvline(21.5, color="k", lw=2)
zoom.set_yticks([])
zoom.set_xlabel("token position (the first 22 and the last 10; the black line hides the rest)")
fig.legend(handles=[Patch(color=COLOURS(k), label=name) for k, name in enumerate(KINDS)][1:], loc="upper right",
           fontsize=7, ncol=3)
fig.tight_layout(rect=(0, 0, 1, 0.93))
plt.show()

# %% [markdown]
# ## 4. A batch: left padding
#
# Several conversations of different lengths become one `(B, L)` tensor by padding on the **left** with
# `<|endoftext|>`, so that every row ends at the same place and generation appends to all rows at once.
# `attention_mask` is 0 on the padding. Images of all rows are concatenated in reading order.

# %%
# NBVAL_CHECK_OUTPUT
coffee = load_image("../data/coffee.png")
batch = processor.apply_chat_template([
    [{"role": "user", "content": "How many shapes are there?"}],
    [{"role": "user", "content": [{"type": "image", "image": coffee},
                                  {"type": "text", "text": "Describe the image."}]}],
])
print("input_ids", tuple(batch["input_ids"].shape), " image_grid_thw", batch["image_grid_thw"].tolist())
print("padding per row:", (batch["attention_mask"] == 0).sum(1).tolist())
print("row 0 starts with", batch["input_ids"][0, :5].tolist(), "mask", batch["attention_mask"][0, :5].tolist())

# %%
kinds = torch.stack([token_kind(r, m) for r, m in zip(batch["input_ids"], batch["attention_mask"])])
fig, ax = plt.subplots(figsize=(10, 1.8), dpi=100)
ax.imshow(kinds.numpy(), aspect="auto", cmap=COLOURS, vmin=0, vmax=3, interpolation="nearest")
ax.set_yticks([0, 1], ["row 0: text only", "row 1: image + text"])
ax.set_xlabel("token position")
ax.set_title("a batch of two: the short row is padded on the left; both end in <|assistant|>\\n", fontsize=9)
ax.legend(handles=[Patch(color=COLOURS(k), label=name) for k, name in enumerate(KINDS)], loc="upper center",
          bbox_to_anchor=(0.5, -0.45), ncol=4, fontsize=7)
plt.show()

# %% [markdown]
# ## 5. Reading the answer: thinking and answer
#
# GLM-4.1V-**Thinking** answers as `<think>reasoning</think><answer>final answer</answer>`. `<think>` and `<answer>`
# are single tokens but not *special*, so they survive `skip_special_tokens`. `split_thinking` separates the two
# parts; only the answer should go back into a multi-turn history.

# %%
# NBVAL_CHECK_OUTPUT
reply = "<think>\nThe animal has whiskers, pointed ears and green eyes.\n</think>\n<answer>A cat.</answer>"
ids = tok.encode(reply)
print(len(ids), "tokens;", "<think> is one token:", tok.token_to_id("<think>") in ids)
thinking, answer = split_thinking(tok.decode(ids, skip_special_tokens=True))
print("thinking:", thinking)
print("answer:  ", answer)

# %% [markdown]
# Test this chapter's code (rendering by hand, ids and pixel values against transformers' `Glm4vProcessor`):
#
# ```
# pytest tests/test_ch05_processor.py
# ```
