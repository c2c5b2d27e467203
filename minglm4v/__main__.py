"""Command line.

    python -m minglm4v demo [--image PATH] [--out PNG] [--model DIR]
    python -m minglm4v generate [--model DIR] [--image PATH ...] [--video PATH] --prompt TEXT [sampling options]
    python -m minglm4v --version          (also `minglm4v ...` once installed)

`demo` preprocesses a photo (the cat in data/ by default) and writes a picture of its patch grid and merge
windows, printing the grid and the number of image tokens; then the tiny GLM-4.1V trained for this book
(data/tiny-glm4v) answers questions about data/scene.png. `generate` streams a model's answer to a prompt with
images or a video; without --model it uses the tiny checkpoint. Both find the shipped files through resources.py,
so they work from any directory, in a checkout or from an installed wheel.
Every user error (a missing folder, an unreadable image, a prompt that does not fit, an argument argparse refuses,
text that is not UTF-8) prints one line, `error: ...`, and exits with 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import CliError, MinGlmError
from .resources import data_dir

DEFAULT_IMAGE = "cat.png"  # in data/ (resources.py)
DEFAULT_MODEL = "tiny-glm4v"
DEMO_SCENE = "scene.png"
DEMO_QUESTIONS = ("How many shapes are there?", "What colour is the triangle?", "What shape is the blue object?",
                  "Is the red circle left or right of the centre?", "Is the yellow triangle above or below the centre?",
                  "Is there a green square?")
DEFAULT_OUT = "out/patch_grid.png"


def utf8_text(value: str | None, flag: str) -> str | None:
    """Text from argv must be UTF-8. Python keeps undecodable argv bytes as lone surrogates (surrogateescape)."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogateescape")
        raise CliError(f"{flag} is not valid UTF-8 text (got the bytes {raw[:40]!r}); "
                       "re-encode it as UTF-8 or check the terminal's locale") from None
    return value


def figure_path(out: str, formats: dict) -> Path:
    """Where `demo --out` writes: a folder gets patch_grid.png inside it; a name without an extension gets .png;
    an extension matplotlib cannot write is refused (rather than a ValueError traceback)."""
    path = Path(out)
    if path.is_dir():
        return path / Path(DEFAULT_OUT).name
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return path.with_name(path.name + ".png")
    if suffix not in formats:
        raise CliError(f"--out {out}: cannot write a .{suffix} picture; use one of "
                       f"{', '.join('.' + k for k in sorted(formats))}")
    return path


def demo(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .hub import resolve_checkpoint
    from .patchify import load_image, num_image_tokens, preprocess, unpatchify
    from .viz import draw_patch_grid

    fig = plt.figure()
    out = figure_path(args.out, fig.canvas.get_supported_filetypes())  # before any work: a bad name fails fast
    plt.close(fig)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote      {out}")
    if args.model:
        answer_questions(resolve_checkpoint(args.model), data_dir() / DEMO_SCENE, DEMO_QUESTIONS)
    return 0


def answer_questions(folder: Path, image_path: Path, questions) -> None:
    """The main job: a trained GLM-4.1V answers questions about an image (greedy, a few tokens each)."""
    from . import load, load_processor

    if not folder.is_dir():
        raise CliError(f"model folder {folder} not found; pass --model DIR or --model '' to skip the questions")
    model, processor = load(folder), load_processor(folder)
    processor.check_model(model.config)
    print(f"\nmodel      {folder} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    print(f"image      {image_path}")
    for q in questions:
        inputs = processor.apply_chat_template([{"role": "user", "content": [
            {"type": "image", "image": str(image_path)}, {"type": "text", "text": q}]}])
        out = model.generate(**inputs, max_new_tokens=8)
        answer = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        print(f"  {q:55s} -> {answer}")


def generate(args) -> int:
    import torch

    from . import load, load_processor
    from .generation import stream
    from .hub import resolve_checkpoint

    utf8_text(args.system, "--system")
    if not utf8_text(args.prompt, "--prompt").strip():
        raise CliError("--prompt is empty; ask a question or give an instruction")
    given = [f"--{k.replace('_', '-')}" for k, default in SAMPLING_DEFAULTS.items() if getattr(args, k) != default]
    if given and not args.sample:
        raise CliError(f"{' '.join(given)} only apply when sampling; add --sample (the default is greedy decoding)")
    folder = resolve_checkpoint(args.model)  # a folder, a file:// URL or a Hub id in the local Hugging Face cache
    if not folder.is_dir():
        hint = " (the default tiny checkpoint is missing from data/)" if args.model == str(default_model()) else ""
        raise CliError(f"model folder {folder} not found{hint}; pass --model DIR, a checkpoint folder")
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    processor = load_processor(folder)
    model = load(folder, dtype=dtype)
    processor.check_model(model.config)  # tokenizer and model agree (vocabulary, special and stop ids)
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


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (exit 2), like every other user error."""

    def error(self, message):
        self.exit(2, one_line(f"{message} (see {self.prog} --help)"))


def one_line(message: str) -> str:
    """`error: message` on one line, printable whatever the terminal's encoding (undecodable bytes escaped)."""
    text = "error: " + " ".join(str(message).split())
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding) + "\n"


def default_model() -> Path:
    return data_dir() / DEFAULT_MODEL


def main(argv=None) -> int:
    parser = Parser(prog="python -m minglm4v", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"minglm4v {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("demo", help="preprocess a photo and draw its patch grid")
    p.add_argument("--image", default=str(data_dir() / DEFAULT_IMAGE), help="image file (default: data/cat.png)")
    p.add_argument("--out", default=DEFAULT_OUT, help="where to write the picture: a .png (or other matplotlib "
                   "format) file, or a folder (default: out/patch_grid.png)")
    p.add_argument("--model", default=str(default_model()),
                   help="checkpoint that answers questions about data/scene.png (default: data/tiny-glm4v; '' skips)")
    p.set_defaults(func=demo)

    g = sub.add_parser("generate", help="answer a prompt about images or a video, streaming the answer")
    g.add_argument("--model", default=str(default_model()),
                   help="checkpoint folder or Hub id in the local Hugging Face cache (default: data/tiny-glm4v)")
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
    except (MinGlmError, OSError) as e:  # every user error the library raises, or a file we could not read/write
        sys.stderr.write(one_line(e))
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
