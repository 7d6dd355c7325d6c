"""The causal search: one candidate at a time (``fast=False``) against the fast search, same grid.

Extracts a small store from the embedded model (``--n-train`` built-in prompts per class, the grid's
layers, positions -1 and -2), fits the study's candidates (lda directions), then runs
``select_direction`` twice on the same candidates and validation prompts with the study's search
settings (``r1probe run``'s probe defaults: lookahead bypass, affine-downstream ablation, induce by
generation): the per-candidate loop and the fast search (several candidates per forward pass,
unsteered prefixes computed once, pruning of scores that cannot change the choice). Prints both
times (wall and process CPU time: on a shared machine the CPU time is the steadier measure), the
ratio and whether the chosen cell is the same.

    OMP_NUM_THREADS=1 python benchmarks/probe_search.py --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=32, help="training prompts per class for the store")
    ap.add_argument("--n-val", type=int, default=None, help="validation prompts per class (default: the study's)")
    ap.add_argument("--layers", default="6,10,14,18")
    ap.add_argument("--positions", default="-1,-2")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--max-rows", type=int, default=64, help="rows per forward pass of the fast search")
    ap.add_argument("--verbose", action="store_true", help="print the search's progress lines")
    ap.add_argument("--order", default="old,new", help="which runs, in which order (old, new, new-noprune)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from r1probe.data import load_prompt_set
    from r1probe.extract import extract_activations
    from r1probe.extract.store import ActivationStore
    from r1probe.models import load_model
    from r1probe.pipeline.settings import ProbeSettings
    from r1probe.probes.api import _val_prompts, train_probes
    from r1probe.probes.select import select_direction

    p = ProbeSettings(**({"n_val": args.n_val} if args.n_val else {}))
    cfg = p.select_config()
    layers = [int(x) for x in args.layers.split(",")]
    positions = [int(x) for x in args.positions.split(",")]
    lm = load_model(MODEL)
    tmp = tempfile.mkdtemp(prefix="r1probe-search-")
    try:
        sets = [load_prompt_set("builtin:zh-harmful", split="train", limit=args.n_train, seed=0),
                load_prompt_set("builtin:zh-harmless", split="train", limit=args.n_train, seed=0)]
        extract_activations(lm, sets, layers=layers, positions=positions, out_dir=os.path.join(tmp, "store"),
                            progress=False)
        cells, tensors = train_probes(ActivationStore(os.path.join(tmp, "store")), estimators=["mean_diff", "lda"],
                                      layers=layers, positions=positions, site="resid_post")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cands = {k: {"layer": c["layer"], "pos": c["pos"], "direction": tensors.get(f"lda.{k}"),
                 "rank": c.get("separation") if c.get("separation") is not None
                 and math.isfinite(c["separation"]) else -1e9,
                 "auroc": ((c.get("estimators") or {}).get("mean_diff") or {}).get("auroc")} for k, c in cells.items()}
    hv = _val_prompts("builtin:zh-harmful", "val", cfg.n_val, 0)
    nv = _val_prompts("builtin:zh-harmless", "val", cfg.n_val, 0)
    ref = _val_prompts("builtin:zh-harmless", "train", cfg.n_reference, 0)
    print(f"model {MODEL} ({str(lm.dtype)[6:]}), torch threads {torch.get_num_threads()}, {len(cands)} candidates "
          f"(layers {layers} x positions {positions}), {cfg.n_val} validation prompts per class; search settings: "
          f"score {cfg.score}, ablation {cfg.ablation}, induce {cfg.induce_score} ({cfg.gen_tokens} tokens), "
          f"kl_max {cfg.kl_max}, induce_min {cfg.induce_min}, verify_top {cfg.verify_top}", flush=True)
    runs = {"old": dict(fast=False), "new": dict(fast=True, prune=True, max_rows=args.max_rows),
            "new-noprune": dict(fast=True, prune=False, max_rows=args.max_rows)}
    res = {}
    for name in [x for x in args.order.split(",") if x]:
        t, c = time.perf_counter(), time.process_time()
        say = (lambda m: print(f"    {time.perf_counter() - t:7.1f} s  {m}", flush=True)) if args.verbose else None
        r = select_direction(lm, cands, hv, nv, cfg, site="resid_post", reference=ref, progress=say, **runs[name])
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        res[name] = (secs, r, cpu)
        print(f"  {name:<12s} {secs:7.1f} s wall, {cpu:7.1f} s CPU  chosen {r['chosen']}  ({r['reason']})", flush=True)
        for k, s in r["scores"].items():
            print(f"      {k:<14s} " + "  ".join(f"{m} {s[m]:.4f}" for m in ("bypass", "induce", "kl", "kl_at_least")
                                              if isinstance(s.get(m), float)) + (f"  [{s['filtered']}]"
                                                                                  if "filtered" in s else ""))
    if "old" in res:
        for name in res:
            if name != "old":
                print(f"{name}/old speed: x{res['old'][0] / res[name][0]:.2f} wall, x{res['old'][2] / res[name][2]:.2f} "
                      f"CPU time  (target >= 5), same chosen cell: {res[name][1]['chosen'] == res['old'][1]['chosen']}")


if __name__ == "__main__":
    main()
