"""Train a tiny GLM-4.1V on TinyVQA (tinyvqa.py) on the CPU, and save it as a checkpoint folder.

    python -m minglm4v.train --out data/tiny-glm4v --overwrite    # the shipped checkpoint (about 15 min on 2 cores)
    python -m minglm4v.train                                      # writes ./tiny-glm4v in the current directory

An existing checkpoint at --out is never overwritten without --overwrite (checked before training starts).

The model is `Glm4vForConditionalGeneration` from model.py, unchanged, at a small size (`tiny_vqa_config`). Training
is plain next-token prediction restricted to the answer:

    logits = model(prompt + answer + <|user|>)                                   (B, L, V)
    loss   = mean over answer positions of  -log softmax(logits[b, i])[token i+1]   (prompt and padding masked)

with AdamW, a linear warm-up and a cosine decay over a fixed number of steps, and a fresh batch of seeded examples
at every step (the task generator never runs out). Everything is seeded, so the same command gives the same loss
curve on the same machine and torch version.

The folder written has the published layout (docs/glm41v.md §8): config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, chat_template.jinja, preprocessor_config.json,
video_preprocessor_config.json; transformers' `from_pretrained` reads it too.
Shapes: B batch, L sequence, V vocabulary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import tinyvqa, tinyvqa_eval
from .config import TINY_SPECIAL_IDS, Glm4vConfig, TextConfig, VisionConfig
from .processor import ImageProcessorConfig, Processor, VideoProcessorConfig
from .tokenizer import train_tokenizer
from .weights import build, save

# The chat template shipped with the checkpoint: GLM-4.1V's format (chat.render_chat), written out in jinja.
CHAT_TEMPLATE = """\
{{- '[gMASK]<sop>' -}}
{%- for m in messages -%}
  {%- if m.content is string -%}{%- set items = [{'type': 'text', 'text': m.content}] -%}
  {%- else -%}{%- set items = m.content -%}{%- endif -%}
  {%- if m.role == 'system' -%}{{- '<|system|>\\n' -}}
  {%- elif m.role == 'user' -%}{{- '<|user|>\\n' -}}
  {%- else -%}{{- '<|assistant|>' ~ (m.metadata or '') ~ '\\n' -}}{%- endif -%}
  {%- for it in items -%}
    {%- if it.type == 'video' or 'video' in it -%}{{- '<|begin_of_video|><|video|><|end_of_video|>' -}}
    {%- elif it.type == 'image' or 'image' in it -%}{{- '<|begin_of_image|><|image|><|end_of_image|>' -}}
    {%- else -%}{{- it.text -}}{%- endif -%}
  {%- endfor -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}
"""

# Any image is scaled to about 84 x 84 px (9 tokens), the size the model was trained on: "longest_edge" is a pixel
# budget of 2 frames x 84 x 84 (docs/glm41v.md §2.1); "shortest_edge" keeps the published 12544.
IMAGE_SETTINGS = ImageProcessorConfig(max_pixels=2 * tinyvqa.SIZE * tinyvqa.SIZE)
# Videos: all sampled frames share one pixel budget (docs/glm41v.md §3.2); 4 frames of 84 x 84 px fit it exactly, so a
# longer clip gets smaller frames instead of hundreds of tokens the model never saw in training.
VIDEO_SETTINGS = dataclasses.replace(VideoProcessorConfig.matching(IMAGE_SETTINGS),
                                     max_pixels=tinyvqa.VIDEO_FRAMES * tinyvqa.SIZE * tinyvqa.SIZE)


def tiny_vqa_config(vocab_size: int) -> Glm4vConfig:
    """GLM-4.1V's architecture at ~1.1 M parameters; special ids as `tokenizer.train_tokenizer` places them."""
    text = TextConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      partial_rotary_factor=0.5, mrope_section=(2, 3, 3), pad_token_id=0, eos_token_id=(0, 1),
                      dtype="float32")
    vision = VisionConfig(depth=2, hidden_size=96, num_heads=4, intermediate_size=256, out_hidden_size=128,
                          image_size=tinyvqa.SIZE)
    return Glm4vConfig(text_config=text, vision_config=vision, **TINY_SPECIAL_IDS)


