"""Train probes on an activation store, select the refusal direction, save and load the result.

Output folder::

    OUT/directions.safetensors   "layer{L}_pos{P}": difference-in-means per cell (un-normalised),
                                 "logistic.layer{L}_pos{P}", "pca.layer{L}_pos{P}": the other estimators,
                                 "chosen": the selected difference-in-means direction
    OUT/probe.json               metrics per cell, selection scores, chosen layer/position, the
                                 store's manifest, the run's manifest
    OUT/tuning_reads.json        {set: [ids]} of every prompt the probes and the selection read
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.probes import estimators as E
from r1probe.probes.metrics import cell_report, cohens_d
from r1probe.probes.select import SelectConfig, cand_key, select_direction

PROBE_FORMAT = "r1probe.probe/1"


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def separation(pos: torch.Tensor, neg: torch.Tensor, r: torch.Tensor) -> float:
    """Cohen's d of the projections ``x·r̂`` of the two classes (a cheap pre-ranking; see
    :func:`r1probe.probes.metrics.cohens_d`)."""
    u = r.double() / r.double().norm()
    return cohens_d((pos.double() @ u).numpy(), (neg.double() @ u).numpy())


def train_probes(store, *, estimators: Sequence[str] = E.ESTIMATORS, layers: Sequence[int] | None = None,
                 positions: Sequence | None = None, pos_label: str = "harmful", neg_label: str = "harmless",
                 site: str = "resid_post", folds: int = 5, seed: int = 0,
                 progress: Callable[[str], None] | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Fit and cross-validate every estimator at every (layer, position) of ``store``.

    Returns ``(cells, tensors)``: ``cells[key]`` is the cell report (metrics per estimator, norm,
    cosines, ``separation``, ``ok``/``error``), ``tensors`` the directions-file dict
    (``key`` for difference-in-means, ``"{estimator}.{key}"`` for the others). Degenerate cells
    (NaN rows, too few rows, zero mean difference) are reported, never raised.
    """
    say = progress or (lambda m: None)
    for e in estimators:
        if e not in E.ESTIMATORS:
            raise R1ProbeError(f"unknown estimator {e!r} (choose from {', '.join(E.ESTIMATORS)})")
    layers = list(store.layers if layers is None else layers)
    if positions is None:  # every offset position (names like "mean" or "gen0" are left out)
        positions = [p for p in store.positions if isinstance(p, int)]
    positions = list(positions)
    cells, tensors = {}, {}
    t = time.time()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny linear algebra: extra threads only spin on a busy CPU
    try:
        _fit_layers(store, layers, positions, estimators, pos_label, neg_label, site, folds, seed, cells, tensors, say)
    finally:
        torch.set_num_threads(threads)
    say(f"probe: fitted {len(cells)} cells in {time.time() - t:.1f}s")
    return cells, tensors


def _fit_layers(store, layers, positions, estimators, pos_label, neg_label, site, folds, seed, cells, tensors, say):
    for li in layers:
        try:
            acts = store.get(li, None, None, site=site, dtype=torch.float32)  # [n, P, d]
        except R1ProbeError as e:
            for p in positions:
                cells[cand_key(li, p)] = {"layer": li, "pos": p, "ok": False, "error": str(e)}
            continue
        ip, ineg = store.row_indices(pos_label), store.row_indices(neg_label)
        for p in positions:
            k = cand_key(li, p)
            x = acts[:, store.position_index(p)]
            rep, dirs = cell_report(x[ip], x[ineg], estimators, folds=folds, seed=seed)
            rep.update(layer=int(li), pos=p)
            if "mean_diff" in dirs:
                tensors[k] = dirs["mean_diff"]
                rep["separation"] = separation(x[ip], x[ineg], dirs["mean_diff"])
            for e, v in dirs.items():
                if e != "mean_diff":
                    tensors[f"{e}.{k}"] = v
            cells[k] = rep
        say(f"probe: layer {li}: " + ", ".join(
            f"{p}: auroc {cells[cand_key(li, p)].get('estimators', {}).get('mean_diff', {}).get('auroc', float('nan')):.3f}"
            for p in positions))


def _val_prompts(spec: str, split: str | None, n: int, seed: int):
    from r1probe.data.prompts import load_prompt_set

    ps = load_prompt_set(spec, split=split, seed=seed)
    return list(ps.prompts)[:n] if n else list(ps.prompts)


