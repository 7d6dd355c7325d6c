"""A/B of glibc's mmap threshold on forward and generation speed (``r1probe.extract.heap``).

Each mode runs in a fresh subprocess (a threshold, once set, cannot be unset in a process), in
interleaved rounds, on the embedded model at the hardware's dtype:

  default   glibc's dynamic mmap threshold (what a process gets without r1probe.extract.heap)
  pinned    mallopt(M_MMAP_THRESHOLD, 1 MiB) for the whole process (blocks >= 1 MiB mapped per allocation)
  restored  pinned at 1 MiB, then ``heap.release_threshold()`` (mmap threshold 32 MiB, glibc's ceiling of the
            dynamic one, trim threshold 64 MiB): what later stages see after ``heap.extraction_heap``

Measures the body forward pass (batches of 16 x 64 tokens, prompt tokens/s) and greedy generation
(batch 8, 32 new tokens, plain ``model.generate``, new tokens/s), best of ``--repeats`` per subprocess.

    OMP_NUM_THREADS=1 python benchmarks/heap.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"
MODES = ("default", "pinned", "restored")


def worker(mode: str, repeats: int, threads: int) -> dict:
    from r1probe.extract import heap

    if mode in ("pinned", "restored"):
        assert heap.pin_mmap_threshold()
    import torch

    torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from r1probe.models import load_model

    lm = load_model(MODEL)
    if mode == "restored":  # as after an extraction stage that pinned and then let go
        ids = torch.randint(100, 20000, (16, 64))
        with torch.inference_mode():
            lm.model.model(input_ids=ids)
        assert heap.release_threshold()
    g = torch.Generator().manual_seed(0)
    fwd_ids = torch.randint(100, 20000, (16, 64), generator=g)
    gen_ids = torch.randint(100, 20000, (8, 48), generator=g)
    out = {"mode": mode, "dtype": str(lm.dtype).replace("torch.", ""), "threads": torch.get_num_threads()}
    with torch.inference_mode():
        lm.model.model(input_ids=fwd_ids)  # warm-up
        ts = [_timed(lambda: lm.model.model(input_ids=fwd_ids)) for _ in range(repeats)]
        out["forward_tok_s"] = fwd_ids.numel() / min(t[0] for t in ts)
        out["forward_tok_cpu_s"] = fwd_ids.numel() / min(t[1] for t in ts)
        kw = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=lm.tokenizer.eos_token_id)
        lm.model.generate(input_ids=gen_ids[:, :8], max_new_tokens=4, do_sample=False,
                          pad_token_id=lm.tokenizer.eos_token_id)  # warm-up
        ts = [_timed(lambda: lm.model.generate(input_ids=gen_ids, **kw)) for _ in range(repeats)]
        out["generate_tok_s"] = gen_ids.shape[0] * 32 / min(t[0] for t in ts)
        out["generate_tok_cpu_s"] = gen_ids.shape[0] * 32 / min(t[1] for t in ts)
    return out


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``; with one thread on a shared machine the CPU time
    is the steadier measure (it still includes the page faults of freshly mapped blocks)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every mode (best kept)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats inside each subprocess (best kept)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.threads)))
        return
    modes = [m for m in args.modes.split(",") if m]
    best: dict[str, dict] = {}
    for r in range(args.rounds):
        for m in modes:
            p = subprocess.run([sys.executable, __file__, "--worker", m, "--repeats", str(args.repeats),
                                "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"round {r + 1} {m:<9s} " + _line(res) + f"  ({res['dtype']}, {res['threads']} threads)", flush=True)
            b = best.setdefault(m, dict(res))
            for k in KEYS:
                b[k] = max(b[k], res[k])
    print("best of rounds:")
    for m, b in best.items():
        print(f"  {m:<9s} " + _line(b))
    if "default" in best:
        d = best["default"]
        for m in best:
            if m != "default":
                print(f"{m}/default: " + ", ".join(f"{k} x{best[m][k] / d[k]:.3f}" for k in KEYS))


KEYS = ("forward_tok_s", "forward_tok_cpu_s", "generate_tok_s", "generate_tok_cpu_s")


def _line(r: dict) -> str:
    return (f"forward {r['forward_tok_s']:7.1f} tok/s ({r['forward_tok_cpu_s']:7.1f} per CPU s)   generate "
            f"{r['generate_tok_s']:6.2f} new tok/s ({r['generate_tok_cpu_s']:6.2f} per CPU s)")


if __name__ == "__main__":
    main()
