"""Decode speed of weight-only int8 / int4 against fp32 and bf16, and transformers, on a bandwidth-bound model.

A random GLM-4.1V with text width 1024 x 12 layers and a 32,000-token vocabulary (about 200 M parameters; vision
tower minimal) is saved by transformers' `save_pretrained` and loaded by both libraries. Decoding one token at
batch 1 reads every decoder and lm_head weight once, so tokens/s x weight bytes per token is the bandwidth the path
achieves; the machine's read bandwidth is measured in the same run (a sum over a 1 GiB tensor, same thread count).
Rows: minglm4v fp32, bf16, int8 and int4 (groups of 128; compute in bf16) with `generate_static`, transformers
fp32 and bf16 with `generate`; rate = (n - 1) / (t(n) - t(1)), medians of alternating runs.
Writes benchmarks/results/quant.md (rendered into the README by scripts/readme.py).

    .venv/bin/python benchmarks/bench_quant.py [--repeats 3] [--threads 1] [--new 17] [--no-save]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from _common import median_times, publish  # noqa: E402
from oracle import save_oracle  # noqa: E402

import minglm4v  # noqa: E402
from minglm4v.config import VisionConfig, tiny  # noqa: E402
from minglm4v.fast import generate_static  # noqa: E402
from minglm4v.quant import quantize_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "quant.md"


def bench_config():
    base = tiny()
    text = dataclasses.replace(base.text_config, hidden_size=1024, num_hidden_layers=12, num_attention_heads=16,
                               num_key_value_heads=2, intermediate_size=2816, vocab_size=32000,
                               mrope_section=(4, 6, 6))
    vision = VisionConfig(depth=1, hidden_size=64, num_heads=2, intermediate_size=128, out_hidden_size=1024)
    return dataclasses.replace(base, text_config=text, vision_config=vision)


def read_bytes(model) -> int:
    """Bytes a decode step reads: every tensor of the decoder layers, the final norm and lm_head (one storage
    counted once: int4's scales and zeros are views of one packed tensor), plus one embedding row."""
    lm = model.language_model if hasattr(model, "language_model") else model.model.language_model
    head = model.lm_head
    seen = {}
    for module in (lm.layers, lm.norm, head):
        for t in list(module.parameters()) + list(module.buffers()):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values()) + lm.embed_tokens.weight[0].numel() * lm.embed_tokens.weight.element_size()


def read_bandwidth(repeats: int) -> float:
    """Bytes/s of a sum over a 1 GiB float32 tensor (far larger than any cache)."""
    buf = torch.ones(1 << 28)
    t = median_times([lambda: buf.sum()], repeats + 2)[0]
    return buf.numel() * 4 / t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new", type=int, default=17, help="new tokens per timed call (n)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    start = time.perf_counter()
    cfg = bench_config()
    folder = Path(tempfile.mkdtemp(prefix="minglm4v-bench-quant-"))
    save_oracle(cfg, folder, seed=0)
    V = cfg.text_config.vocab_size
    prompt = torch.randint(20, V, (1, 16), generator=torch.Generator().manual_seed(0))
    kw = dict(eos_token_id=[V - 1], pad_token_id=0)

    paths = {}  # name -> (call(n), bytes read per token)
    for name, dtype, scheme in (("minglm4v fp32", torch.float32, None), ("minglm4v bf16", torch.bfloat16, None),
                                ("minglm4v int8", torch.bfloat16, "int8"), ("minglm4v int4", torch.bfloat16, "int4")):
        m = minglm4v.load(folder, dtype=dtype, mmap=False)
        if scheme:
            quantize_model(m, scheme, 128)
        paths[name] = (lambda n, m=m: generate_static(m, prompt, max_new_tokens=n, **kw), read_bytes(m))
    for name, dtype in (("transformers fp32", torch.float32), ("transformers bf16", torch.bfloat16)):
        h = transformers.Glm4vForConditionalGeneration.from_pretrained(folder, dtype=dtype).eval()
        paths[name] = (lambda n, h=h: h.generate(input_ids=prompt, max_new_tokens=n, min_new_tokens=n,
                                                 do_sample=False, **kw), read_bytes(h))
    n_params = sum(p.numel() for p in minglm4v.load(folder).parameters())
    with torch.no_grad():
        for name, (call, _) in paths.items():
            out = call(args.new)
            assert out.shape[1] == prompt.shape[1] + args.new, f"{name}: a stop id came up; the rate would be wrong"
        bw = read_bandwidth(args.repeats)
        calls = [lambda c=c, n=n: c(n) for c, _ in paths.values() for n in (1, args.new)]
        t = median_times(calls, args.repeats)
        bw = (bw + read_bandwidth(args.repeats)) / 2  # before and after: the machine is shared
    rate = {k: (args.new - 1) / (t[2 * i + 1] - t[2 * i]) for i, k in enumerate(paths)}

    bf16 = rate["minglm4v bf16"]
    hf_best = max(rate["transformers fp32"], rate["transformers bf16"])
    lines = [
        "### Weight-only int8 / int4: decode speed on a bandwidth-bound model",
        "",
        f"`python benchmarks/bench_quant.py`: a random GLM-4.1V with text width 1024 × 12 layers, vocabulary 32,000 "
        f"({n_params / 1e6:.0f} M parameters), saved by transformers and loaded by both libraries; greedy decode at "
        f"batch 1, {args.new - 1} tokens after the first of a 16-token prompt; minglm4v with `generate_static`, "
        f"int8 / int4 (groups of 128) computing in bf16. {platform.machine()} CPU, {args.threads} thread(s), torch "
        f"{torch.__version__}, transformers {transformers.__version__}; median of {args.repeats} alternating runs "
        "on a machine shared with other jobs, so expect ±20 %. Read bandwidth of this machine, measured in the same "
        f"run (sum over 1 GiB, same threads): **{bw / 1e9:.1f} GB/s**. Achieved bandwidth = weight bytes read per "
        "token × tokens/s.",
        "",
        "| path | weight MB read per token | tokens/s | × minglm4v bf16 | achieved GB/s | × measured bandwidth |",
        "|---|---|---|---|---|---|",
    ]
    for k, (_, nbytes) in paths.items():
        lines.append(f"| {k} | {nbytes / 1e6:.0f} | {rate[k]:.1f} | {rate[k] / bf16:.2f} | "
                     f"{nbytes * rate[k] / 1e9:.1f} | {nbytes * rate[k] / bw:.2f} |")
    checks = [("int8 ≥ 1.6 × minglm4v bf16", rate["minglm4v int8"] / bf16, 1.6),
              ("int4 ≥ 2.5 × minglm4v bf16", rate["minglm4v int4"] / bf16, 2.5),
              ("int4 ≥ 2 × transformers' fastest", rate["minglm4v int4"] / hf_best, 2.0)]
    checks += [(f"{k} ≥ 0.70 × measured bandwidth", nbytes * rate[k] / bw, 0.70) for k, (_, nbytes) in paths.items()]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {got:.2f} | {'yes' if got >= want else '**no**'} |" for what, got, want in checks]
    lines += ["", f"(benchmark wall time {time.perf_counter() - start:.0f} s)", ""]
    publish("\n".join(lines), RESULTS, save=not args.no_save)


if __name__ == "__main__":
    main()