def run_probe(store_path: str | os.PathLike, lm, out: str | os.PathLike, *,
              harmful_val: str = "builtin:zh-harmful", harmless_val: str = "builtin:zh-harmless",
              val_split: str | None = "val", cfg: SelectConfig | None = None,
              estimators: Sequence[str] = E.ESTIMATORS, layers: Sequence[int] | None = None,
              positions: Sequence | None = None, site: str = "resid_post", folds: int = 5, seed: int = 0,
              select: bool = True, progress: Callable[[str], None] | None = None,
              candidates: str = "mean_diff") -> dict:
    """Train probes on a store, run the causal selection with ``lm`` and write ``out``; returns probe.json.

    ``candidates``: which estimator's directions the causal search scores (``mean_diff`` as in
    refusal_direction, or ``lda``/``pca``; not ``logistic``, whose weight vector has no causal scale).
    """
    from r1probe.extract.store import ActivationStore
    from r1probe.models import model_provenance
    from r1probe.provenance import atomic_write_json, base_manifest
    from r1probe.steering.directions import save_directions

    say = progress or (lambda m: None)
    cfg = cfg or SelectConfig()
    if select and (candidates not in estimators or candidates == "logistic"):
        raise R1ProbeError(f"--candidates {candidates!r}: choose an estimator with a causal scale "
                           f"(mean_diff, lda, pca) that is also in --estimators")
    t0 = time.time()
    store = ActivationStore(store_path)
    if lm is not None and store.d_model != lm.layout.d_model:
        raise R1ProbeError(f"the store has d_model {store.d_model} but the model has {lm.layout.d_model} "
                           "(was it extracted from a different model?)")
    cells, tensors = train_probes(store, estimators=estimators, layers=layers, positions=positions, site=site,
                                  folds=folds, seed=seed, progress=say)
    selection = None
    chosen = None
    if select:
        if lm is None:
            raise R1ProbeError("causal selection needs a model (--model), or pass --no-select")
        split_given = val_split is not None
        hv = _val_prompts(harmful_val, val_split, cfg.n_val, seed)
        nv = _val_prompts(harmless_val, val_split, cfg.n_val, seed)
        tkey = (lambda k: k) if candidates == "mean_diff" else (lambda k: f"{candidates}.{k}")
        cands = {k: {"layer": c["layer"], "pos": c["pos"], "direction": tensors.get(tkey(k)),
                     "rank": c.get("separation") if c.get("separation") is not None and
                     math.isfinite(c.get("separation", float("nan"))) else -1e9,
                     "auroc": ((c.get("estimators") or {}).get("mean_diff") or {}).get("auroc")}
                 for k, c in cells.items()}
        ref = None
        if cfg.ablation.startswith("affine"):  # references from harmless prompts that are not the validation ones
            ref = (_val_prompts(harmless_val, "train", cfg.n_reference, seed) if split_given
                   else _val_prompts(harmless_val, None, 0, seed)[cfg.n_val:cfg.n_val + cfg.n_reference])
        selection = select_direction(lm, cands, hv, nv, cfg, site=site, progress=say, reference=ref)
        plans = selection.pop("_plans", {})
        selection["val"] = {"harmful": harmful_val, "harmless": harmless_val, "split": val_split,
                            "n_harmful": len(hv), "n_harmless": len(nv)}
        selection["candidates"] = candidates
        chosen = selection["chosen"]
        tensors["chosen"] = tensors[tkey(chosen)].clone()
    meta = base_manifest(
        format=PROBE_FORMAT,
        store={"path": str(Path(store_path).resolve()), "manifest": store.manifest},
        model=model_provenance(lm) if lm is not None else None,
        site=site, estimators=list(estimators), folds=folds, seed=seed,
        cells=cells, selection=selection,
        chosen=None if chosen is None else {"key": chosen, "layer": cells[chosen]["layer"], "pos": cells[chosen]["pos"],
                                            "site": site, "estimator": candidates,
                                            "norm": float(tensors["chosen"].double().norm()),
                                            "ablation": cfg.ablation, "induce_alpha": cfg.induce_scale * float(
                                                tensors["chosen"].double().norm()),
                                            **{k: v for k, v in selection["scores"][chosen].items()
                                               if k in ("bypass", "induce", "kl", "verify")}},
        seconds=round(time.time() - t0, 1),
    )
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_directions(tmp / "directions.safetensors", tensors,
                    {"format": PROBE_FORMAT, "chosen": chosen or "", "site": site})
    if selection is not None:
        # the chosen direction's bypass / induce interventions, as plans naming it ("chosen" in this folder)
        for name, plan in plans.items():
            named = [dc_replace(st, direction="chosen") for st in plan.steps]
            dc_replace(plan, steps=named, directions=str(out.resolve())).save(tmp / f"{name}.plan.json")
    atomic_write_json(tmp / "probe.json", _json_safe(meta))
    from r1probe.data.partitions import merge_reads, prompt_reads, write_tuning_reads

    read = [_store_reads(store)]  # the probes' training rows and the selection's validation/reference prompts
    if selection is not None:
        read += [prompt_reads(harmful_val, [p.id for p in hv]), prompt_reads(harmless_val, [p.id for p in nv]),
                 prompt_reads(harmless_val, [p.id for p in ref or []])]
    write_tuning_reads(tmp, merge_reads(*read))
    if out.exists():
        import shutil

        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    return meta


def _store_reads(store) -> dict:
    """``{set: [ids]}`` of a store's rows (each row's set: the prompt set holding its label)."""
    from r1probe.data.partitions import merge_reads, prompt_reads

    by_label: dict[str, str] = {}
    for s in store.manifest.get("prompt_sets", []):
        for lab in s.get("label_counts") or {}:
            by_label.setdefault(lab, s["name"])
    groups: dict[str, list] = {}
    for i, lab in zip(store.ids, store.labels):
        groups.setdefault(by_label.get(lab, "store"), []).append(i)
    return merge_reads(*(prompt_reads(spec, ids) for spec, ids in groups.items()))


def load_probe(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(probe.json, directions)`` of a probe folder."""
    from r1probe.steering.directions import load_directions, probe_meta

    meta = probe_meta(path)
    if not meta:
        raise R1ProbeError(f"{path}: no probe.json (is this an 'r1probe probe' output folder?)")
    return meta, load_directions(path)
