"""TinyVQA with a model: answer its questions greedily, score them per kind, and read the decoder's attention.

`answer(image, question)` answers one question with the shipped checkpoint (`tinyvqa.CHECKPOINT`); `accuracy`
scores a list of `tinyvqa.Example`s; `answer_attention` recomputes where the last prompt position looks.
Shapes: B batch, L sequence, H heads, Hkv key/value heads, D head dim.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import TaskError
from .tinyvqa import CHECKPOINT, Example


@functools.lru_cache(maxsize=2)
def load(folder: str | Path = CHECKPOINT):
    """(model, processor) of a TinyVQA checkpoint folder (the shipped one by default), cached."""
    from .processor import load_processor
    from .weights import load as load_model

    return load_model(folder), load_processor(folder)


@torch.no_grad()
def answer_batch(model, processor, exs_or_convs, max_new_tokens: int = 4) -> list[str]:
    """Greedy answers (text, special tokens dropped) for Examples or chat conversations, as one batch."""
    convs = [e.conversation() if isinstance(e, Example) else e for e in exs_or_convs]
    inputs = processor.apply_chat_template(convs)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, inputs["input_ids"].shape[1]:]
    return [processor.decode(row, skip_special_tokens=True).strip() for row in new]


def answer(image, question: str, folder: str | Path = CHECKPOINT, max_new_tokens: int = 4) -> str:
    """Answer one question about one image (a PIL image, an HxWx3 uint8 array or a file path) with the tiny model."""
    if not isinstance(question, str) or not question.strip():
        raise TaskError("the question must be a non-empty string")
    model, processor = load(str(folder))
    conv = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    return answer_batch(model, processor, [conv], max_new_tokens)[0]


@torch.no_grad()
def answer_attention(model, inputs: dict) -> torch.Tensor:
    """Decoder attention of the last prompt position (the one that predicts the first answer token), per layer and
    head, over all positions: (layers, B, H, L). Recomputed from each layer's q and k with forward pre-hooks (the
    decoder itself calls scaled_dot_product_attention, which never materialises the weights):

        a = softmax(q_last k^T / sqrt(D))  over the real (unpadded) positions
    """
    from .mrope import apply_mrope

    rows = []

    def hook(attn, args):
        x, cos, sin = args[:3]  # (B, L, C), (B, L, R), (B, L, R)
        B, L, _ = x.shape
        H, Hkv, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q = attn.q_proj(x[:, -1:]).view(B, 1, H, D).transpose(1, 2)  # (B, H, 1, D)
        k = attn.k_proj(x).view(B, L, Hkv, D).transpose(1, 2)  # (B, Hkv, L, D)
        q, k = apply_mrope(q, cos[:, -1:], sin[:, -1:]), apply_mrope(k, cos, sin)
        k = k.repeat_interleave(H // Hkv, dim=1)  # (B, H, L, D)
        scores = (q @ k.transpose(-1, -2))[:, :, 0] / D**0.5  # (B, H, L)
        if "attention_mask" in inputs:
            scores = scores.masked_fill(~inputs["attention_mask"].bool()[:, None], float("-inf"))
        rows.append(scores.softmax(-1))

    handles = [layer.self_attn.register_forward_pre_hook(hook) for layer in model.language_model.layers]
    try:
        model(**{k: v for k, v in inputs.items() if k != "labels"})
    finally:
        for h in handles:
            h.remove()
    return torch.stack(rows)  # (layers, B, H, L)


def accuracy(model, processor, exs: Sequence[Example], batch_size: int = 50) -> dict[str, float]:
    """Fraction of exact answers per kind, and 'all', with greedy decoding."""
    right: dict[str, list[bool]] = {}
    for group in ([e for e in exs if e.image is not None], [e for e in exs if e.image is None]):  # never mixed
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            for e, got in zip(chunk, answer_batch(model, processor, chunk)):
                right.setdefault(e.kind, []).append(got == e.answer)
    out = {k: float(np.mean(v)) for k, v in right.items()}
    out["all"] = float(np.mean([x for v in right.values() for x in v]))
    return out
