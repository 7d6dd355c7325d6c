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


def shared_len(seqs) -> int:
    from r1probe.models.prefix import shared_prefix

    return shared_prefix(seqs) if len(seqs) > 1 else 0


def eval_flops(lm, folder: Path, per_layer: float, head: float, n_layers: int) -> tuple[float, dict]:
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
            sol = {it.id: it.solution for it in bench.load(None)}
            run = [r for r in recs if not r.get("unchanged_from")]
            seqs = [lm.chat.encode(eng.format(r["prompt"], r.get("history"), close_think=True)) for r in run]
            ys = [len(lm.chat.encode(sol[r["id"]])) for r in run]
            pre = shared_len(seqs)
            tok = sum(len(s) + y for s, y in zip(seqs, ys)) - pre * max(0, len(seqs) - 1)
            fl = tok * body + sum(y + 1 for y in ys) * head
            counts[name] = {"records": len(recs), "scored_rows": len(run), "tokens": tok}
        elif "reply" in recs[0] or any("reply" in r for r in recs):
            run = [r for r in recs if not r.get("unchanged_from") and "reply" in r]
            seqs = [lm.chat.encode(eng.format(r["prompt"], r.get("history"))) for r in run]
            gen = [max(0, len(lm.tokenizer(r["reply"], add_special_tokens=False)["input_ids"]) - 1) for r in run]
            pre = shared_len(seqs)
            ptok = sum(len(s) for s in seqs) - pre * max(0, len(seqs) - 1)
            fl = (ptok + sum(gen)) * body + (len(run) + sum(gen)) * head
            counts[name] = {"records": len(recs), "generated_rows": len(run), "prompt_tokens": ptok,
                            "fed_back_tokens": sum(gen)}
        else:
            print(f"  {folder.name}/{f.name}: kind not counted (neither replies nor NLL)")
            continue
        total += fl
    return total, counts


def fit_flops(lm, run: Path, per_layer: float, upto: float, data_root) -> tuple[float, dict] | None:
    """Linear-layer FLOPs of the rank1-gate export's read-vector fit (its fit data up to the fitted layer's
    MLP output-projection input)."""
    from r1probe.steering.fit_data import default_fit_data

    st = run / "exports" / "rank1-gate" / "stage.json"
    if not st.exists():
        return None
    d = json.loads(st.read_text())
    layer = int(d["info"]["layer"])
    e = d["inputs"]["edit"]
    harmful, harmless = d["inputs"]["fit"][:2]
    data = default_fit_data(lm, harmful=harmful, harmless=harmless, data_root=data_root,
                            borderline=e.get("rank1_gate_borderline", 0),
                            extra_benign=tuple(e.get("rank1_gate_extra_benign") or ()))
    harm = [lm.chat.encode(lm.chat.format(t)) for t in data.harmful]
    depth = layer * per_layer + upto
    tok = 0
    for seqs in (harm, data.benign):
        pre = shared_len(seqs)
        tok += sum(len(s) for s in seqs) - pre * (len(seqs) - 1)
    return tok * depth, {"layer": layer, "harmful": len(harm), "benign_sequences": len(data.benign), "tokens": tok}


def extract_flops(lm, folder: Path, per_layer: float) -> tuple[float, dict] | None:
    """Linear-layer FLOPs of the extraction: every prompt through the deepest extracted layer (its tokens from
    the store's rows), the chat template's shared prefix once."""
    man = folder / "store" / "manifest.json"
    if not man.exists():
        return None
    m = json.loads(man.read_text())
    rows = [json.loads(x) for x in (folder / "store" / "rows.jsonl").read_text().splitlines() if x.strip()]
    pre = shared_len([lm.chat.encode(lm.chat.format(t)) for t in ("甲", "乙")])
    tok = sum(int(r["n_tokens"]) for r in rows) - pre * max(0, len(rows) - 1)
    depth = max(m["layers"]) + 1
    return tok * depth * per_layer, {"prompts": len(rows), "tokens": tok, "layers": depth}


def separability_flops(lm, folder: Path, per_layer: float, data_root) -> tuple[float, dict] | None:
    """Linear-layer FLOPs of the separability stage: each class's prompts through the deepest layer read
    (``resid_pre`` of layer L needs L blocks, ``resid_post`` L + 1), each class's shared prefix once."""
    from r1probe.analysis.separability import separability_classes

    f = folder / "separability.json"
    if not f.exists():
        return None
    st = json.loads(f.read_text())["settings"]
    depth = max(st["layers"]) + (0 if st.get("site", "resid_pre") == "resid_pre" else 1)
    tok = 0
    for items in separability_classes(st["n"], data_root=data_root, seed=st.get("seed", 0)).values():
        seqs = [lm.chat.encode(lm.chat.format(it.text)) for it in items]
        tok += sum(len(x) for x in seqs) - shared_len(seqs) * max(0, len(seqs) - 1)
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
    ap.add_argument("--data-root", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.models import load_model
    from r1probe.models.loader import machine

    man = json.loads((a.run / "eval" / "base" / "stage.json").read_text())
    spec = man["inputs"].get("model") if isinstance(man.get("inputs"), dict) else None
    spec = spec if isinstance(spec, str) and not spec.startswith("dir:") else "builtin:qwen2.5-coder-0.5b-instruct"
    lm = load_model(spec)
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
        stages[d["stage"]] = (st.parent, float(d.get("seconds") or 0.0))
    counted, floor_total, measured_total = {}, 0.0, 0.0
    for name, (path, sec) in stages.items():
        if name.startswith("eval-"):
            fl, c = eval_flops(lm, path, per_layer, head, n_layers)
        elif name == "extract":
            r = extract_flops(lm, path, per_layer)
            fl, c = r if r else (None, None)
        elif name == "separability":
            r = separability_flops(lm, path, per_layer, a.data_root)
            fl, c = r if r else (None, None)
        elif name == "edit-rank1-gate":
            r = fit_flops(lm, a.run, per_layer, upto, a.data_root)
            fl, c = r if r else (None, None)
        else:
            fl, c = None, None
        if fl is None:
            print(f"{name:22s} measured {sec:8.1f} s   (not counted)")
            continue
        fl_s = fl / rate
        floor_total += fl_s
        measured_total += sec
        counted[name] = c
        print(f"{name:22s} measured {sec:8.1f} s   {fl / 1e12:7.2f} TFLOP  floor {fl_s:7.1f} s  "
              f"measured/floor {sec / fl_s:5.2f}   {json.dumps(c, ensure_ascii=False)}")
    all_s = sum(s for _, s in stages.values())
    print(f"counted stages: floor {floor_total:.0f} s, measured {measured_total:.0f} s; every stage measured "
          f"{all_s:.0f} s; floor of the counted stages alone vs 20 minutes: {floor_total / 1200:.2f}x")


if __name__ == "__main__":
    main()
