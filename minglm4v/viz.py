"""Pictures for the chapters and the demo: patch grids and merge windows drawn over an image.

Plotting only; nothing here is needed to run the model.
"""

from __future__ import annotations

import numpy as np


def draw_patch_grid(ax, frame: np.ndarray, grid_thw, patch_size: int = 14, merge_size: int = 2,
                    numbers: bool = False, title: str | None = None):
    """Show one resized frame (H, W, 3) uint8 with its patch grid (thin lines) and m x m merge windows (thick).

    With `numbers=True` every merge window is labelled with its token index (raster order = prompt order)."""
    _, gh, gw = (int(v) for v in grid_thw)
    H, W = gh * patch_size, gw * patch_size
    ax.imshow(frame, extent=(0, W, H, 0))
    for i in range(gh + 1):
        thick = i % merge_size == 0
        ax.axhline(i * patch_size, color="yellow" if thick else "white", lw=1.2 if thick else 0.3,
                   alpha=0.9 if thick else 0.6)
    for j in range(gw + 1):
        thick = j % merge_size == 0
        ax.axvline(j * patch_size, color="yellow" if thick else "white", lw=1.2 if thick else 0.3,
                   alpha=0.9 if thick else 0.6)
    if numbers:
        step = patch_size * merge_size
        for r in range(gh // merge_size):
            for c in range(gw // merge_size):
                ax.text((c + 0.5) * step, (r + 0.5) * step, str(r * (gw // merge_size) + c), color="white",
                        ha="center", va="center", fontsize=6)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    tokens = gh * gw // merge_size**2
    ax.set_title(title or f"{W}x{H} px, grid {gh}x{gw} patches, {tokens} tokens", fontsize=9)
    return ax
