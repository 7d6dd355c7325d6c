"""Issue-4 acceptance measurement on the embedded model (one process, resumable by folder).

    python scripts/probe_acceptance.py --out runs/accept4 [--ablation affine] [--induce-scale 3] [--threads 1]

1. extract the built-in zh harmful / harmless *train* splits (all layers, post-instruction positions);
2. ``run_probe``: difference-in-means + logistic probes per cell, causal search (timed);
3. AUROC of the chosen direction (and of the logistic probe at the same cell) separating CHiSafetyBench's
   462 must-refuse questions from the held-out built-in harmless *test* split (never trained on);
4. keyword-judged refusal on 100 CHiSafetyBench questions with the chosen direction ablated (bypass plan),
   and on 100 held-out harmless prompts with it added at its layer (induce plan);
5. the KL of the selection (32 harmless validation prompts). Writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/accept4")
    ap.add_argument("--model", default="builtin:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--ablation", default="affine-downstream", choices=["directional", "affine", "affine-downstream"])
    ap.add_argument("--induce-scale", type=float, default=3.0)
    ap.add_argument("--layers", default=None, help="layers to extract (default all)")
    ap.add_argument("--search-layers", default=None, help="layers of the causal search, e.g. 8-18 (default all)")
    ap.add_argument("--search-positions", default=None, help="positions of the causal search, e.g. -1,-2 (default all)")
    ap.add_argument("--n-val", type=int, default=32)
    ap.add_argument("--candidates", default="mean_diff", choices=["mean_diff", "lda", "pca"])
    ap.add_argument("--induce-score", default="first_token", choices=["first_token", "generation"])
    ap.add_argument("--induce-min", type=float, default=0.0)
    ap.add_argument("--auroc-min", type=float, default=0.0)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--bypass-tokens", type=int, default=128)
    ap.add_argument("--induce-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--chisafety", default="../shared/data/chisafetybench")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from sklearn.metrics import roc_auc_score

    from r1probe.data.chisafety import load_chisafety_refusal
    from r1probe.data.prompts import PromptSet, load_prompt_set
    from r1probe.eval.api import bench
    from r1probe.extract import extract_activations
    from r1probe.models import load_model
    from r1probe.probes.api import load_probe, run_probe
    from r1probe.probes.select import SelectConfig
    from r1probe.steering.plan import SteeringPlan, parse_layers

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}

    def save():
        res_path.write_text(json.dumps(res, indent=2, ensure_ascii=False))

    lm = load_model(a.model)
    t = time.time()
    harm = load_prompt_set("builtin:zh-harmful", label="harmful", split="train")
    safe = load_prompt_set("builtin:zh-harmless", label="harmless", split="train")
    store = extract_activations(lm, [harm, safe], layers=a.layers or "all", positions="post", out_dir=out / "acts")
    res.setdefault("extract_s", round(time.time() - t, 1))
    res["train"] = {"harmful": len(harm), "harmless": len(safe)}
    if not (out / "probe" / "probe.json").exists():
        t = time.time()
        cfg = SelectConfig(ablation=a.ablation, induce_scale=a.induce_scale, n_val=a.n_val,
                           induce_score=a.induce_score, induce_min=a.induce_min, auroc_min=a.auroc_min)
        ests = ("mean_diff", "logistic") + ((a.candidates,) if a.candidates != "mean_diff" else ())
        run_probe(store.path, lm, out / "probe", cfg=cfg, estimators=ests, folds=3, candidates=a.candidates,
                  layers=parse_layers(a.search_layers, lm.layout.n_layers) if a.search_layers else None,
                  positions=parse_layers(a.search_positions, 0) if a.search_positions else None,
                  progress=lambda m: print(m, flush=True))
        res["probe_s"] = round(time.time() - t, 1)
        save()
    meta, dirs = load_probe(out / "probe")
    ch = meta["chosen"]
    res["chosen"] = {k: ch.get(k) for k in ("key", "layer", "pos", "estimator", "norm", "kl", "bypass", "induce", "ablation",
                                             "induce_alpha", "verify")}
    res["selection_s"] = meta["selection"]["seconds"]
    res["n_scored"] = meta["selection"]["n_scored"]
    L, P = ch["layer"], ch["pos"]
    chi = load_chisafety_refusal(a.chisafety)
    test = load_prompt_set("builtin:zh-harmless", label="harmless", split="test")
    ev = extract_activations(lm, [PromptSet("chisafety", chi), test], layers=str(L), positions="post",
                             out_dir=out / "acts_eval", progress=False)
    y = [1 if lab == "harmful" else 0 for lab in ev.labels]
    x = ev.get(L, P).double()
    res["auroc"] = {"n_chisafety": len(chi), "n_harmless_test": len(test),
                    "chosen": roc_auc_score(y, (x @ dirs["chosen"].double()).numpy())}
    lk = f"logistic.{ch['key']}"
    if lk in dirs:
        res["auroc"]["logistic_same_cell"] = roc_auc_score(y, (x @ dirs[lk].double()).numpy())
    if ch["key"] in dirs:
        res["auroc"]["mean_diff_same_cell"] = roc_auc_score(y, (x @ dirs[ch["key"]].double()).numpy())
    save()
    print(json.dumps(res, indent=1), flush=True)
    for name, bname, toks in (("bypass", "chisafety-refusal", a.bypass_tokens), ("induce", "zh-harmless", a.induce_tokens)):
        if name in res:
            continue
        t = time.time()
        plan = SteeringPlan.load(out / "probe" / f"{name}.plan.json")
        e = bench(lm, bname, plan=plan, limit=a.limit, seed=0, max_new_tokens=toks, batch_size=8,
                  out_dir=out / f"eval_{name}")
        res[name] = {"bench": bname, "n": e["n"], "metrics": e["metrics"], "ci95": e.get("ci95"),
                     "max_new_tokens": toks, "seconds": round(time.time() - t, 1)}
        save()
        print(name, json.dumps(res[name]), flush=True)


if __name__ == "__main__":
    main()
