"""Shared by the benchmark scripts: alternating median timing and writing a results table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_times(fns, repeats: int) -> list[float]:
    """Median wall time of each function; runs alternate (a, b, a, b, ...) so that load from other processes on a
    shared machine falls on all sides alike. Each function runs once first as a warm-up."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def publish(text: str, path: Path, save: bool = True) -> None:
    """Print a results table and (unless told not to) write it where scripts/readme.py picks it up."""
    print(text)
    if save:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
