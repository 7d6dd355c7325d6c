"""Screening of weight edits along the refusal direction, measured in memory before export.

    python scripts/enhance_screen.py --directions runs/study/probe --edits "amplify:8-19:0.5,amplify:10-17:1" \
        --n 40 --tokens 96 --out runs/enh5 [--threads 1]

Loads the model once; for each edit (``amplify:LAYERS:BETA`` or ``amplify-attn:...`` / ``amplify-mlp:...``,
or ``rank1-gate:LAYER:LAMBDA[:bN][:eBENCH+BENCH]`` (``enhance:`` is the same): the registered ``rank1-gate`` edit,
its read vector fitted on the built-in harmful *train* split against benign tokens: the harmless train prompts and
200 GSM8K train question + solution texts, plus N CValues borderline contrast prompts with ``:bN`` and the whole
dev parts of the benches after ``:e`` (their dev numbers in this screen are then in-sample);
direction from ``--enhance-directions``) it runs the edit through ``r1probe.steering.edits.run_edit``,
measures refusal (``r1probe.eval.judges.refusal``) on dev data only (``r1probe.data.partitions``: screening is
tuning): ``harmful-val`` (the first ``n`` of the built-in zh-harmful val split, seed 0), ``harmless-val`` (the
zh-harmless val split), ``cvalues-search`` (the CValues search part), or any registered bench's dev part
(a report-only bench such as CHiSafetyBench is refused), then restores the weights. Each result goes to
``OUT/screen.jsonl`` as soon as it is measured (a rerun skips measured edits); every item read, the fits'
data included, is recorded in ``OUT/tuning_reads.json``.
``alphasteer:LAYERS:STRENGTH[:bN][:rRATIO][:gRIDGE][:eBENCH+BENCH]`` screens the run-time AlphaSteer plan
(``r1probe.steering.alphasteer``: N borderline contrast prompts in its benign null space, default 332; null-space
ratio and ridge default to its settings'; ``e``: benches whose whole dev part joins the null space, so their dev
numbers in this screen are in-sample); the fit data's activations are read once per layer set and fit data. ``--export`` applies one edit exactly as screened and exports it; measure that checkpoint with ``r1probe eval``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch



def parse_edit(s: str) -> dict:
    """``amplify[-attn|-mlp]:LAYERS:BETA``, ``rank1-gate:LAYER:LAMBDA[:bN][:eBENCH+BENCH]`` or
    ``alphasteer:LAYERS:STRENGTH[:bN][:rRATIO][:gRIDGE][:eBENCH+BENCH]`` as an edit name and its settings."""
    op, layers, strength, *rest = s.split(":")
    if op == "alphasteer":
        st = {"layers": layers, "strength": float(strength)}
        for r in rest:
            key = {"b": "borderline", "r": "null_ratio", "g": "ridge", "e": "extra_benign"}[r[0]]
            st[key] = (int(r[1:]) if key == "borderline" else r[1:].split("+") if key == "extra_benign"
                       else float(r[1:]))
        return {"edit": s, "op": "alphasteer", "settings": st}
    if op in ("rank1-gate", "enhance"):  # bN: N borderline contrast prompts, eA+B: dev parts, in the benign fit
        st = {"layer": int(layers), "lam": float(strength), "borderline": 0}
        for r in rest:
            key = {"b": "borderline", "e": "extra_benign"}[r[0]]
            st[key] = int(r[1:]) if key == "borderline" else r[1:].split("+")
        return {"edit": s, "op": "rank1-gate", "settings": st}
    which = {"amplify": ["attn", "mlp"], "amplify-attn": ["attn"], "amplify-mlp": ["mlp"]}[op]
    return {"edit": s, "op": "amplify", "settings": {"layers": layers, "beta": float(strength), "writers": which}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--directions", default="runs/study/probe")
    ap.add_argument("--key", default="chosen")
    ap.add_argument("--enhance-directions", default="runs/accept4/probe")
    ap.add_argument("--data-root", default=None, help="shared data folder (GSM8K train for the benign fit)")
    ap.add_argument("--edits", required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--benches", default="harmful-val,harmless-val",
                    help="harmful-val, harmless-val, cvalues-search, or registered benches (their dev part)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/enh5")
    ap.add_argument("--export", default=None,
                    help="apply the one edit in --edits exactly as screened and export the checkpoint here (no benchmarks)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.eval.api import bench
    from r1probe.models import load_model

    if a.export:
        return export_one(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "screen.jsonl"
    done = {json.loads(line)["edit"] for line in log.read_text().splitlines()} if log.exists() else set()
    from r1probe.data.partitions import load_tuning_reads, merge_reads, write_tuning_reads

    reads = load_tuning_reads(out) if (out / "tuning_reads.json").exists() else {}
    lm = load_model(a.model)
    for spec in ["none:0-0:0"] + [e for e in a.edits.split(",") if e]:
        if spec in done:
            continue
        t = time.time()
        saved = {}
        row = {"edit": spec, "n": a.n, "tokens": a.tokens}
        plan = None
        if spec.startswith("alphasteer"):
            plan, rec = alphasteer(lm, parse_edit(spec)["settings"], a)
            reads = merge_reads(reads, rec["tuning_reads"])
            row["fit"] = rec["layers"]
        elif not spec.startswith("none"):
            e = parse_edit(spec)
            saved = {n: (p, p.detach().clone()) for n, p in lm.model.named_parameters()}
            rec = apply_edit(lm, e, a)
            reads = merge_reads(reads, rec.get("tuning_reads") or {})
            if e["op"] == "rank1-gate":
                row["fit"] = {k: rec[k] for k in ("fit_harmful_mean", "fit_benign_rms", "n_benign_tokens")}
        try:
            for b in a.benches.split(","):
                prompts, ids = dev_prompts(b, a)
                if prompts is not None:
                    from r1probe.eval.api import refusal_rate

                    row[b] = refusal_rate(lm, prompts, max_new_tokens=a.tokens, plan=plan)["rate"]
                    reads = merge_reads(reads, ids)
                    continue
                res = bench(lm, b, limit=a.n, seed=0, max_new_tokens=a.tokens, split="dev", plan=plan,
                            out_dir=out / spec.replace(":", "_") / b)
                m = res["metrics"]
                row[b] = m.get("RR-1", m.get("refusal_rate"))
                from r1probe.eval.runner import ResultsFile

                got = ResultsFile(out / spec.replace(":", "_") / b / f"{b}.jsonl").load()
                reads = merge_reads(reads, _bench_reads(b, got))
            write_tuning_reads(out, reads)
        finally:
            with torch.no_grad():
                for p, w in saved.values():
                    p.copy_(w)
        row["seconds"] = round(time.time() - t, 1)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def dev_prompts(name: str, a):
    """``(prompts, {set: [ids]})`` of a named dev list, or ``(None, None)`` for a registered bench."""
    from r1probe.data.partitions import prompt_reads

    if name in ("harmful-val", "harmless-val"):
        from r1probe.data.prompts import load_prompt_set

        spec = "builtin:zh-harmful" if name == "harmful-val" else "builtin:zh-harmless"
        ps = load_prompt_set(spec, split="val", seed=0).prompts[:a.n]
        return ps, prompt_reads(spec, [p.id for p in ps])
    if name == "cvalues-search":
        from r1probe.data.borderline import borderline_splits

        items = borderline_splits(a.data_root, english_contrast=False)["search"][:a.n]
        return [it.text for it in items], {"cvalues": [it.id for it in items]}
    from r1probe.data.partitions import BENCH_SETS, get_set

    if name in BENCH_SETS and "dev" not in get_set(BENCH_SETS[name]).parts:
        raise SystemExit(f"{name} is report-only: screening reads dev data only")
    return None, None


def _bench_reads(bench: str, recs: dict) -> dict:
    from r1probe.data.partitions import canonical, reads_of

    return reads_of((canonical(bench, i) or (None, i))[1] for i in recs)


_STATES: dict = {}


def alphasteer(lm, settings: dict, a):
    """The AlphaSteer plan of ``settings`` and its record; the fit data's activations are read once per
    (layers, fit data) in this process."""
    from r1probe.steering import alphasteer as A

    s = A.AlphaSteerSettings(data_root=a.data_root, **settings)
    layers = A.steered_layers(lm, s)
    key = (tuple(layers), s.borderline, tuple(s.extra_benign))
    if key not in _STATES:
        _STATES[key] = A.fit_states(lm, s, layers)
    plan, rec = A.alphasteer_plan(lm, s, states=_STATES[key], log=lambda m: None)
    rec["layers"] = {L: {k: round(v, 4) for k, v in d.items() if v is not None} for L, d in rec["layers"].items()}
    return plan, rec


def apply_edit(lm, e: dict, a) -> dict:
    """Run one parsed edit through the edit registry (the same path as ``r1probe edit``); returns its record."""
    from r1probe.steering.edits import run_edit

    if e["op"] == "amplify":
        return run_edit("amplify", lm, a.directions, {"direction_key": a.key, **e["settings"]})[0]
    return run_edit("rank1-gate", lm, a.enhance_directions,
                    {"direction_key": a.key, "data_root": a.data_root, **e["settings"]})[0]


def export_one(a) -> None:
    from r1probe.models import load_model
    from r1probe.steering.export import export_checkpoint

    (spec,) = [x for x in a.edits.split(",") if x]
    e = parse_edit(spec)
    lm = load_model(a.model)
    rec = apply_edit(lm, e, a)
    src = a.enhance_directions if e["op"] == "rank1-gate" else a.directions
    path = export_checkpoint(lm, a.export, edits=[rec], directions_file=src, direction_key=a.key, overwrite=True)
    print(f"exported {spec} -> {path}", flush=True)


if __name__ == "__main__":
    main()
