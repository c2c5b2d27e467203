"""Regenerate the generated parts of README.md: `python scripts/readme.py` (or `--check` to only compare).

Sections between `<!-- BEGIN name -->` and `<!-- END name -->` are produced here from the code and files they
describe, so the README cannot drift:
  * chapters: one row per notebook in chapters/, title from its first heading, test command from its last cell;
  * sizes: parameter counts of the presets, computed by building the model on the meta device when the model
    exists, else from the config arithmetic of chapter 00;
  * bench: the latest benchmark tables saved by the scripts in benchmarks/ (benchmarks/results/*.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chapters() -> str:
    rows = ["| chapter | what it shows | tested by |", "|---|---|---|"]
    for nb in sorted((ROOT / "chapters").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        title = next((line[2:].strip() for line in md[0].splitlines() if line.startswith("# ")), nb.stem)
        tests = re.findall(r"pytest ([^\n`]+)", md[-1]) if md else []
        tested = " ".join(f"`{t.strip()}`" for t in tests) or "—"
        rows.append(f"| [{nb.stem}](chapters/{nb.name}) | {title} | {tested} |")
    return "\n".join(rows)


def sizes() -> str:
    import minglm4v

    rows = ["| preset | parameters | bytes in bf16 |", "|---|---|---|"]
    for name in ("glm41v_9b", "tiny"):
        cfg = getattr(minglm4v, name)()
        n = _count(cfg)
        rows.append(f"| `{name}()` | {n:,} | {2 * n:,} |")
    return "\n".join(rows)


def _count(cfg) -> int:
    import torch

    try:
        from minglm4v.model import Glm4vForConditionalGeneration
    except ImportError:  # before the model exists
        return -1
    with torch.device("meta"):
        model = Glm4vForConditionalGeneration(cfg)
    return sum(p.numel() for p in model.parameters())


def bench() -> str:
    parts = []
    for f in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        parts.append(f.read_text().strip())
    return "\n\n".join(parts) or "_No benchmark has been run yet: see benchmarks/._"


SECTIONS = {"chapters": chapters, "sizes": sizes, "bench": bench}


def render(text: str, names=SECTIONS) -> str:
    for name in names:
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n)(?:.*?\n)?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no section {name}")
        text = pattern.sub(lambda m: m.group(1) + SECTIONS[name]() + "\n" + m.group(2), text)
    return text


def main(argv) -> int:
    path = ROOT / "README.md"
    old = path.read_text()
    new = render(old)
    if "--check" in argv:
        if new != old:
            print("README.md is out of date: run `python scripts/readme.py`")
            return 1
        return 0
    path.write_text(new)
    print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
