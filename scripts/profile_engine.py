"""Where the generation engine's time goes: torch.profiler over one engine call on the embedded model.

    python scripts/profile_engine.py [N_PROMPTS] [ROWS] [--threads T]

N built-in Chinese prompts (half zh-harmful, half zh-harmless, as ``benchmarks/generate.py``), greedy, 64 new
tokens, ROWS rows in flight; prints the prompt and generated token counts, new tokens/s, and the operators by
self CPU time. A measurement aid, not a benchmark: it compares nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def main() -> None:
    from generate import MODEL, prompts
    from torch.profiler import ProfilerActivity, profile

    from r1probe.models import load_model
    from r1probe.models.engine import SamplingParams, generate

    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=128)
    ap.add_argument("rows", type=int, nargs="?", default=128)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = load_model(MODEL)
    texts = [lm.chat.format(p) for p in prompts(a.n, 0, None)]
    print(f"{str(next(lm.model.parameters()).dtype)} ({lm.provenance.get('linear_kernel')}); prompt tokens "
          f"{sum(len(lm.chat.encode(t)) for t in texts)}", flush=True)
    generate(lm, texts[:8], SamplingParams(max_new_tokens=4), batch_size=8)  # warm-up
    t = time.time()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        comps = generate(lm, texts, SamplingParams(max_new_tokens=64), batch_size=a.rows)
    dt = time.time() - t
    new = sum(len(c[0].token_ids) for c in comps)
    print(f"wall {dt:.1f} s, new tokens {new}: {new / dt:.1f} tokens/s (under the profiler)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
