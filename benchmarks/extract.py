"""Extraction speed and memory: r1probe against the common approach and a bare forward pass.

Runs in one process on the embedded model (at each --dtype) and the same N built-in prompts (half
zh-harmful, half zh-harmless, seeded sample), capturing every layer at the post-instruction
positions:

  (a) r1probe native: length-sorted left-padded batches (--batch-size auto), decoder only (no
      lm_head), the prefix every prompt shares (the chat template's system prompt) computed once,
      only the post-instruction positions kept, shards streamed to disk;
  (b) the common approach: unsorted batches of 16, output_hidden_states=True on the full model
      (as repeng and most notebooks do), post positions sliced from every hidden state;
  (c) a bare body-only forward pass (decoder blocks and final norm, no lm_head) with no capture, on
      the same length-sorted batches as (a), whole prompts: the limit of a forward pass over every
      prompt token (c3: the full forward with lm_head on those batches; c2: the full forward on
      unsorted batches of 16);
  (d) TransformerLens 4: TransformerBridge + run_with_cache(names_filter=resid_post), batches of 16;
  (e) nnsight 0.8: TransformersModel + trace saving every layer's output, batches of 16.

Prints prompts/s for each and the ratios a/b and a/c, then the peak RSS while extracting 1,000
versus 4,000 prompts (each in a fresh subprocess, sampled from /proc during extraction).

    python benchmarks/extract.py                       # everything (long on 2 CPU cores)
    python benchmarks/extract.py --n 64 --skip-rss     # quick look
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS every 20 ms in a thread; ``peak`` is the maximum seen."""

    def __enter__(self):
        self.peak, self._stop = rss_mb(), False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def prompt_sets(n: int, seed: int = 0):
    from r1probe.data import load_prompt_set

    return [load_prompt_set("builtin:zh-harmful", limit=n // 2, seed=seed),
            load_prompt_set("builtin:zh-harmless", limit=n - n // 2, seed=seed)]


def encode(lm, sets):
    return [lm.chat.encode(lm.chat.format(p.text)) for s in sets for p in s]


def batches_unsorted(encs, size=16):
    return [encs[i:i + size] for i in range(0, len(encs), size)]


def pad(lm, seqs):
    from r1probe.extract.batching import left_pad, position_ids

    ids, mask = left_pad(seqs, lm.tokenizer.pad_token_id)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    return ids, mask, position_ids(mask)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # a GPU runs ahead of the host: time the work, not its launch


def timed(fn):
    gc.collect()
    _sync()
    t = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t


def run_r1probe(lm, sets, out, backend="native"):
    from r1probe.extract import extract_activations

    shutil.rmtree(out, ignore_errors=True)
    st = extract_activations(lm, sets, layers="all", positions="post", out_dir=out, backend=backend,
                             batch_size="auto", progress=False)
    return st


@torch.inference_mode()
def run_common(lm, encs, P):
    """(b) unsorted batches of 16, full model with output_hidden_states, slice the post positions."""
    keep = []
    for b in batches_unsorted(encs):
        ids, mask, _ = pad(lm, b)
        out = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        keep.append(torch.stack([h[:, -P:].float() for h in out.hidden_states[1:]], 1))
    return keep


@torch.inference_mode()
def run_bare(lm, batches):
    for b in batches:
        ids, mask, pos = pad(lm, b)
        lm.model(input_ids=ids, attention_mask=mask, position_ids=pos)


@torch.inference_mode()
def run_body(lm, batches):
    """The decoder body only (no final norm's consumer, no lm_head), no capture: the physical limit of (a)."""
    from r1probe.extract.read import base_model

    body = base_model(lm)
    for b in batches:
        ids, mask, pos = pad(lm, b)
        body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)


def sorted_batches(lm, encs):
    """The batches r1probe native forms (--batch-size auto), as token lists."""
    from r1probe.extract.batching import auto_token_budget, plan_batches, plan_shards
    from r1probe.models.generate import forward_overhead

    lengths = [len(e) for e in encs]
    out = []
    for shard in plan_shards(lengths, 256):
        out += [[encs[i] for i in b] for b in plan_batches(shard, lengths, None, auto_token_budget(lm, max(lengths)),
                                                            overhead=forward_overhead(lm.device))]
    return out


@torch.inference_mode()
def run_tlens(lm, encs, P):
    from r1probe.extract.backends.tlens import _Snapshot
    from transformer_lens.model_bridge import TransformerBridge

    snap = _Snapshot(lm.model)
    try:
        bridge = TransformerBridge.boot_transformers(lm.source, hf_model=lm.model, tokenizer=lm.tokenizer,
                                                     device="cpu", dtype=lm.dtype)
        names = [f"blocks.{i}.hook_resid_post" for i in range(lm.layout.n_layers)]
        keep = []
        for b in batches_unsorted(encs):
            ids, mask, _ = pad(lm, b)
            _, cache = bridge.run_with_cache(ids, attention_mask=mask, names_filter=names, return_cache_object=False)
            keep.append(torch.stack([v[:, -P:].float() for v in cache.values()], 1))
        return keep
    finally:
        snap.restore()
        lm.tokenizer.padding_side = "left"


def run_nnsight(lm, encs, P):
    from r1probe.extract.backends import nnsight_backend  # noqa: F401 (a trace must live in a source file)
    import nnsight
    from nnsight.modeling.transformers import TransformersModel

    m = TransformersModel(lm.model, tokenizer=lm.tokenizer)
    n = lm.layout.n_layers
    keep = []
    with torch.inference_mode():
        for b in batches_unsorted(encs):
            ids, mask, _ = pad(lm, b)
            with m.trace({"input_ids": ids, "attention_mask": mask}):
                outs = nnsight.save([m.model.layers[i].output[:, -P:] for i in range(n)])
            keep.append(torch.stack([o.float() for o in outs], 1))
    lm.tokenizer.padding_side = "left"
    return keep


def rss_worker(n: int, layers: str, sites: str, out: str) -> None:
    """Extract n prompts (cycled built-ins, short system prompt) and print RSS before / peak during."""
    from r1probe.data.prompts import Prompt, PromptSet
    from r1probe.extract import extract_activations
    from r1probe.models import load_model

    lm = load_model(MODEL)
    base = [p for s in prompt_sets(1614) for p in s]
    rows = [Prompt(f"{base[i % len(base)].id}#{i}", base[i % len(base)].text[:24] + f" ({i})",
                   base[i % len(base)].label) for i in range(n)]
    sets = [PromptSet(f"cycled{n}", rows)]
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    with PeakRSS() as pk:
        st = extract_activations(lm, sets, layers=layers, sites=sites, positions="post", out_dir=out,
                                 system="", batch_size="auto", progress=False)
    secs = time.perf_counter() - t
    size = sum(p.stat().st_size for p in st.shard_paths()) / 2**20
    print(json.dumps({"n": n, "rss_before_mb": round(before, 1), "rss_peak_mb": round(pk.peak, 1),
                      "store_mb": round(size, 1), "seconds": round(secs, 1)}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="prompts for the speed comparison (default 256)")
    ap.add_argument("--methods", default="a,b,c,c2,d,e", help="which of a,b,c,c2,c3,d,e to run")
    ap.add_argument("--n-libs", type=int, default=None,
                    help="prompts for (d) TransformerLens and (e) nnsight (default: --n)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the methods in interleaved rounds and keep each one's best time (noisy machines)")
    ap.add_argument("--dtype", default="auto",
                    help="model dtype(s) for the speed comparison, comma-separated (e.g. bfloat16,float32; default auto)")
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--rss-sizes", default="1000,4000")
    ap.add_argument("--rss-layers", default="0-3", help="layers for the RSS runs (default 0-3, all sites)")
    ap.add_argument("--rss-sites", default="all")
    ap.add_argument("--rss-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_worker:
        return rss_worker(args.rss_worker, args.rss_layers, args.rss_sites, args.out)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from r1probe.models import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for dtype in [d.strip() for d in args.dtype.split(",") if d.strip()]:
        speed(args, methods, load_model(MODEL, dtype=dtype))
        gc.collect()
    if args.skip_rss:
        return
    rss(args)


def speed(args, methods, lm) -> None:
    tmp = tempfile.mkdtemp(prefix="r1probe-bench-")
    sets = prompt_sets(args.n)
    encs = encode(lm, sets)
    n = len(encs)
    P = len(lm.chat.post_instruction_positions(lm.chat.format("你好")))
    lengths = [len(e) for e in encs]
    print(f"model {MODEL} ({lm.layout.n_layers} layers, d={lm.layout.d_model}, {str(lm.dtype)[6:]}), "
          f"torch threads {torch.get_num_threads()}, {n} prompts (tokens min/mean/max "
          f"{min(lengths)}/{sum(lengths) / n:.0f}/{max(lengths)}), all layers x {P} post-instruction positions")
    res: dict[str, tuple[float, int]] = {}
    nl = min(args.n_libs or n, n)
    lib_encs = encs[:nl] if nl == n else encode(lm, prompt_sets(nl))
    labels = {"a": "r1probe native (sorted, no lm_head, positions only, streamed)",
              "b": "common: unsorted bs16 + output_hidden_states",
              "c": "bare body-only forward (no lm_head), same sorted batches as (a)",
              "c3": "bare full forward (with lm_head), same sorted batches as (a)",
              "c2": "bare full forward, unsorted bs16",
              "d": "TransformerLens run_with_cache, bs16",
              "e": "nnsight trace, bs16"}
    best: dict[str, tuple[float, int]] = {}
    for rnd, m in [(r, m) for r in range(args.rounds) for m in methods]:
        if m == "a":
            res[m] = (timed(lambda: run_r1probe(lm, sets, os.path.join(tmp, "a"))), n)
        elif m == "b":
            res[m] = (timed(lambda: run_common(lm, encs, P)), n)
        elif m == "c":
            bs = sorted_batches(lm, encs)
            res[m] = (timed(lambda: run_body(lm, bs)), n)
        elif m == "c3":
            bs = sorted_batches(lm, encs)
            res[m] = (timed(lambda: run_bare(lm, bs)), n)
        elif m == "c2":
            res[m] = (timed(lambda: run_bare(lm, batches_unsorted(encs))), n)
        elif m == "d":
            res[m] = (timed(lambda: run_tlens(lm, lib_encs, P)), nl)
        elif m == "e":
            res[m] = (timed(lambda: run_nnsight(lm, lib_encs, P)), nl)
        secs, k = res[m]
        if m not in best or secs < best[m][0]:
            best[m] = (secs, k)
        tag = f" [round {rnd + 1}]" if args.rounds > 1 else ""
        print(f"  ({m:>2}) {labels[m]:<62s} {k / secs:7.2f} prompts/s  ({secs:.1f} s for {k}){tag}", flush=True)
    if args.rounds > 1:
        print(f"best of {args.rounds} rounds: " + ", ".join(f"({m}) {k / s:.2f}" for m, (s, k) in best.items()))
    ps = {m: k / s for m, (s, k) in best.items()}
    if "a" in ps and "b" in ps:
        print(f"a/b = {ps['a'] / ps['b']:.2f}  (target >= 3.0)")
    if "a" in ps and "c" in ps:
        print(f"a/c = {ps['a'] / ps['c']:.2f}  (target >= 0.95; bare forward on the same sorted batches)")
    if "a" in ps and "c2" in ps:
        print(f"a/c2 = {ps['a'] / ps['c2']:.2f}  (bare forward on unsorted batches of 16)")
    shutil.rmtree(tmp, ignore_errors=True)


def rss(args) -> None:
    peaks = {}
    for size in [int(s) for s in args.rss_sizes.split(",")]:
        out = tempfile.mkdtemp(prefix="r1probe-rss-")
        try:
            r = subprocess.run([sys.executable, __file__, "--rss-worker", str(size), "--rss-layers", args.rss_layers,
                                "--rss-sites", args.rss_sites, "--out", os.path.join(out, "s")],
                               capture_output=True, text=True, check=True)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        info = json.loads(r.stdout.strip().splitlines()[-1])
        peaks[size] = info
        print(f"RSS {size:>5} prompts (layers {args.rss_layers}, sites {args.rss_sites}, short prompts): "
              f"before {info['rss_before_mb']:.0f} MiB, peak during extraction {info['rss_peak_mb']:.0f} MiB, "
              f"store {info['store_mb']:.0f} MiB on disk, {info['seconds']:.0f} s", flush=True)
    if len(peaks) == 2:
        (s1, i1), (s2, i2) = sorted(peaks.items())
        growth = (i2["rss_peak_mb"] - i1["rss_peak_mb"]) / i1["rss_peak_mb"]
        print(f"peak RSS growth {s1} -> {s2} prompts: {100 * growth:+.1f}%  (target < 10%; the store grew "
              f"{i2['store_mb'] - i1['store_mb']:.0f} MiB)")


if __name__ == "__main__":
    main()