def make_processor() -> Processor:
    """The TinyVQA tokenizer (a byte-level BPE trained on the task's words) with the shipped settings.

    It renders prompts with chat.render_chat (quicker than jinja, and the same text as CHAT_TEMPLATE, which
    `save_checkpoint` writes beside it)."""
    return Processor(train_tokenizer(tinyvqa.corpus(), vocab_size=400), IMAGE_SETTINGS, video_config=VIDEO_SETTINGS)


def init_weights(model, seed: int) -> None:
    """Scale-preserving initialisation: weights ~ N(0, 1/fan_in), zero biases, unit norms, token embeddings ~ N(0, 1)
    and the vision position table ~ N(0, 0.5^2).

    Why not transformers' N(0, 0.02) everywhere: with GLM's sandwich norms every sub-block adds a unit-RMS vector to
    the residual stream, so embeddings of RMS 0.02 (and vision features of RMS ~0.003 after the merger's SwiGLU)
    are drowned in the first layer, and the tiny model learns the answer priors long before it learns to look."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            else:  # (out, in, ...) linear and conv weights
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))


def loss_fn(model, inputs: dict) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens (labels != -100)."""
    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"})  # (B, L, V)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def aux_loss(head: torch.nn.Linear, feats: torch.Tensor, exs) -> torch.Tensor:
    """The vision tower's auxiliary loss: from each image token's features, a linear `head` (thrown away after
    training, not part of the model) predicts which of the 12 objects sits in the token's cell, or none
    (cross-entropy), and where its centre is (squared error). feats (B * 9, C): the vision tower's output."""
    label, centre = zip(*(tinyvqa.cell_targets(e.things) for e in exs))
    label, centre = torch.cat(label), torch.cat(centre)  # (B*9,), (B*9, 2)
    out = head(feats)  # (B*9, 13 + 2)
    k = len(tinyvqa.PAIRS) + 1
    full = label < len(tinyvqa.PAIRS)
    err = (out[:, k:] - centre).pow(2).sum(-1)  # (B*9,)
    return F.cross_entropy(out[:, :k], label) + 10 * (err * full).sum() / full.sum().clamp(min=1)


def train(steps: int = 6000, batch_size: int = 32, lr: float = 1e-3, seed: int = 0, video_every: int = 8,
          aux_weight: float = 1.0, minutes: float | None = None, log_every: int = 100, eval_examples=None,
          processor: Processor | None = None, model=None, printer=print) -> tuple:
    """Train; returns (model, processor, history) with history = [(step, loss), ...] (one entry per step; the
    answer loss, without the auxiliary term).

    A step draws `batch_size` fresh questions from a Generator seeded with `seed`. With `video_every` = k > 0 every
    k-th step is a batch of motion videos. On image steps the vision tower also gets `aux_weight` x `aux_loss` (what
    is in each image cell), which teaches it to see long before the answers alone would. `minutes` stops early
    (the schedule still assumes `steps`)."""
    torch.manual_seed(seed)
    processor = processor or make_processor()
    if model is None:
        config = tiny_vqa_config(vocab_size=64 * math.ceil(processor.tokenizer.vocab_size / 64))
        model = build(config, "cpu")
        init_weights(model, seed)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    head = torch.nn.Linear(model.config.vision_config.out_hidden_size, len(tinyvqa.PAIRS) + 3)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=lr, betas=(0.9, 0.98),
                            weight_decay=0.01)
    feats = {}
    hook = model.visual.register_forward_hook(lambda m, args, out: feats.__setitem__("out", out))
    rng = np.random.default_rng(seed)
    history, start, warmup = [], time.perf_counter(), max(1, steps // 30)
    try:
        for step in range(steps):
            video = video_every > 0 and step % video_every == video_every - 1
            exs = [tinyvqa.video_example(rng) if video else tinyvqa.image_example(rng) for _ in range(batch_size)]
            inputs = tinyvqa.batch(processor, exs)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup)
            loss = loss_fn(model, inputs)
            total = loss if video or not aux_weight else loss + aux_weight * aux_loss(head, feats["out"], exs)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            history.append((step, loss.item()))
            elapsed = time.perf_counter() - start
            if log_every and (step % log_every == 0 or step == steps - 1):
                recent = np.mean([loss for _, loss in history[-log_every:]])
                line = f"step {step:5d}  loss {recent:.4f}  lr {lr_at(step, steps, lr, warmup):.2e}  {elapsed:6.0f} s"
                if eval_examples is not None and step > 0 and (step % (log_every * EVAL_EVERY) == 0
                                                               or step == steps - 1):
                    model.eval()
                    acc = tinyvqa_eval.accuracy(model, processor, eval_examples)
                    model.train()
                    line += "  held-out " + " ".join(f"{k} {v:.2f}" for k, v in acc.items())
                printer(line)
            if minutes is not None and elapsed > 60 * minutes:
                printer(f"stopping at step {step}: the {minutes} min budget is spent")
                break
    finally:
        hook.remove()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, processor, history


