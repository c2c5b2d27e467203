"""Command line.

    python -m minglm4v demo [--image PATH] [--out PNG]
    python -m minglm4v generate [--model DIR] [--image PATH ...] [--video PATH] --prompt TEXT [sampling options]

`demo` preprocesses a photo (the cat in data/ by default) and writes a picture of its patch grid and merge
windows, printing the grid and the number of image tokens; then the tiny GLM-4.1V trained for this book
(data/tiny-glm4v) answers questions about data/scene.png. `generate` streams a model's answer to a prompt with
images or a video; without --model it uses the tiny checkpoint shipped in data/tiny-glm4v.
User errors (a missing folder, an unreadable image, a prompt that does not fit) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CliError, MinGlmError

DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_IMAGE = DATA / "cat.png"
DEFAULT_MODEL = DATA / "tiny-glm4v"
DEMO_SCENE = DATA / "scene.png"
DEMO_QUESTIONS = ("How many shapes are there?", "What colour is the triangle?", "What shape is the blue object?",
                  "Is the red circle left or right of the centre?", "Is the yellow triangle above or below the centre?",
                  "Is there a green square?")


def demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .patchify import load_image, num_image_tokens, preprocess, unpatchify
    from .viz import draw_patch_grid

    image = load_image(args.image)
    pixel_values, grid = preprocess(image)
    frame = unpatchify(pixel_values, grid[0])[0]  # (H, W, 3): the resized image the model sees
    print(f"image      {args.image} ({image.width}x{image.height} px)")
    print(f"resized    {frame.shape[1]}x{frame.shape[0]} px")
    print(f"pixel_values {tuple(pixel_values.shape)}  image_grid_thw {grid.tolist()}")
    print(f"tokens     {num_image_tokens(grid[0])} <|image|> placeholders (2x2 patches each)")
    fig, ax = plt.subplots(figsize=(7, 7 * frame.shape[0] / frame.shape[1]), dpi=100)
    draw_patch_grid(ax, frame, grid[0], numbers=True)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote      {out}")
    if args.model:
        answer_questions(Path(args.model), DEMO_SCENE, DEMO_QUESTIONS)
    return 0


def answer_questions(folder: Path, image_path: Path, questions) -> None:
    """The main job: a trained GLM-4.1V answers questions about an image (greedy, a few tokens each)."""
    from . import load, load_processor

    if not folder.is_dir():
        raise CliError(f"model folder {folder} not found; pass --model DIR or --model '' to skip the questions")
    model, processor = load(folder), load_processor(folder)
    print(f"\nmodel      {folder} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    print(f"image      {image_path}")
    for q in questions:
        inputs = processor.apply_chat_template([{"role": "user", "content": [
            {"type": "image", "image": str(image_path)}, {"type": "text", "text": q}]}])
        out = model.generate(**inputs, max_new_tokens=8)
        print(f"  {q:55s} -> {processor.decode(out[0, inputs['input_ids'].shape[1]:]).strip()}")


def generate(args) -> int:
    import torch

    from . import load, load_processor
    from .generation import stream

    if not args.prompt.strip():
        raise CliError("--prompt is empty; ask a question or give an instruction")
    given = [f"--{k.replace('_', '-')}" for k, default in SAMPLING_DEFAULTS.items() if getattr(args, k) != default]
    if given and not args.sample:
        raise CliError(f"{' '.join(given)} only apply when sampling; add --sample (the default is greedy decoding)")
    folder = Path(args.model)
    if not folder.is_dir():
        hint = " (the default tiny checkpoint is missing from data/)" if args.model == str(DEFAULT_MODEL) else ""
        raise CliError(f"model folder {folder} not found{hint}; pass --model DIR, a checkpoint folder")
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    processor = load_processor(folder)
    model = load(folder, dtype=dtype)
    processor.check_stop_ids(model.config.text_config.eos_token_id)
    content = [{"type": "image", "image": p} for p in args.image]
    content += [{"type": "video", "video": p} for p in args.video]
    messages = ([{"role": "system", "content": args.system}] if args.system else [])
    messages.append({"role": "user", "content": content + [{"type": "text", "text": args.prompt}]})
    inputs = processor.apply_chat_template(messages)
    sampling = dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                    seed=args.seed)
    for piece in stream(model, processor, inputs, **sampling):
        print(piece, end="", flush=True)
    print()
    return 0


SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minglm4v", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="preprocess a photo and draw its patch grid")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="image file (default: data/cat.png)")
    p.add_argument("--out", default="out/patch_grid.png", help="where to write the picture")
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="checkpoint that answers questions about data/scene.png (default: data/tiny-glm4v; '' skips)")
    p.set_defaults(func=demo)

    g = sub.add_parser("generate", help="answer a prompt about images or a video, streaming the answer")
    g.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder (default: data/tiny-glm4v)")
    g.add_argument("--image", action="append", default=[], help="an image file; repeat for several")
    g.add_argument("--video", action="append", default=[], help="a video file (not together with images)")
    g.add_argument("--prompt", required=True, help="the question or instruction")
    g.add_argument("--system", default=None, help="an optional system message")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=SAMPLING_DEFAULTS["temperature"])
    g.add_argument("--top-k", type=int, default=SAMPLING_DEFAULTS["top_k"])
    g.add_argument("--top-p", type=float, default=SAMPLING_DEFAULTS["top_p"])
    g.add_argument("--min-p", type=float, default=SAMPLING_DEFAULTS["min_p"])
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None, help="seed for sampling")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="compute dtype (auto: as stored in the checkpoint)")
    g.set_defaults(func=generate)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MinGlmError as e:  # every user error the library raises: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file we could not read or write
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
