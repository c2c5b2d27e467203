"""Time minglm4v's vision tower against transformers' Glm4vVisionModel on this machine's CPU.

Same random weights (copied from the transformers model), float32, a small config (depth 4, width 256, 4 heads),
one image each of 224^2, 448^2 and 896^2 pixels (16x16, 32x32, 64x64 patches). transformers is only the oracle here;
the package never imports it.

    .venv/bin/python benchmarks/bench_vision.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import median_times  # noqa: E402
from oracle import build_oracle  # noqa: E402

from minglm4v.config import VisionConfig, tiny  # noqa: E402
from minglm4v.vision import VisionModel  # noqa: E402


def bench_config():
    vision = VisionConfig(depth=4, hidden_size=256, num_heads=4, intermediate_size=512, out_hidden_size=256)
    base = tiny()
    text = dataclasses.replace(base.text_config, hidden_size=256, num_hidden_layers=1, mrope_section=(4, 6, 6))
    return dataclasses.replace(base, text_config=text, vision_config=vision)




def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = bench_config()
    hf = build_oracle(cfg, seed=0).model.visual.eval()
    ours = VisionModel(cfg.vision_config).eval()
    ours.load_state_dict(hf.state_dict(), strict=True)
    vc = cfg.vision_config
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads; "
          f"vision depth {vc.depth}, width {vc.hidden_size}, {vc.num_heads} heads, float32, median of {args.repeats}")
    print("| image | patches | minglm4v (ms) | transformers (ms) | transformers / minglm4v | max abs diff |")
    print("|---|---|---|---|---|---|")
    for side in (224, 448, 896):
        g = side // vc.patch_size
        grid = torch.tensor([[1, g, g]])
        px = torch.randn(g * g, vc.patch_dim, generator=torch.Generator().manual_seed(side))
        with torch.inference_mode():
            diff = (ours(px, grid) - hf(px, grid_thw=grid).pooler_output).abs().max().item()
            t_ours, t_hf = median_times([lambda: ours(px, grid), lambda: hf(px, grid_thw=grid)], args.repeats)
        print(f"| {side}x{side} | {g * g} | {t_ours * 1e3:.1f} | {t_hf * 1e3:.1f} | {t_hf / t_ours:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
