"""Fine-tuning data: a JSONL file of conversations, checked line by line, and batches with answer-only labels.

One JSON object per line, `{"messages": [...]}`, in the conversation format the processor takes (transformers'
format, processor.apply_chat_template):

    {"messages": [{"role": "user", "content": [{"type": "image", "image": "shapes/0001.png"},
                                               {"type": "text", "text": "What color is the shape?"}]},
                  {"role": "assistant", "content": "red"}]}

Relative image and video paths are read relative to the data file's folder. A malformed line raises DatasetError
with its line number and what is wrong. `batch` labels the assistant turns only: each answer and the role token
that ends it (a stop id, so generation stops there); the prompt, pictures and padding get -100.
Shapes: B batch, L sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import chat
from .errors import DatasetError, MinGlmError
from .paths import local_path

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
STOP = "<|user|>"  # appended after the last answer: the token that opens the next turn, one of GLM-4.1V's stop ids

def parse_line(text: str, where: str, root: Path) -> list[dict]:
    """One JSONL line -> its messages, checked; relative media paths resolved against `root`."""
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise DatasetError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or "messages" not in obj:
        raise DatasetError(f"{where}: each line must be a JSON object with a 'messages' list, got "
                           f"{type(obj).__name__}{' without messages' if isinstance(obj, dict) else ''}")
    messages = obj["messages"]
    try:
        chat.check_messages(messages)
    except MinGlmError as e:
        raise DatasetError(f"{where}: {e}") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise DatasetError(f"{where}: no assistant turn, so nothing to learn; add the answer as "
                           "{'role': 'assistant', 'content': ...}")
    if messages[0]["role"] == "assistant":
        raise DatasetError(f"{where}: the conversation starts with the assistant; it must open with a user turn")
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not (isinstance(m["content"], str) and m["content"].strip()):
            raise DatasetError(f"{where}: message {i} (assistant) must have non-empty text content")
        if isinstance(m["content"], list):
            m["content"] = [_resolve(item, f"{where}: message {i}", root) for item in m["content"]]
    return messages


def _resolve(item: dict, where: str, root: Path) -> dict:
    kind = chat.item_kind(item)
    if kind not in ("image", "video"):
        return item
    key = kind if kind in item else "path"
    value = item.get(key)
    if isinstance(value, list) and kind == "video":  # a video given as a list of frame paths
        return {**item, key: [_file(v, f"{where} video frame", root) for v in value]}
    return {**item, key: _file(value, f"{where} {kind}", root)}


def _file(value, what: str, root: Path) -> str:
    path = local_path(value, what, DatasetError)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DatasetError(f"{what} {value!r}: no such file ({path}); paths are relative to the data file's folder")
    return str(path)


def read_jsonl(path) -> list[list[dict]]:
    """Every conversation in a JSONL file (one {"messages": [...]} per line), each line checked."""
    path = local_path(path, "data file", DatasetError)
    if not path.is_file():
        raise DatasetError(f"data file {path} not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start})") from None
    convs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DatasetError(f"{path}, line {n}: an empty line; every line must hold one conversation")
        convs.append(parse_line(line, f"{path}, line {n}", path.parent))
    if not convs:
        raise DatasetError(f"{path} holds no conversations")
    return convs


def split(convs: Sequence, held_out: float, seed: int = 0) -> tuple[list, list]:
    """(train, held-out): a seeded shuffle, then the last round(held_out * n) (at least one when held_out > 0)."""
    if not 0.0 <= held_out < 1.0:
        raise DatasetError(f"held-out fraction must be in [0, 1), got {held_out}")
    order = np.random.default_rng(seed).permutation(len(convs))
    k = 0 if held_out == 0 else max(1, round(held_out * len(convs)))
    if len(convs) - k < 1:
        raise DatasetError(f"{len(convs)} conversations leave none to train on after holding {k} out")
    return [convs[i] for i in order[:len(convs) - k]], [convs[i] for i in order[len(convs) - k:]]


def batch(processor, convs: Sequence[list[dict]]) -> dict:
    """Model inputs for conversations with their answers, left-padded, plus `labels` (B, L): the token each position
    must predict inside assistant turns (the answer and the role token that ends it), -100 elsewhere."""
    inputs = processor.apply_chat_template(list(convs), add_generation_prompt=False)
    tok = processor.tokenizer
    roles = {tok.token_to_id(t) for t in ROLE_TOKENS}
    assistant, stop, newline = tok.token_to_id("<|assistant|>"), tok.token_to_id(STOP), tok.encode("\n")
    rows, targets = [], []
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
        row = ids[mask.bool()].tolist() + [stop]
        target, inside = [-100] * len(row), False
        for i in range(len(row) - 1):  # position i predicts row[i + 1]
            if row[i] == assistant:
                inside = row[i + 1:i + 1 + len(newline)] == newline
                skip = len(newline)  # the "\n" after the role token is part of the prompt
                continue
            if inside and skip > 1:
                skip -= 1
                continue
            if inside:
                target[i] = row[i + 1]
                inside = row[i + 1] not in roles
        rows.append(row)
        targets.append(target)
    L = max(len(r) for r in rows)
    out = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    out["input_ids"] = torch.full((len(rows), L), processor.pad_token_id, dtype=torch.long)  # (B, L)
    out["attention_mask"] = torch.zeros((len(rows), L), dtype=torch.long)  # (B, L)
    out["labels"] = torch.full((len(rows), L), -100, dtype=torch.long)  # (B, L)
    for b, (r, t) in enumerate(zip(rows, targets)):
        out["input_ids"][b, L - len(r):], out["attention_mask"][b, L - len(r):] = torch.tensor(r), 1
        out["labels"][b, L - len(r):] = torch.tensor(t)
    if "mm_token_type_ids" in inputs:  # the rows grew by their stop token: count the types again
        out["mm_token_type_ids"] = torch.tensor([[0] * (L - len(r)) + processor.mm_token_type_ids(r) for r in rows],
                                                dtype=torch.long)  # (B, L)
    return out
