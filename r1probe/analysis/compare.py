"""Compare the refusal representation of two models (base vs distilled, or a model vs its edit).

Inputs are two activation stores made on the *same* prompts (harmful = positive class) and,
optionally, the base model's chosen direction. Everything numeric is returned in one dict and
written to ``compare.json``; figures go next to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from r1probe.analysis import plots
from r1probe.analysis.similarity import (auroc_along, bootstrap_direction_similarity, cosine, linear_cka, project,
                                         relative_depth_map, separation)
from r1probe.errors import R1ProbeError
from r1probe.probes.metrics import cell_report, finite_or_none
from r1probe.provenance import atomic_write_json, base_manifest

POS, NEG = "harmful", "harmless"


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    return finite_or_none(x) if isinstance(x, float) else x


def layer_probe_curves(store, position, layers: Sequence[int], estimators=("mean_diff", "logistic"),
                       seed: int = 0) -> tuple[dict, dict[int, torch.Tensor]]:
    """Per-layer held-out AUROC/accuracy per estimator, and the per-layer mean-difference directions."""
    curves = {e: {"auroc": [], "accuracy": []} for e in estimators}
    dirs = {}
    for layer in layers:
        pos, neg = store.get(layer, position, POS), store.get(layer, position, NEG)
        rep, d = cell_report(pos, neg, estimators, seed=seed, logistic_kw={"folds": 3, "seed": seed})
        for e in estimators:
            m = rep.get("estimators", {}).get(e, {})
            curves[e]["auroc"].append(m.get("auroc", float("nan")) if m.get("ok") else float("nan"))
            curves[e]["accuracy"].append(m.get("accuracy", float("nan")) if m.get("ok") else float("nan"))
        if "mean_diff" in d:
            dirs[layer] = d["mean_diff"]
    return curves, dirs


def _same_rows(a, b) -> None:
    if a.ids != b.ids or a.labels != b.labels:
        raise R1ProbeError("the two stores were made on different prompts (ids or labels differ); "
                           "extract both models on the same prompt sets")


def compare_stores(store_a, store_b, *, names: tuple[str, str] = ("base", "distilled"), position: Any = -1,
                   direction_a: torch.Tensor | None = None, direction_layer: int | None = None,
                   out_dir: str | os.PathLike, sources: Sequence = (), seed: int = 0,
                   estimators: Sequence[str] = ("mean_diff", "logistic"), bootstrap: int = 200) -> dict:
    """Probe curves of both models, direction cosine / CKA per layer, transfer and projections.

    ``direction_a`` (the base model's chosen refusal direction, taken at ``direction_layer``) is
    transferred to model B: its AUROC on B's activations per layer and the projection histograms. Per layer,
    each model's difference-in-means direction is read out of the other's activations (``transfer_auroc``: A's
    on B; ``transfer_auroc_reverse``: B's on A).
    ``bootstrap`` resamples of the prompts give 95% intervals of the per-layer direction cosine and transfer
    AUROC (``similarity.bootstrap_direction_similarity``; 0: none).
    With different hidden sizes, layers are paired at equal relative depth and compared by CKA.
    """
    _same_rows(store_a, store_b)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    la, lb = [l for l in store_a.layers if l >= 0], [l for l in store_b.layers if l >= 0]
    curves_a, dirs_a = layer_probe_curves(store_a, position, la, estimators, seed)
    curves_b, dirs_b = layer_probe_curves(store_b, position, lb, estimators, seed)
    same_width = store_a.d_model == store_b.d_model
    pairs = [(i, i) for i in la if i in lb] if (same_width and la == lb) else \
        [(la[i], lb[j]) for i, j in relative_depth_map(len(la), len(lb))]
    y = np.array([1 if l == POS else 0 for l in store_a.labels])
    res: dict = {"names": list(names), "position": str(position), "same_width": same_width,
                 "layer_pairs": pairs, "n": {"harmful": int(y.sum()), "harmless": int((1 - y).sum())},
                 "probe_curves": {names[0]: curves_a, names[1]: curves_b}}
    res["cka"] = [linear_cka(store_a.get(i, position), store_b.get(j, position)) for i, j in pairs]
    if same_width:
        res["direction_cosine"] = [cosine(dirs_a[i], dirs_b[j]) if i in dirs_a and j in dirs_b else float("nan")
                                   for i, j in pairs]
        # the base model's per-layer direction read out of the other model's activations
        res["transfer_auroc"] = [auroc_along(store_b.get(j, position), y, dirs_a[i]) if i in dirs_a else float("nan")
                                 for i, j in pairs]
        # and the reverse: the other model's per-layer direction read out of the base model's activations
        res["transfer_auroc_reverse"] = [auroc_along(store_a.get(i, position), y, dirs_b[j]) if j in dirs_b
                                         else float("nan") for i, j in pairs]
        if bootstrap:
            cis = [bootstrap_direction_similarity(store_a.get(i, position), store_b.get(j, position), y, B=bootstrap,
                                                  seed=seed + k) for k, (i, j) in enumerate(pairs)]
            res["direction_cosine_ci"] = [c["cosine"] for c in cis]
            res["transfer_auroc_ci"] = [c["transfer_auroc"] for c in cis]
            res["transfer_auroc_reverse_ci"] = [c["transfer_auroc_reverse"] for c in cis]
            res["bootstrap"] = {"resamples": bootstrap, "level": 0.95, "unit": "prompts, within class, paired"}
    if direction_a is not None and same_width:
        L = direction_layer if direction_layer is not None else la[len(la) // 2]
        pa, pb = project(store_a.get(L, position), direction_a), project(store_b.get(L, position), direction_a)
        res["chosen"] = {
            "layer": L,
            "projection": {names[0]: {"harmful_mean": float(pa[y == 1].mean()), "harmless_mean": float(pa[y == 0].mean()),
                                      "abs_mean": float(np.abs(pa).mean()), "separation_d": separation(pa[y == 1], pa[y == 0])},
                           names[1]: {"harmful_mean": float(pb[y == 1].mean()), "harmless_mean": float(pb[y == 0].mean()),
                                      "abs_mean": float(np.abs(pb).mean()), "separation_d": separation(pb[y == 1], pb[y == 0])}},
            "auroc": {names[0]: auroc_along(store_a.get(L, position), y, direction_a),
                      names[1]: auroc_along(store_b.get(L, position), y, direction_a)},
            "norm_ratio": float(np.linalg.norm(store_b.get(L, position).numpy(), axis=1).mean()
                                / np.linalg.norm(store_a.get(L, position).numpy(), axis=1).mean()),
        }
        hist = {names[0]: {POS: pa[y == 1], NEG: pa[y == 0]}, names[1]: {POS: pb[y == 1], NEG: pb[y == 0]}}
        res["figures"] = {"projections": plots.projection_hists(
            hist, out / "projection_hist", title=f"projection on the base refusal direction (layer {L})", sources=sources)}
    figs = res.setdefault("figures", {})
    figs["probe_curves"] = plots.layer_curves(
        {f"{n} · {e}": {"auroc": c[e]["auroc"], "accuracy": c[e]["accuracy"]}
         for n, c in ((names[0], curves_a), (names[1], curves_b)) for e in estimators},
        out / "probe_curves", metrics=("auroc",), title="held-out probe AUROC per layer (harmful vs harmless)",
        sources=sources)
    series = {"linear CKA": res["cka"]}
    if same_width:
        series.update({"cosine of mean-diff directions": res["direction_cosine"],
                       f"AUROC of {names[0]} direction on {names[1]}": res["transfer_auroc"],
                       f"AUROC of {names[1]} direction on {names[0]}": res["transfer_auroc_reverse"]})
    bands = {}
    if same_width and "direction_cosine_ci" in res:
        bands = {"cosine of mean-diff directions": res["direction_cosine_ci"],
                 f"AUROC of {names[0]} direction on {names[1]}": res["transfer_auroc_ci"],
                 f"AUROC of {names[1]} direction on {names[0]}": res["transfer_auroc_reverse_ci"]}
    figs["similarity"] = plots.per_layer(series, out / "layer_similarity", ylabel="similarity / AUROC",
                                         title=f"{names[0]} vs {names[1]} per layer" + (" (95% bootstrap bands)" if bands else ""),
                                         sources=sources, ylim=(-0.05, 1.05), bands=bands)
    res = _clean(res)
    atomic_write_json(out / "compare.json", base_manifest(result=res, sources=[str(s) for s in sources]))
    return res