def save_checkpoint(model, processor: Processor, folder: str | Path, log: dict | None = None) -> list[Path]:
    """Weights, config, tokenizer, chat template, preprocessor configs and generation_config.json; `log` (the
    training settings, loss history and timing) goes to training_log.json beside them."""
    folder = Path(folder)
    written = save(model, folder)
    processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    t = model.config.text_config
    gen = {"eos_token_id": list(t.eos_token_id), "pad_token_id": t.pad_token_id, "do_sample": False,
           "max_new_tokens": 4}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if log is not None:
        (folder / "training_log.json").write_text(json.dumps(log) + "\n")
    return written + sorted(p for p in folder.iterdir() if p not in written)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minglm4v.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"checkpoint folder to write (default: ./{DEFAULT_OUT} in the current directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint already at --out")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video-every", type=int, default=8, help="every k-th step trains on motion videos")
    parser.add_argument("--aux-weight", type=float, default=1.0, help="weight of the vision auxiliary loss")
    parser.add_argument("--minutes", type=float, default=None, help="stop early after this many minutes")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is quickest for this small model on a busy CPU)")
    args = parser.parse_args(argv)
    existing = existing_checkpoint(Path(args.out))
    if existing and not args.overwrite:  # one line, exit 2, before 15 minutes of training
        print(f"error: --out {args.out} already holds a checkpoint ({existing}); pass --overwrite to replace it, "
              "or choose another folder", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    kinds = tinyvqa.IMAGE_KINDS + (tinyvqa.VIDEO_KINDS if args.video_every else ())
    held_out = tinyvqa.examples(HELD_OUT_SEED, 140, kinds)
    t0 = time.perf_counter()
    model, processor, history = train(args.steps, args.batch_size, args.lr, args.seed, args.video_every,
                                      args.aux_weight, args.minutes, eval_examples=held_out,
                                      printer=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    kinds = tinyvqa.IMAGE_KINDS + (tinyvqa.VIDEO_KINDS if args.video_every else ())
    acc = tinyvqa_eval.accuracy(model, processor, tinyvqa.examples(TEST_SEED, 50 * len(kinds), kinds))
    print("test accuracy " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "overwrite")}
    log = {"command": "python -m minglm4v.train " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                               settings.items() if v is not None),
           "wall_minutes": round(wall / 60, 2), "torch": torch.__version__, "test_accuracy": acc,
           "history": [[s, round(loss, 5)] for s, loss in history]}
    files = save_checkpoint(model, processor, args.out, log)
    size = sum(f.stat().st_size for f in files if f.is_file())
    print(f"trained in {wall / 60:.1f} min; wrote {len(files)} files to {args.out} ({size / 1e6:.1f} MB)")
    return 0


def existing_checkpoint(folder: Path) -> str | None:
    """The name of a checkpoint file already in `folder` (config.json or a model*.safetensors), or None."""
    if folder.exists() and not folder.is_dir():
        return f"{folder.name} is a file, not a folder"
    found = sorted(p.name for p in folder.glob("model*.safetensors*")) if folder.is_dir() else []
    if (folder / "config.json").is_file():
        found.insert(0, "config.json")
    return ", ".join(found) or None


DEFAULT_OUT = "tiny-glm4v"  # relative: a folder in the current directory, never inside the installed package
EVAL_EVERY = 10  # evaluate on the held-out questions every EVAL_EVERY log lines
HELD_OUT_SEED = 1_000_001  # shown during training
TEST_SEED = 2_000_002  # the test set of tests/test_ch08_tinyvqa.py and the final report

if __name__ == "__main__":
    sys.exit(main())
