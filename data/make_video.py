"""Make data/shapes.mp4: a red square slides left to right while a blue ball bounces, 6 s at 12 fps, 192x144.

Run from the repository root:  python data/make_video.py  [--out data/shapes.mp4] [--codec libx264]
The picture is drawn with numpy and PIL and encoded with PyAV (H.264, yuv420p), so the result is made by this
project and carries no third-party rights. `--codec libvpx-vp9 --out x.webm` writes the same clip as WebM/VP9
(the tests do that into a temporary folder).
"""

from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

W, H, FPS, SECONDS = 192, 144, 12, 6


def frame(i: int, width: int = W, height: int = H, fps: int = FPS, seconds: int = SECONDS) -> np.ndarray:
    """Frame i as (H, W, 3) uint8: a soft vertical gradient, a red square moving right, a blue ball bouncing."""
    y = np.linspace(0, 1, height)[:, None, None]  # (H, 1, 1)
    sky, ground = np.array([205, 225, 245]), np.array([235, 230, 210])
    bg = ((1 - y) * sky + y * ground).repeat(width, axis=1).astype(np.uint8)  # (H, W, 3)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    s = i / (fps * seconds - 1)  # 0 -> 1 over the clip
    side = height // 4
    x0 = int(8 + s * (width - side - 16))
    d.rectangle([x0, height // 2 - side // 2, x0 + side, height // 2 + side // 2], fill=(215, 40, 40))
    r = height // 10
    cx = int(width * 0.7)
    cy = int(height - r - 6 - abs(math.sin(math.pi * i / (fps * 1.5))) * (height - 2 * r - 12))  # a bounce per 1.5 s
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 70, 210))
    return np.asarray(im)


def write(path: str | Path, codec: str = "libx264", width: int = W, height: int = H, fps: int = FPS,
          seconds: int = SECONDS) -> Path:
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "28", "preset": "medium"}
        for i in range(fps * seconds):
            f = av.VideoFrame.from_ndarray(frame(i, width, height, fps, seconds), format="rgb24")
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode():  # flush
            out.mux(packet)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "shapes.mp4"))
    ap.add_argument("--codec", default="libx264")
    a = ap.parse_args()
    p = write(a.out, a.codec)
    print(f"wrote {p} ({p.stat().st_size} bytes)")
