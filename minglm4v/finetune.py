"""Fine-tune a GLM-4.1V checkpoint with LoRA on a user's own conversations, and save PEFT-format adapters.

    python -m minglm4v.finetune --model DIR --data FILE.jsonl --out DIR [--steps 300 --rank 8 ...]

The data file holds one JSON object per line, `{"messages": [...]}`, in the processor's conversation format
(finetune_data.py). Every line is checked before training starts; a malformed one stops the run with its line
number and what is wrong (DatasetError).

The loss is next-token cross-entropy on the assistant turns only (each answer and the role token that ends it,
which is a stop id, so generation stops there); the prompt, pictures and padding are masked out:

    loss = mean over assistant positions i of  -log softmax(logits[b, i])[token i+1]        logits (B, L, V)

A fraction of the lines (`--held-out`) is kept out of training; its loss is reported at every checkpoint. The base
stays frozen (lora.py); adapters are written to `--out` (and `--out/checkpoint-<step>` every `--checkpoint-every`
steps) as adapter_config.json + adapter_model.safetensors, which `adapters.load_adapter` and PEFT both read.
`checkpoint_layers(model)` turns on gradient checkpointing.
Shapes: B batch, L sequence, V vocabulary.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .adapters import save_adapter
from .errors import DatasetError, MinGlmError
from .finetune_data import batch, read_jsonl, split
from .lora import LoraConfig, add_lora, parameter_counts, trainable
from .paths import local_path


def loss_of(model, inputs: dict) -> torch.Tensor:
    labels = inputs["labels"]
    logits = model(**{k: v for k, v in inputs.items() if k != "labels"})  # (B, L, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)


# ---------------------------------------------------------------------------------------------- training

def checkpoint_layers(model) -> int:
    """Gradient checkpointing: each decoder layer keeps only its input during the forward pass and recomputes its
    activations in the backward pass (torch.utils.checkpoint), so activation memory is one (B, L, C) tensor per
    layer plus one layer's working set, for about one more forward pass of compute. Returns the layers wrapped."""
    from torch.utils.checkpoint import checkpoint

    layers = model.language_model.layers
    for layer in layers:
        if getattr(layer, "checkpointed", False):
            continue
        plain = layer.forward

        def forward(*args, _plain=plain, **kwargs):
            if torch.is_grad_enabled() and kwargs.get("cache", args[4] if len(args) > 4 else None) is None:
                return checkpoint(_plain, *args, use_reentrant=False, **kwargs)
            return _plain(*args, **kwargs)

        layer.forward, layer.checkpointed = forward, True
    return len(layers)


@dataclass
class History:
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # training loss per step
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    seconds: float = 0.0


class Progress:
    """One status line on stderr (step, loss, ETA), rewritten in place; silent when stderr is not a terminal or
    when `quiet`."""

    def __init__(self, total: int, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.on = total, not quiet and self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, loss: float, extra: str = "") -> None:
        if not self.on:
            return
        done = step + 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        self.stream.write(f"\rstep {done}/{self.total}  loss {loss:.4f}  {elapsed:.0f} s, ETA {eta:.0f} s{extra}  ")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.stream.write("\n")


@torch.no_grad()
def held_out_loss(model, processor, convs, batch_size: int) -> float:
    model.eval()
    total = weight = 0.0
    for i in range(0, len(convs), batch_size):
        inputs = batch(processor, convs[i:i + batch_size])
        n = int((inputs["labels"] != -100).sum())
        total += loss_of(model, inputs).item() * n
        weight += n
    return total / weight


