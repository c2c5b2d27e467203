"""The teaching set of chapter 11: TinyVQA questions the shipped tiny model (data/tiny-glm4v) was never asked.

Run from the repository root:  python data/make_lora_data.py --out /tmp/tinyvqa-plus [--n 4000 --seed 0]
It writes the scenes as PNG files and `train.jsonl`, one {"messages": [...]} conversation per line, the input of
`python -m minglm4v.finetune`. Kinds of question (the scenes are TinyVQA's, minglm4v/tinyvqa.py):

    paraphrase   the colour question in other words: "What color is the square?", "What is the colour of the
                 circle?", "Which color is the triangle?" ... (FORMS)
    the shape    "What colour is the shape?" (any form) about a scene with exactly one shape
    count5       "How many shapes are there?" about 1 to 5 shapes (the model was trained on 1 to 3): a new skill
    old          a plain TinyVQA question (tinyvqa.image_example), replayed so that the old skills stay

Everything is drawn from one seeded numpy Generator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from minglm4v import tinyvqa  # noqa: E402

FORMS = ("What color is the {s}?", "What is the colour of the {s}?", "What is the color of the {s}?",
         "Which colour is the {s}?", "Which color is the {s}?")
NEW_KINDS = ("paraphrase", "the shape", "count5")
MIX = {"paraphrase": 0.2, "the shape": 0.15, "count5": 0.25, "old": 0.4}  # share of each kind in training


def example(rng: np.random.Generator, kind: str) -> tinyvqa.Example:
    """One question of a kind above (TinyVQA's scenes: shapes in the cells of a 3 x 3 grid)."""
    background = int(rng.integers(150, 236))
    if kind == "old":
        return tinyvqa.image_example(rng)
    if kind == "count5":
        things = tinyvqa._place_grid(rng, int(rng.integers(1, 6)))
        return tinyvqa.Example(kind, "How many shapes are there?", str(len(things)), things,
                         image=tinyvqa.draw(things, background))
    if kind not in NEW_KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {NEW_KINDS + ('old',)}")
    while True:
        things = tinyvqa._place_grid(rng, 1 if kind == "the shape" else int(rng.integers(1, 4)))
        unique = [t for t in things if sum(o.shape == t.shape for o in things) == 1]
        if unique:
            break
    t = unique[rng.integers(len(unique))]
    forms = FORMS + ("What colour is the {s}?",) if kind == "the shape" else FORMS
    question = forms[rng.integers(len(forms))].format(s="shape" if kind == "the shape" else t.shape)
    return tinyvqa.Example(kind, question, t.colour, things, image=tinyvqa.draw(things, background))


def mixed(rng: np.random.Generator, n: int) -> list[tinyvqa.Example]:
    """n training examples, kinds drawn with the shares in MIX."""
    kinds, p = list(MIX), np.array(list(MIX.values()))
    return [example(rng, kinds[rng.choice(len(kinds), p=p / p.sum())]) for _ in range(n)]


def held_out(seed: int = 7, per_kind: int = 60) -> list[tinyvqa.Example]:
    """Seeded questions of the new kinds, `per_kind` each (seeds differ from training's, so the scenes are new)."""
    rng = np.random.default_rng(seed)
    return [example(rng, kind) for kind in NEW_KINDS for _ in range(per_kind)]


def write(folder: Path, n: int, seed: int) -> Path:
    """PNG scenes and train.jsonl (image paths relative to the folder) for n mixed examples."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i, e in enumerate(mixed(rng, n)):
        name = f"images/{i:05d}.png"
        e.image.save(folder / name)
        conv = e.conversation(with_answer=True)
        conv[0]["content"][0] = {"type": "image", "image": name}
        lines.append(json.dumps({"messages": conv}))
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for images/ and train.jsonl")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write(Path(args.out), args.n, args.seed))
