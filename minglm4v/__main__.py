"""Command line: `python -m minglm4v demo [--image PATH] [--out PNG]`.

`demo` preprocesses a photo (the cat in data/ by default) and writes a picture of its patch grid and merge
windows, printing the grid and the number of image tokens. Later chapters add `generate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import MinGlmError

DATA = Path(__file__).resolve().parent.parent / "data"
DEFAULT_IMAGE = DATA / "cat.png"


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
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minglm4v", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="preprocess a photo and draw its patch grid")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="image file (default: data/cat.png)")
    p.add_argument("--out", default="out/patch_grid.png", help="where to write the picture")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MinGlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
