"""Peak memory while loading: minglm4v.load against transformers' from_pretrained, on a checkpoint with the real 9B
widths and a few layers, sharded like the real one (several GB, written to a temporary folder, not committed).

Each loader runs in a fresh subprocess. Its baseline is the RSS after imports and after building a tiny model once
(one-off costs of torch and the library); the table reports how much the peak RSS (VmHWM) rises above that
while loading, against the bytes of the checkpoint's tensors. Then every page of every weight is touched once (a
strided sum), which is what the first forward pass does: a loader that maps the files lazily has only then paid
for the weights. RSS counts file pages mapped into the process as well as its own memory; the page cache itself
(files read with read(), as minglm4v does) is not in anyone's RSS.

    .venv/bin/python benchmarks/bench_load_memory.py [--folder /tmp/glm41v-9b-width] [--layers 2] [--shard 1GB]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import publish  # noqa: E402

from minglm4v import glm41v_9b, weights  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "load_memory.md"

CHILD = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
def status(key):  # VmRSS: now; VmHWM: this process's peak (ru_maxrss would include the parent's size at fork)
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
if sys.argv[1].startswith("minglm4v"):
    from minglm4v import tiny, weights
    weights.build(tiny(), "meta")
    load = lambda: weights.load(sys.argv[2], mmap=sys.argv[1] == "minglm4v")
else:
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    with torch.device("meta"):
        transformers.Glm4vForConditionalGeneration(transformers.Glm4vConfig.from_pretrained(sys.argv[2]))
    load = lambda: transformers.Glm4vForConditionalGeneration.from_pretrained(sys.argv[2], dtype=torch.bfloat16)
before = status("VmRSS")
t0 = time.perf_counter()
model = load()
t1 = time.perf_counter()
peak_load = status("VmHWM")
with torch.no_grad():  # touch every 4 KiB page of every weight, as a first forward pass would
    total = sum(float(p.detach().reshape(-1)[::2048].float().sum()) for p in model.parameters())
t2 = time.perf_counter()
dtypes = sorted({str(p.dtype) for p in model.parameters()})
n = sum(p.numel() for p in model.parameters())
print(before, t1 - t0, t2 - t0, peak_load, status("VmHWM"), n, ",".join(dtypes))
"""


def synthetic_config(layers: int, depth: int):
    cfg = glm41v_9b()
    return dataclasses.replace(cfg, text_config=dataclasses.replace(cfg.text_config, num_hidden_layers=layers),
                               vision_config=dataclasses.replace(cfg.vision_config, depth=depth))


def write_checkpoint(folder: Path, layers: int, depth: int, shard: str) -> int:
    """The synthetic checkpoint, random bf16 (real pages, not shared zeros); returns its tensor bytes."""
    index = folder / weights.INDEX
    if index.is_file():
        cfg = json.loads((folder / "config.json").read_text())
        if cfg["text_config"]["num_hidden_layers"] == layers and cfg["vision_config"]["depth"] == depth:
            return json.loads(index.read_text())["metadata"]["total_size"]
    model = weights.build(synthetic_config(layers, depth), "cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02, generator=g)
    weights.save(model, folder, max_shard_size=shard)
    return json.loads(index.read_text())["metadata"]["total_size"]


def run(loader: str, folder: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), loader, str(folder), str(threads)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{loader} failed:\n{out.stderr[-3000:]}")
    v = out.stdout.split()
    keys = ["before", "seconds", "touched_seconds", "peak_load", "peak", "params"]
    r = {k: float(x) for k, x in zip(keys, v)}
    r["dtypes"] = v[-1]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "glm41v-9b-width")
    ap.add_argument("--layers", type=int, default=2, help="text decoder layers (the 9B has 40)")
    ap.add_argument("--depth", type=int, default=2, help="vision blocks (the 9B has 24)")
    ap.add_argument("--shard", default="1GB", help="max shard size (the 9B's shards are about 5 GB)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-save", action="store_true", help="print only; do not write " + str(RESULTS.name))
    args = ap.parse_args()

    t0 = time.perf_counter()
    nbytes = write_checkpoint(args.folder, args.layers, args.depth, args.shard)
    shards = sorted(p.name for p in args.folder.glob("model-*.safetensors"))
    print(f"checkpoint {args.folder}: {nbytes / 1e9:.2f} GB in {len(shards)} shards "
          f"({time.perf_counter() - t0:.0f} s to prepare)", flush=True)
    runs = {"minglm4v": [], "minglm4v-read": [], "transformers": []}
    for _ in range(args.repeats):  # alternate, so that load from other processes falls on both alike
        for name in runs:
            runs[name].append(run(name, args.folder, args.threads))
            print(name, {k: v for k, v in runs[name][-1].items()}, flush=True)

    def best(name, key):
        return min(r[key] - (0 if "seconds" in key else r["before"]) for r in runs[name])

    import transformers

    lines = [
        "### Loading memory: 9B widths, a few layers",
        "",
        f"Synthetic checkpoint with the real GLM-4.1V-9B widths (text hidden 4096, vocabulary 151,552, vision width "
        f"1536) but {args.layers} text layers and {args.depth} vision blocks: "
        f"{runs['minglm4v'][0]['params'] / 1e9:.2f} B "
        f"parameters, **{nbytes / 1e9:.2f} GB** of bf16 tensors in {len(shards)} shards of at most {args.shard} plus "
        f"an index (the real one: 20.59 GB in 4 shards of about 5 GB). Each loader in a fresh process on this CPU "
        f"(torch {torch.__version__}, transformers {transformers.__version__}), files already in the page cache; "
        f"peak RSS (VmHWM) growth above the process's RSS after imports, best of {args.repeats} runs.",
        "",
        "| loader | load (s) | load + touch every weight (s) | peak RSS growth after load | × checkpoint | "
        "peak RSS growth after touching | × checkpoint | dtype |",
        "|---|---|---|---|---|---|---|---|",
    ]
    label = {"minglm4v": "`minglm4v.load` (mmap, default)", "minglm4v-read": "`minglm4v.load(mmap=False)`",
             "transformers": "`from_pretrained(dtype=bfloat16)`"}
    for name in runs:
        grow, touch = best(name, "peak_load"), best(name, "peak")
        lines.append(f"| {label[name]} | {best(name, 'seconds'):.2f} | {best(name, 'touched_seconds'):.2f} | "
                     f"{grow / 1e9:.2f} GB | {grow / nbytes:.2f} | {touch / 1e9:.2f} GB | {touch / nbytes:.2f} | "
                     f"{runs[name][0]['dtypes']} |")
    lines += [
        "",
        "By default minglm4v maps each shard copy-on-write and makes every parameter a view of its bytes (as "
        "transformers 5 does): loading takes a fraction of a second and the weights are read on first use, one copy "
        "shared with the page cache. `mmap=False` reads each tensor with `readinto` into its own `torch.empty` "
        "instead (memory the process owns; the time is then the real read). Either way the process holds the "
        "weights once (target: peak ≤ 1.15 × checkpoint bytes). With `device=\"cuda\"` the bytes go through one "
        "64 MiB pinned buffer to the GPU, so the CPU side stays near that buffer's size whatever the checkpoint.",
    ]
    publish("\n".join(lines) + "\n", RESULTS, save=not args.no_save)


if __name__ == "__main__":
    main()
