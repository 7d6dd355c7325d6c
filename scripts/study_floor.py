"""A lower bound on a finished study's time on this CPU: the linear-layer arithmetic of its extraction, export fit
and evaluations over the best rate this CPU's linear kernels reach.

    python scripts/study_floor.py RUN_DIR [--threads T] [--rows 128,512,2048] [--data-root DIR]

Counts, from a finished ``r1probe run`` folder (``runs/study``), the multiply-adds of the decoder's linear layers
(attention projections, MLP, and the output head where logits are computed) that the study cannot avoid, and
nothing else: no attention scores, no padding, the token prefix every prompt of a bench shares counted once per
bench, each generated token counted once as it is fed back (``len(tokens(reply)) - 1``, the reply re-tokenised),
the first logits at the last prompt position; teacher-forced NLL over prompt + solution with logits at the
solution; records a run-time plan took from the unedited model (``unchanged_from``) count nothing; the export's
read-vector fit is its fit data read up to the input of the fitted layer's MLP output projection, each
sequence's shared chat-template prefix once; the extraction and separability are their prompts through the deepest
layer they read. Stages not counted (the causal search, token budgets, the conditional plan's gate checks) are
listed with their measured seconds only.

The rate: every linear layer of block 0 and the output head of the loaded model (the kernel the study runs, e.g.
oneDNN with packed weights in float32), timed on ``[rows, in]`` inputs for each ``--rows``; the best rate over
those row counts is used, so the bound assumes every product of the study runs at the best batched rate.
Prints per stage the arithmetic, its floor at that rate, the measured seconds and their ratio, and the floor of
the counted stages against 20 minutes. A measurement aid: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def linear_flops(cfg) -> tuple[float, float, float]:
    """FLOPs per token of one decoder block's linear layers, of its attention projections + MLP input
    projections only (up to the MLP output projection's input), and of the output head:
    ``2·(h·q + 2·h·kv + q·h + 3·h·I)``, ``2·(h·q + 2·h·kv + q·h + 2·h·I)``, ``2·h·V``
    (``q = heads·head_dim``, ``kv = kv_heads·head_dim``)."""
    h, inter, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    attn = h * q + 2 * h * kv + q * h
    return 2.0 * (attn + 3 * h * inter), 2.0 * (attn + 2 * h * inter), 2.0 * h * vocab


def real_tokens(seqs) -> int:
    """Tokens of ``seqs`` with the prefix they all share counted once: ``Σ len − (n − 1)·prefix``."""
    from r1probe.models.prefix import shared_prefix

    return sum(len(x) for x in seqs) - (shared_prefix(seqs) * (len(seqs) - 1) if len(seqs) > 1 else 0)


def eval_flops(lm, folder: Path, per_layer: float, head: float, n_layers: int, data_root) -> tuple[float, dict]:
    """Linear-layer FLOPs of one variant's evaluation folder (see the module docstring)."""
    from r1probe.eval.benches import BENCHES
    from r1probe.eval.engines import HFEngine

    eng = HFEngine(lm)
    body = n_layers * per_layer
    total, counts = 0.0, {}
    for f in sorted(folder.glob("*.jsonl")):
        recs = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
        if not recs:
            continue
        name = recs[0]["bench"]
        if "nll" in recs[0]:
            bench = BENCHES[name]
            sol = {it.id: it.solution for it in bench.load(data_root)}
            run = [r for r in recs if not r.get("unchanged_from")]
            seqs = [lm.chat.encode(eng.format(r["prompt"], r.get("history"), close_think=True)) for r in run]
            ys = [len(lm.chat.encode(sol[r["id"]])) for r in run]
            tok = real_tokens(seqs) + sum(ys)
            fl = tok * body + sum(y + 1 for y in ys) * head
            counts[name] = {"records": len(recs), "scored_rows": len(run), "tokens": tok}
        elif any("reply" in r for r in recs):
            run = [r for r in recs if not r.get("unchanged_from") and "reply" in r]
            seqs = [lm.chat.encode(eng.format(r["prompt"], r.get("history"))) for r in run]
            gen = [max(0, len(lm.tokenizer(r["reply"], add_special_tokens=False)["input_ids"]) - 1) for r in run]
            ptok = real_tokens(seqs)
            fl = (ptok + sum(gen)) * body + (len(run) + sum(gen)) * head
            counts[name] = {"records": len(recs), "generated_rows": len(run), "prompt_tokens": ptok,
                            "fed_back_tokens": sum(gen)}
        else:
            print(f"  {folder.name}/{f.name}: kind not counted (neither replies nor NLL)")
            continue
        total += fl
    return total, counts


def fit_flops(lm, stage: dict, per_layer: float, upto: float, data_root) -> tuple[float, dict]:
    """Linear-layer FLOPs of the rank1-gate export's read-vector fit (its fit data up to the fitted layer's
    MLP output-projection input), from the export stage's ``stage.json``."""
    from r1probe.steering.fit_data import default_fit_data

    layer = int(stage["info"]["layer"])
    e = stage["inputs"]["edit"]
    harmful, harmless, recorded_root = stage["inputs"]["fit"]
    data_root = data_root or recorded_root
    data = default_fit_data(lm, harmful=harmful, harmless=harmless, data_root=data_root,
                            borderline=e.get("rank1_gate_borderline", 0),
                            extra_benign=tuple(e.get("rank1_gate_extra_benign") or ()))
    harm = [lm.chat.encode(lm.chat.format(t)) for t in data.harmful]
    depth = layer * per_layer + upto
    tok = real_tokens(harm) + real_tokens(data.benign)
    return tok * depth, {"layer": layer, "harmful": len(harm), "benign_sequences": len(data.benign), "tokens": tok}


def extract_flops(lm, folder: Path, per_layer: float) -> tuple[float, dict]:
    """Linear-layer FLOPs of the extraction: every prompt through the deepest extracted layer (its tokens from
    the store's rows), the chat template's shared prefix once."""
    from r1probe.models.prefix import shared_prefix

    m = json.loads((folder / "store" / "manifest.json").read_text())
    rows = [json.loads(x) for x in (folder / "store" / "rows.jsonl").read_text().splitlines() if x.strip()]
    pre = shared_prefix([lm.chat.encode(lm.chat.format(t)) for t in ("甲", "乙")])
    tok = sum(int(r["n_tokens"]) for r in rows) - pre * max(0, len(rows) - 1)
    depth = max(m["layers"]) + 1
    return tok * depth * per_layer, {"prompts": len(rows), "tokens": tok, "layers": depth}


def separability_flops(lm, folder: Path, per_layer: float, data_root) -> tuple[float, dict]:
    """Linear-layer FLOPs of the separability stage: each class's prompts through the deepest layer read
    (``resid_pre`` of layer L needs L blocks, ``resid_post`` L + 1), each class's shared prefix once."""
    from r1probe.analysis.separability import separability_classes

    st = json.loads((folder / "separability.json").read_text())["settings"]
    depth = max(st["layers"]) + (0 if st.get("site", "resid_pre") == "resid_pre" else 1)
    tok = sum(real_tokens([lm.chat.encode(lm.chat.format(it.text)) for it in items])
              for items in separability_classes(st["n"], data_root=data_root, seed=st.get("seed", 0)).values())
    return tok * depth * per_layer, {"tokens": tok, "layers": depth}


def kernel_rate(lm, rows: list[int], repeats: int = 10) -> tuple[float, dict]:
    """Best FLOP/s of block 0's linear layers + the output head, as loaded, over ``rows``."""
    mods = [m for m in lm.layout.layer(lm.model, 0).modules() if isinstance(m, torch.nn.Linear)]
    mods.append(lm.layout.lm_head(lm.model))
    dt = next(lm.model.parameters()).dtype
    out = {}
    with torch.inference_mode():
        for r in rows:
            xs = [torch.randn(r, m.in_features, dtype=dt) for m in mods]
            for m, x in zip(mods, xs):
                m(x)
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                for m, x in zip(mods, xs):
                    m(x)
                best = min(best, time.perf_counter() - t)
            fl = sum(2.0 * r * m.in_features * m.out_features for m in mods)
            out[r] = fl / best
    return max(out.values()), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rows", default="128,512,2048")
    ap.add_argument("--data-root", default=None, help="the benchmark data (default: what each stage recorded)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.models import load_model
    from r1probe.models.loader import machine

    store = a.run / "extract" / "store" / "manifest.json"
    if not store.exists():
        raise SystemExit(f"{a.run}: no extract/store/manifest.json (not a finished study folder)")
    man = json.loads(store.read_text())
    spec = man["model"]["model"]
    lm = load_model(spec, dtype=man["dtype"])
    cfg = lm.model.config
    per_layer, upto, head = linear_flops(cfg)
    n_layers = cfg.num_hidden_layers
    rate, rates = kernel_rate(lm, [int(x) for x in a.rows.split(",")])
    m = machine()
    print(f"model {spec} ({next(lm.model.parameters()).dtype}, {lm.provenance.get('linear_kernel')}); "
          f"CPU {m.get('cpu')}; torch threads {torch.get_num_threads()}")
    print("linear kernel rate: " + ", ".join(f"{r} rows {v / 1e9:.1f} GFLOP/s" for r, v in rates.items())
          + f"; bound uses {rate / 1e9:.1f}")
    stages = {}
    for st in sorted(a.run.rglob("stage.json")):
        d = json.loads(st.read_text())
        stages[d["stage"]] = (st.parent, d)

    def root(d: dict):
        return a.data_root or d.get("inputs", {}).get("data_root")

    floor_total, measured_total = 0.0, 0.0
    for name, (path, d) in stages.items():
        sec = float(d.get("seconds") or 0.0)
        if name.startswith("eval-"):
            fl, c = eval_flops(lm, path, per_layer, head, n_layers, root(d))
        elif name == "extract":
            fl, c = extract_flops(lm, path, per_layer)
        elif name == "separability":
            fl, c = separability_flops(lm, path, per_layer, root(d))
        elif name == "edit-rank1-gate":
            fl, c = fit_flops(lm, d, per_layer, upto, a.data_root)
        else:
            print(f"{name:22s} measured {sec:8.1f} s   (not counted)")
            continue
        fl_s = fl / rate
        floor_total += fl_s
        measured_total += sec
        print(f"{name:22s} measured {sec:8.1f} s   {fl / 1e12:7.2f} TFLOP  floor {fl_s:7.1f} s  "
              f"measured/floor {sec / fl_s:5.2f}   {json.dumps(c, ensure_ascii=False)}")
    all_s = sum(float(d.get("seconds") or 0.0) for _, d in stages.values())
    print(f"counted stages: floor {floor_total:.0f} s, measured {measured_total:.0f} s; every stage measured "
          f"{all_s:.0f} s; floor of the counted stages alone vs 20 minutes: {floor_total / 1200:.2f}x")


if __name__ == "__main__":
    main()
