"""MKL against oneDNN (packed weights) for the float32 linear layers, on the machine at hand.

Loads the embedded model once in float32 and switches its linear layers between the two kernels of
:mod:`r1probe.models.kernels` (``mkl``: plain ``F.linear``; ``onednn``: oneDNN on packed weights), in
``--rounds`` interleaved rounds on the same built-in Chinese prompts (zh-harmful and zh-harmless,
seeded sample):

  forward:  the decoder body on batches of ``--batch`` prompts padded to ``--tokens`` tokens
            (the shape of extraction and scoring);
  generate: r1probe's engine, greedy, ``--new-tokens`` new tokens for ``--n`` prompts (decoding steps).

Prints the best rate of each kernel, the ratio onednn / mkl, how many greedy replies are the same token
for token under both kernels (they sum in different orders, so a near-tie may go the other way), the
kernel ``auto`` picks here and why, and the CPU it ran on.

    python benchmarks/kernels.py
    python benchmarks/kernels.py --n 32 --new-tokens 32 --rounds 1     # quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def _dtype_bench():
    spec = importlib.util.spec_from_file_location("bench_dtype", Path(__file__).with_name("dtype.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_engine(lm, texts, new_tokens: int, batch_size: int | None) -> tuple[float, list[list[int]]]:
    from r1probe.models.engine import SamplingParams, generate

    t0 = time.perf_counter()
    out = generate(lm, [lm.chat.format(t) for t in texts], SamplingParams(max_new_tokens=new_tokens),
                   batch_size=batch_size)
    dt = time.perf_counter() - t0
    ids = [c[0].token_ids for c in out]
    return sum(len(x) for x in ids) / dt, ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="prompts generated from")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=None, help="engine rows in flight (default: the engine's)")
    ap.add_argument("--batch", type=int, default=16, help="forward batch")
    ap.add_argument("--tokens", type=int, default=64, help="padded prompt length of the forward timing")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.models import kernels, load_model

    D = _dtype_bench()
    texts = D.prompts(a.n)
    lm = load_model(MODEL, dtype="float32", device="cpu")
    auto = (lm.provenance.get("linear_kernel"), lm.provenance.get("linear_kernel_reason"))
    best = {k: [0.0, 0.0] for k in ("mkl", "onednn")}
    ids = {}
    for r in range(a.rounds):
        for k in ("mkl", "onednn"):
            kernels.apply(lm.model, "cpu", torch.float32, setting=k)
            fwd = D.time_forward(lm, texts[:max(a.batch, 16)], a.tokens, a.batch, 1)
            gen, ids[k] = time_engine(lm, texts, a.new_tokens, a.batch_size)
            best[k] = [max(best[k][0], fwd), max(best[k][1], gen)]
            print(f"round {r + 1} {k:6s} forward {fwd:8.1f} tokens/s   engine {gen:6.1f} new tokens/s", flush=True)
    m, o = best["mkl"], best["onednn"]
    same = sum(x == y for x, y in zip(ids["mkl"], ids["onednn"]))
    print(f"best: mkl forward {m[0]:.1f}, engine {m[1]:.1f}; onednn forward {o[0]:.1f}, engine {o[1]:.1f}")
    print(f"ratio onednn/mkl: forward {o[0] / m[0]:.2f}, engine {o[1] / m[1]:.2f}")
    print(f"greedy replies identical under both kernels: {same}/{len(texts)}")
    print(f"auto picks {auto[0]}: {auto[1]}")
    print(f"CPU: {D.cpu_line()}")


if __name__ == "__main__":
    main()
