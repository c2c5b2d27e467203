"""Peak memory of quantizing while loading: `load(folder, quantize="int8" | "int4")` against the bf16 load, on the
synthetic checkpoint with the real 9B widths of benchmarks/bench_load_memory.py (written once to a temporary
folder, not committed; the int4 checkpoint saved from it goes beside it, in <folder>-int4).

Each load runs in a fresh subprocess; after loading, every page of every weight is touched once (what a first
forward pass does), and the table reports how far the peak RSS (VmHWM) rose above the RSS after imports, against
the checkpoint's bf16 bytes. The floor is what the loaded model itself holds (its parameters and buffers): embeddings,
norms and (by default) the vision tower stay bf16, so on a checkpoint with only a few layers that floor is far
above 4 / 16 of the bf16 bytes. The real 9B's floor is printed too, from the config on the meta device.

    .venv/bin/python benchmarks/bench_quant_memory.py [--folder /tmp/glm41v-9b-width] [--layers 2] [--no-save]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import publish  # noqa: E402
from bench_load_memory import write_checkpoint  # noqa: E402

from minglm4v import glm41v_9b, weights  # noqa: E402
from minglm4v.quant import model_bytes, prepare  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quant_memory.md"

CHILD = """
import sys, time, torch
torch.set_num_threads(1)
def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
from minglm4v import tiny, weights
from minglm4v.quant import model_bytes
weights.build(tiny(), "meta")
how, folder = sys.argv[1], sys.argv[2]
before = status("VmRSS")
t0 = time.perf_counter()
if how == "bf16" or how.startswith("saved"):  # saved: a quantized checkpoint, read back as its config records
    model = weights.load(folder)
else:
    scheme, _, vision = how.partition("+")
    model = weights.load(folder, quantize=scheme, group_size=128 if scheme == "int4" else None,
                         quantize_vision=bool(vision))
t1 = time.perf_counter()
with torch.no_grad():  # touch every 4 KiB page of every weight
    tensors = list(model.parameters()) + list(model.buffers())
    total = sum(float(t.detach().reshape(-1)[::2048].float().sum()) for t in tensors)
print(before, t1 - t0, status("VmHWM"), model_bytes(model))
"""


SAVE = "import sys; from minglm4v import weights; " \
       "weights.save(weights.load(sys.argv[1], quantize='int4'), sys.argv[2], sys.argv[3])"


def run(how: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), how, str(folder)], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{how} failed:\n{out.stderr[-3000:]}")
    before, seconds, peak, held = (float(x) for x in out.stdout.split())
    return {"seconds": seconds, "grow": peak - before, "held": held}


def floor_9b(scheme: str, vision: bool) -> float:
    """Bytes the real 9B holds after quantization / its bf16 bytes (on meta: no memory)."""
    model = weights.build(glm41v_9b(), "meta").to(torch.bfloat16)
    bf16 = model_bytes(model)
    if scheme != "bf16":
        prepare(model, scheme, 128, vision)
    return model_bytes(model) / bf16


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "glm41v-9b-width")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--shard", default="1GB")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    nbytes = write_checkpoint(args.folder, args.layers, args.depth, args.shard)
    saved = args.folder.with_name(args.folder.name + "-int4")
    subprocess.run([sys.executable, "-c", SAVE, str(args.folder), str(saved), args.shard], check=True, cwd=ROOT)
    hows = {"bf16": args.folder, "int8": args.folder, "int4": args.folder, "int4+vision": args.folder,
            "saved int4": saved}
    runs = {h: min((run(h, f) for _ in range(args.repeats)), key=lambda r: r["grow"]) for h, f in hows.items()}
    targets = {"int8": 0.55, "int4": 0.30, "int4+vision": 0.30, "saved int4": 0.30}
    lines = [
        "### Quantizing while loading: peak memory, 9B widths, a few layers",
        "",
        f"`python benchmarks/bench_quant_memory.py`: the synthetic checkpoint of the loading-memory table "
        f"({args.layers} text layers, {args.depth} vision blocks, **{nbytes / 1e9:.2f} GB** of bf16 tensors), each "
        "load in a fresh process, every weight touched after loading; peak RSS growth above the RSS after imports. "
        "`held` is what the loaded model's tensors take; `9B floor` is that ratio for the real 40-layer model "
        "(counted on the meta device), the best any loader can reach. Quantized with groups of 128; `saved int4` "
        "reads back the int4 checkpoint `minglm4v.save` wrote of that model (plain `load(folder)`).",
        "",
        "| load | seconds | peak RSS growth | × bf16 bytes | held × bf16 | target | met | 9B floor × bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h, r in runs.items():
        ratio = r["grow"] / nbytes
        want = targets.get(h)
        met = "—" if want is None else ("yes" if ratio <= want else "**no**")
        scheme, _, vision = h.removeprefix("saved ").partition("+")
        lines.append(f"| `{h}` | {r['seconds']:.1f} | {r['grow'] / 1e9:.2f} GB | {ratio:.2f} | "
                     f"{r['held'] / nbytes:.2f} | {'—' if want is None else f'≤ {want}'} | {met} | "
                     f"{floor_9b(scheme, bool(vision)):.2f} |")
    lines += ["", "The embeddings (and, unless quantize_vision=True, the vision tower) stay bf16 by design, so the "
              "0.30 target for int4 is out of reach even for the real 9B (its floor is in the last column); what "
              "the streaming load does guarantee is that peak memory stays near what the quantized model holds, "
              "never a full bf16 copy.", ""]
    publish("\n".join(lines), RESULTS, save=not args.no_save)


if __name__ == "__main__":
    main()