def finetune(model, processor, train: Sequence[list[dict]], held_out: Sequence[list[dict]] = (),
             config: LoraConfig = LoraConfig(), steps: int = 300, batch_size: int = 16, lr: float = 2e-3,
             seed: int = 0, out: str | Path | None = None, checkpoint_every: int = 0, quiet: bool = False,
             sample: Callable[[np.random.Generator, int], Sequence[list[dict]]] | None = None) -> History:
    """Add LoRA to `model` (base frozen) and train it on `train` for `steps` AdamW steps (cosine decay, 5% warm-up),
    batches drawn with a Generator seeded by `seed`. `sample(rng, batch_size)`, when given, draws each batch instead
    (a generator of fresh examples). Adapters go to `out` (and `out/checkpoint-<step>`) when `out` is given."""
    if steps < 1 or batch_size < 1:
        raise DatasetError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not train and sample is None:
        raise DatasetError("no training conversations")
    torch.manual_seed(seed)
    add_lora(model, config, seed=seed)
    params = trainable(model)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    history, progress, warmup = History(), Progress(steps, quiet), max(1, steps // 20)
    start = time.perf_counter()
    for step in range(steps):
        model.train()
        convs = sample(rng, batch_size) if sample else [train[i] for i in rng.integers(len(train), size=batch_size)]
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                                                                              max(1, steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        loss = loss_of(model, batch(processor, convs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.steps.append(step)
        history.loss.append(loss.item())
        last = step == steps - 1
        extra = ""
        if held_out and (last or (checkpoint_every and (step + 1) % checkpoint_every == 0)):
            history.held_out.append((step + 1, held_out_loss(model, processor, held_out, batch_size)))
            extra = f"  held-out {history.held_out[-1][1]:.4f}"
        if out is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and not last:
            save_adapter(model, Path(out) / f"checkpoint-{step + 1}")
        progress.update(step, float(np.mean(history.loss[-20:])), extra)
    progress.close()
    model.eval()
    history.seconds = time.perf_counter() - start
    if out is not None:
        save_adapter(model, out)
        log = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "r": config.r,
               "alpha": config.alpha, "dropout": config.dropout, "targets": list(config.targets),
               "vision": config.vision, "merger": config.merger, "train_conversations": len(train),
               "held_out_conversations": len(held_out), "seconds": round(history.seconds, 1),
               "loss": [round(x, 5) for x in history.loss], "held_out_loss": history.held_out,
               "trainable_parameters": parameter_counts(model)[0], "torch": torch.__version__}
        (Path(out) / "training_log.json").write_text(json.dumps(log) + "\n")
    return history


def main(argv=None) -> int:
    from .errors import CliError
    from .processor import load_processor
    from .weights import load

    p = argparse.ArgumentParser(prog="python -m minglm4v.finetune", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint folder (config.json, weights, tokenizer, processor)")
    p.add_argument("--data", required=True, help='JSONL file, one {"messages": [...]} per line')
    p.add_argument("--out", required=True, help="folder for the adapter (must not hold one already)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--vision", action="store_true", help="also adapt the vision blocks")
    p.add_argument("--merger", action="store_true", help="also adapt the vision merger")
    p.add_argument("--held-out", type=float, default=0.1, help="fraction of the lines kept out of training")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    try:
        out = local_path(args.out, "--out", CliError)
        if (out / "adapter_config.json").exists():
            raise CliError(f"{out} already holds an adapter; choose a new --out folder (nothing is overwritten)")
        if args.threads:
            torch.set_num_threads(args.threads)
        convs = read_jsonl(args.data)
        train, held = split(convs, args.held_out, args.seed)
        model, processor = load(args.model), load_processor(args.model)
        config = LoraConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout, vision=args.vision,
                            merger=args.merger)
        hist = finetune(model, processor, train, held, config, args.steps, args.batch_size, args.lr, args.seed,
                        out, args.checkpoint_every, args.quiet)
    except MinGlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trained, total = parameter_counts(model)
    line = f"trained {trained:,} of {total:,} parameters ({100 * trained / total:.2f}%) in {hist.seconds:.0f} s"
    line += f"; final loss {np.mean(hist.loss[-20:]):.4f}"
    if hist.held_out:
        line += f", held-out {hist.held_out[-1][1]:.4f}"
    print(f"{line}; adapter in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
