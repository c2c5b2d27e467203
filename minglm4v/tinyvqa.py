"""TinyVQA: a seeded synthetic visual question-answering task, and the tiny GLM-4.1V trained on it.

Scenes are 1-3 coloured shapes (all 21 px across) on a grey background, drawn with PIL at 84 x 84 px: a 6 x 6 patch
grid, 9 image tokens after the 2 x 2 merge. Each shape sits in its own cell of the 3 x 3 grid of image tokens (28 x 28
px, centre jittered by +-3 px), so one token sees one whole object; that is what lets a million-parameter model learn
the task in minutes on a CPU (with shapes placed anywhere it had not got past 60% after 3000 steps). In the videos
the shape moves freely. Each example asks one short question with a one-word answer:

    kind        question                                                answer
    count       How many shapes are there?                              1 / 2 / 3
    colour      What colour is the circle?                              red / green / blue / yellow
    shape       What shape is the blue object?                          circle / square / triangle
    exists      Is there a red square?                                  yes / no
    leftright   Is the red circle left or right of the centre?          left / right
    abovebelow  Is the red circle above or below the centre?            above / below
    motion      Which way does the red circle move? (a 4-frame video)   left / right / up / down

The model's target is `answer<|user|>`: the answer, then the token that opens the next user turn, which is one of
GLM-4.1V's stop ids, so greedy generation stops right there. Everything is drawn from a `numpy` Generator, so a seed
fixes the data exactly (`examples(seed, n)`).

`CHECKPOINT` is the shipped checkpoint trained on it (`data/tiny-glm4v/`); answering and scoring with a model live in
`tinyvqa_eval.py`.
Shapes: B batch, L sequence, N patch rows, T frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .errors import TaskError
from .resources import CHECKPOINT_NAME, data_dir

CHECKPOINT = data_dir() / CHECKPOINT_NAME  # the shipped checkpoint, in a checkout or an installed wheel
SIZE = 84  # image side in pixels: 6 x 6 patches of 14 px, 3 x 3 = 9 image tokens
COLOURS = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 215), "yellow": (230, 195, 30)}
SHAPES = ("circle", "square", "triangle")
PAIRS = [(c, s) for c in COLOURS for s in SHAPES]  # the 12 kinds of object
IMAGE_KINDS = ("count", "colour", "shape", "exists", "leftright", "abovebelow")
VIDEO_KINDS = ("motion",)
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
VIDEO_FRAMES, VIDEO_FPS = 4, 2.0  # 4 frames at 2 fps: two temporal patches (timestamps 0 s and 1 s)
STOP = "<|user|>"  # ends every answer; a stop id of the model
GRID, JITTER = 3, 3  # image scenes: objects sit in the cells of a 3 x 3 grid (one image token each), +-3 px
RADIUS = 10  # px: every shape spans 21 x 21 px (all the same size, so "how much colour" tells the shapes apart too)
GAP = 10  # px: left/right (above/below) is asked only of a shape whose centre is this far off the centre line


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    x: int  # centre, px
    y: int
    r: int  # half side / radius, px

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Example:
    kind: str
    question: str
    answer: str
    things: list[Thing]
    image: Image.Image | None = None  # an image question
    frames: list[Image.Image] = field(default_factory=list)  # a video question: VIDEO_FRAMES frames at VIDEO_FPS

    def conversation(self, with_answer: bool = False) -> list[dict]:
        """The chat messages (transformers' format) of this question; with the answer as an assistant turn."""
        media = ({"type": "image", "image": self.image} if self.image is not None else
                 {"type": "video", "video": self.frames, "fps": VIDEO_FPS})
        conv = [{"role": "user", "content": [media, {"type": "text", "text": self.question}]}]
        if with_answer:
            conv.append({"role": "assistant", "content": self.answer})
        return conv


# ---------------------------------------------------------------------- drawing

def draw(things: Sequence[Thing], background: int, size: int = SIZE) -> Image.Image:
    """An RGB image of the shapes on a grey background."""
    im = Image.new("RGB", (size, size), (background,) * 3)
    d = ImageDraw.Draw(im)
    for t in things:
        box = (t.x - t.r, t.y - t.r, t.x + t.r, t.y + t.r)
        fill = COLOURS[t.colour]
        if t.shape == "circle":
            d.ellipse(box, fill=fill)
        elif t.shape == "square":
            d.rectangle(box, fill=fill)
        else:  # triangle, pointing up
            d.polygon([(t.x, t.y - t.r), (t.x - t.r, t.y + t.r), (t.x + t.r, t.y + t.r)], fill=fill)
    return im


def _place_grid(rng: np.random.Generator, n: int) -> list[Thing]:
    """n shapes with distinct (colour, shape) in n distinct cells of the 3 x 3 grid of image tokens (each cell is
    28 x 28 px: the 2 x 2 patches one token covers), centres jittered by up to JITTER px around the cell centre."""
    chosen = rng.choice(len(PAIRS), size=n, replace=False)
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    side = SIZE // GRID
    things = []
    for k, cell in zip(chosen, cells):
        r, c = divmod(int(cell), GRID)
        dx, dy = (int(v) for v in rng.integers(-JITTER, JITTER + 1, size=2))
        things.append(Thing(*PAIRS[k], c * side + side // 2 + dx, r * side + side // 2 + dy, RADIUS))
    return things


def _place(rng: np.random.Generator, n: int, size: int = SIZE, margin: int = 0) -> list[Thing]:
    """n shapes with distinct (colour, shape), boxes apart by >= 3 px, inside the image (minus `margin`)."""
    chosen = rng.choice(len(PAIRS), size=n, replace=False)
    things: list[Thing] = []
    for k in chosen:
        for _ in range(200):
            r = RADIUS
            lo, hi = r + 1 + margin, size - r - 2 - margin
            x, y = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
            if all(max(abs(x - o.x), abs(y - o.y)) >= r + o.r + 3 for o in things):
                things.append(Thing(*PAIRS[k], x, y, r))
                break
        else:  # crowded: start over with fewer tries wasted (never happens for n <= 3 at 84 px in practice)
            return _place(rng, n, size, margin)
    return things


# ---------------------------------------------------------------------- questions

def _question(kind: str, things: list[Thing], rng: np.random.Generator) -> tuple[str, str] | None:
    """(question, answer) of this kind about the scene, or None when the scene cannot pose it."""
    if kind == "count":
        return "How many shapes are there?", str(len(things))
    if kind == "colour":
        unique = [t for t in things if sum(o.shape == t.shape for o in things) == 1]
        if not unique:
            return None
        t = unique[rng.integers(len(unique))]
        return f"What colour is the {t.shape}?", t.colour
    if kind == "shape":
        unique = [t for t in things if sum(o.colour == t.colour for o in things) == 1]
        if not unique:
            return None
        t = unique[rng.integers(len(unique))]
        return f"What shape is the {t.colour} object?", t.shape
    if kind == "exists":
        present = {(t.colour, t.shape) for t in things}
        if rng.random() < 0.5:
            c, s = sorted(present)[rng.integers(len(present))]
            return f"Is there a {c} {s}?", "yes"
        # a near miss: the colour or the shape of something that is there
        t = things[rng.integers(len(things))]
        misses = sorted(({(t.colour, s) for s in SHAPES} | {(c, t.shape) for c in COLOURS}) - present)
        c, s = misses[rng.integers(len(misses))]
        return f"Is there a {c} {s}?", "no"
    if kind in ("leftright", "abovebelow"):
        axis = "x" if kind == "leftright" else "y"
        off = [t for t in things if abs(getattr(t, axis) - SIZE // 2) >= GAP]  # clearly off the centre line
        if not off:
            return None
        t = off[rng.integers(len(off))]
        if kind == "leftright":
            return f"Is the {t.name} left or right of the centre?", "left" if t.x < SIZE // 2 else "right"
        return f"Is the {t.name} above or below the centre?", "above" if t.y < SIZE // 2 else "below"
    raise TaskError(f"unknown question kind {kind!r}; TinyVQA asks {IMAGE_KINDS + VIDEO_KINDS}")


def image_example(rng: np.random.Generator, kind: str | None = None) -> Example:
    """One image question; `kind` None picks one of IMAGE_KINDS uniformly (redrawing scenes that cannot pose it)."""
    kind = kind or IMAGE_KINDS[rng.integers(len(IMAGE_KINDS))]
    while True:
        n = int(rng.integers(1, 4))
        things = _place_grid(rng, n)
        qa = _question(kind, things, rng)
        if qa is not None:
            background = int(rng.integers(150, 236))
            return Example(kind, *qa, things, image=draw(things, background))


def video_example(rng: np.random.Generator) -> Example:
    """One motion question: a shape moves 6-8 px per frame in one direction (a still distractor may be there)."""
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
    dx, dy = DIRECTIONS[direction]
    step = int(rng.integers(6, 9))
    travel = step * (VIDEO_FRAMES - 1)
    n = int(rng.integers(1, 3))
    things = _place(rng, n, margin=travel // 2 + 1)
    mover = things[0]
    start = Thing(mover.colour, mover.shape, mover.x - dx * travel // 2, mover.y - dy * travel // 2, mover.r)
    background = int(rng.integers(150, 236))
    frames = [draw([Thing(start.colour, start.shape, start.x + dx * step * k, start.y + dy * step * k, start.r)]
                   + things[1:], background) for k in range(VIDEO_FRAMES)]
    return Example("motion", f"Which way does the {mover.name} move?", direction, things, frames=frames)


def examples(seed: int, n: int, kinds: Sequence[str] = IMAGE_KINDS) -> list[Example]:
    """n examples, kinds taken in turn (balanced), all drawn from one Generator seeded with `seed`."""
    bad = [k for k in kinds if k not in IMAGE_KINDS + VIDEO_KINDS]
    if bad or not kinds:
        raise TaskError(f"unknown question kinds {bad or kinds}; choose from {IMAGE_KINDS + VIDEO_KINDS}")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        out.append(video_example(rng) if kind in VIDEO_KINDS else image_example(rng, kind))
    return out


def cell_targets(things: Sequence[Thing]) -> tuple[torch.Tensor, torch.Tensor]:
    """What each image token sees, for the vision tower's auxiliary loss in train.py. Image token k covers grid
    cell divmod(k, 3) (28 x 28 px, 2 x 2 patches). Returns

        label  (9,): index in PAIRS of the object whose centre is in the cell, or len(PAIRS) (= 12) for none
        centre (9, 2): that object's centre (x, y) / SIZE, 0 for an empty cell
    """
    side = SIZE // GRID
    label = torch.full((GRID * GRID,), len(PAIRS), dtype=torch.long)
    centre = torch.zeros(GRID * GRID, 2)
    for t in things:
        cell = (t.y // side) * GRID + t.x // side
        label[cell] = PAIRS.index((t.colour, t.shape))
        centre[cell] = torch.tensor([t.x / SIZE, t.y / SIZE])
    return label, centre


# The example scene shipped as data/scene.png (the README's question is asked about it).
SCENE = [Thing("red", "circle", 15, 16, RADIUS), Thing("blue", "square", 69, 14, RADIUS),
         Thing("yellow", "triangle", 42, 71, RADIUS)]
SCENE_BACKGROUND = 210


def corpus() -> list[str]:
    """Every word the task uses, for training the tokenizer (prompts and answers)."""
    words = list(COLOURS) + list(SHAPES) + ["1", "2", "3", "yes", "no"] + list(DIRECTIONS) + ["above", "below"]
    qs = ["How many shapes are there?"]
    for c in COLOURS:
        for s in SHAPES:
            qs += [f"What colour is the {s}?", f"What shape is the {c} object?", f"Is there a {c} {s}?",
                   f"Is the {c} {s} left or right of the centre?", f"Is the {c} {s} above or below the centre?",
                   f"Which way does the {c} {s} move?"]
    return qs * 20 + words * 20


# ---------------------------------------------------------------------- batches for training

def dialogue(turns: Sequence[Example]) -> list[dict]:
    """Several questions about one image (or clip) as one conversation: the picture in the first user turn, every
    answer as an assistant turn (GLM's multi-turn format)."""
    conv = turns[0].conversation(with_answer=True)
    for e in turns[1:]:
        conv += [{"role": "user", "content": e.question}, {"role": "assistant", "content": e.answer}]
    return conv


def batch(processor, items: Sequence[Example | Sequence[Example]], with_answers: bool = True) -> dict:
    """Model inputs for a batch of Examples (or of dialogues: lists of Examples about one picture), left-padded.

    With answers, each row is the conversation with its answers, ended by <|user|>, and `labels` (B, L) hold the
    token each position must predict: every answer token and the <|user|> after it (which stops generation), -100
    elsewhere, so the loss never asks the model to predict a question or the picture."""
    if not items:
        raise TaskError("an empty batch")
    turns = [[it] if isinstance(it, Example) else list(it) for it in items]
    if len({t[0].image is None for t in turns}) > 1:
        raise TaskError("a batch mixes image and video questions; GLM-4.1V cannot take both in one call")
    if not with_answers:
        return processor.apply_chat_template([t[0].conversation() for t in turns])
    inputs = processor.apply_chat_template([dialogue(t) for t in turns], add_generation_prompt=False)
    tok = processor.tokenizer
    stop, assistant, newline = tok.token_to_id(STOP), tok.token_to_id("<|assistant|>"), tok.encode("\n")
    rows, targets = [], []
    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
        row = ids[mask.bool()].tolist() + [stop]
        target, answering = [-100] * len(row), False
        for i in range(len(row) - 1):  # position i predicts row[i + 1]
            if row[i] == assistant and row[i + 1:i + 2] == newline:
                answering = "start"
            elif answering == "start":
                answering = True
            if answering is True:
                target[i] = row[i + 1]
                answering = row[i + 1] != stop
        rows.append(row)
        targets.append(target)
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), processor.pad_token_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(rows), L), dtype=torch.long)  # (B, L)
    labels = torch.full((len(rows), L), -100, dtype=torch.long)  # (B, L)
    for b, (r, t) in enumerate(zip(rows, targets)):
        ids[b, L - len(r):], mask[b, L - len(r):] = torch.tensor(r), 1
        labels[b, L - len(r):] = torch.tensor(t)
    rebuilt = {"input_ids": ids, "attention_mask": mask, "labels": labels}  # the rows grew: recount the types
    types = torch.tensor([[0] * (L - len(r)) + processor.mm_token_type_ids(r) for r in rows], dtype=torch.long)
    return {**inputs, **rebuilt, "mm_token_type_ids": types}
