"""Linear separability of must-refuse, sensitive-but-answerable and ordinary prompts, per layer and position,
and how it relates to the refusal direction.

Classes (dev parts only, :mod:`r1probe.data.partitions`; CHiSafetyBench is never read):

- ``must_refuse``: the built-in ``zh-harmful`` dev part (its train and val splits: PolyRefuse zh train/val
  and MultiJail zh);
- ``borderline``: the CValues dev part (borderline contrast + search splits) and the XSTest-safe dev part;
- ``ordinary``: the built-in ``zh-harmless`` dev part (train and val splits).

Each class is hash-ordered (:func:`r1probe.data.borderline.hash_order` with :data:`SAMPLE_SALT`), texts repeated across sources are
kept once, and the first ``n`` items are read. Activations ``x`` are read by
:func:`r1probe.extract.read.read_activations` at the chat-formatted prompt's post-instruction positions
(negative offsets, ``-1`` the last token) of every requested layer.

For a pair of classes ``(P, N)`` at one layer and position:

- **folds**: every item of a class gets fold ``k = π(i) mod K`` (a seeded permutation ``π`` per class), the
  same folds for every pair, layer and position;
- **probe AUROC**: for each fold ``k`` a logistic probe ``w_k`` (:func:`r1probe.probes.estimators.logistic`,
  standardised features, fixed ``C``) is fitted on the items of ``P`` and ``N`` outside fold ``k`` and scores
  the held-out items ``s(x) = w_k·x``; the AUROC of the pooled out-of-fold scores is the Mann–Whitney
  statistic ``A = (R_P − n_P (n_P + 1)/2) / (n_P n_N)`` with ``R_P`` the sum of the ranks of ``P``'s scores
  among all scores (ties get mid-ranks), i.e. ``P(s_P > s_N) + ½ P(s_P = s_N)``;
- **refusal AUROC**: the same with ``s(x) = r_k·x``, ``r_k = μ_must_refuse − μ_ordinary`` (difference in
  means) over the items outside fold ``k``: the refusal direction at that layer and position, never fitted
  on the items it scores;
- **intervals**: percentile bootstrap of ``A`` over the out-of-fold scores, resampling items with
  replacement within each class (``B`` resamples, level ``1 − α``); the fitted probes are held fixed, so
  the interval is the spread from the finite evaluation sample, not the refit variance;
- **cosines**: ``cos(w, r) = w·r / (‖w‖ ‖r‖)`` with ``w`` the probe and ``r`` the refusal direction each
  fitted on all items, and ``cos(μ_P − μ_N, r)`` for the difference in means of the pair;
- **by source**: the AUROC of the same out-of-fold scores restricted to one source of one class against
  all items of the other class (e.g. CValues alone against ``must_refuse``).

A cell where a direction cannot be estimated (e.g. every prompt ends in the same token at the embedding
output) is recorded with ``ok: false`` and its reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from r1probe.errors import R1ProbeError

#: the classes and the default pairs (positive class first)
CLASSES = ("must_refuse", "borderline", "ordinary")
PAIRS = (("must_refuse", "borderline"), ("must_refuse", "ordinary"), ("borderline", "ordinary"))
#: the refusal direction's classes (positive, negative)
REFUSAL = ("must_refuse", "ordinary")
RESULT = "separability.json"
#: the salt of the per-class sampling order (not the partition salt: the CValues dev part is itself a cut of
#: the ``r1probe.data.borderline`` hash order, so that order would put the other sources first)
SAMPLE_SALT = "r1probe-separability-v1"
FIGURE = "separability_auroc"


class SeparabilityError(R1ProbeError):
    """Bad settings or data for the separability measurement."""


def pair_name(pos: str, neg: str) -> str:
    return f"{pos}_vs_{neg}"


# --- maths ------------------------------------------------------------------------------------------------

def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold of each of ``n`` items: ``π(i) mod K`` with ``π`` a permutation drawn from ``seed``."""
    perm = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[perm] = np.arange(n) % folds
    return out


def auroc(s_pos, s_neg) -> float:
    """Mann–Whitney AUROC ``(R_P − n_P (n_P + 1)/2) / (n_P n_N)`` (mid-ranks for ties); NaN when a side is
    empty or a score is not finite."""
    p, q = np.asarray(s_pos, np.float64).ravel(), np.asarray(s_neg, np.float64).ravel()
    if not len(p) or not len(q) or not (np.isfinite(p).all() and np.isfinite(q).all()):
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(np.r_[p, q])
    return float((r[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q)))


def bootstrap_auroc(s_pos, s_neg, *, B: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auroc`: ``B`` resamples of each class with replacement
    (``(NaN, NaN)`` when undefined)."""
    p, q = np.asarray(s_pos, np.float64).ravel(), np.asarray(s_neg, np.float64).ravel()
    if B < 1 or not len(p) or not len(q) or not (np.isfinite(p).all() and np.isfinite(q).all()):
        return float("nan"), float("nan")
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    sp = p[rng.integers(0, len(p), (B, len(p)))]
    sq = q[rng.integers(0, len(q), (B, len(q)))]
    r = rankdata(np.concatenate([sp, sq], 1), axis=1)
    a = (r[:, : len(p)].sum(1) - len(p) * (len(p) + 1) / 2) / (len(p) * len(q))
    lo, hi = np.quantile(a, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def cosine(a, b) -> float:
    """``cos(a, b) = a·b / (‖a‖ ‖b‖)`` in float64 (NaN when either is zero)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 0 else float("nan")


def _probe(pos, neg, C: float) -> np.ndarray:
    from r1probe.probes.estimators import logistic

    return logistic(pos, neg, C=C).double().numpy()


def _mean_diff(pos, neg) -> np.ndarray:
    from r1probe.probes.estimators import mean_diff

    return mean_diff(pos, neg).double().numpy()


def cell_separability(X: Mapping[str, np.ndarray], folds: Mapping[str, np.ndarray],
                      pairs: Sequence[tuple[str, str]] = PAIRS, *, refusal: tuple[str, str] = REFUSAL,
                      sources: Mapping[str, Sequence[str]] | None = None, C: float = 0.1, B: int = 1000,
                      level: float = 0.95, seed: int = 0) -> dict[str, dict]:
    """The measures of the module doc at one layer and position.

    ``X[class]``: ``[n_class, d]`` activations; ``folds[class]``: the fold of each row (:func:`fold_ids`);
    ``sources[class]``: the source name of each row (for the by-source AUROCs). Returns
    ``{pair_name: {"ok", "probe_auroc", "probe_ci", "refusal_auroc", "refusal_ci", "cos_probe_refusal",
    "cos_meandiff_refusal", "by_source"}}`` (``{"ok": False, "error"}`` for a degenerate cell).
    """
    from r1probe.probes.estimators import DegenerateError

    X = {k: np.asarray(v, np.float64) for k, v in X.items()}
    K = int(max(int(np.max(f)) for f in folds.values())) + 1
    rp, rn = refusal
    out: dict[str, dict] = {}
    try:
        r_k = [_mean_diff(X[rp][folds[rp] != k], X[rn][folds[rn] != k]) for k in range(K)]
        r_all = _mean_diff(X[rp], X[rn])
    except DegenerateError as e:
        return {pair_name(p, n): {"ok": False, "error": f"refusal direction: {e}"} for p, n in pairs}
    for j, (p, n) in enumerate(pairs):
        name = pair_name(p, n)
        try:
            sp, sn = np.empty(len(X[p])), np.empty(len(X[n]))
            rsp, rsn = np.empty(len(X[p])), np.empty(len(X[n]))
            for k in range(K):
                tp, tn = folds[p] == k, folds[n] == k
                w = _probe(X[p][~tp], X[n][~tn], C)
                sp[tp], sn[tn] = X[p][tp] @ w, X[n][tn] @ w
                rsp[tp], rsn[tn] = X[p][tp] @ r_k[k], X[n][tn] @ r_k[k]
            w_all = _probe(X[p], X[n], C)
            md = _mean_diff(X[p], X[n])
        except DegenerateError as e:
            out[name] = {"ok": False, "error": str(e)}
            continue
        cell = {"ok": True, "n_pos": len(sp), "n_neg": len(sn),
                "probe_auroc": auroc(sp, sn), "probe_ci": bootstrap_auroc(sp, sn, B=B, seed=seed + j, level=level),
                "refusal_auroc": auroc(rsp, rsn),
                "refusal_ci": bootstrap_auroc(rsp, rsn, B=B, seed=seed + j, level=level),
                "cos_probe_refusal": cosine(w_all, r_all), "cos_meandiff_refusal": cosine(md, r_all)}
        by = {}
        for cls, s, other, pos_side in ((p, sp, sn, True), (n, sn, sp, False)):
            src = np.asarray((sources or {}).get(cls, []))
            names = sorted(set(src.tolist()))
            if len(names) > 1:
                for sname in names:
                    m = src == sname
                    by[f"{cls}:{sname}"] = {"n": int(m.sum()),
                                            "probe_auroc": auroc(s[m], other) if pos_side else auroc(other, s[m])}
        cell["by_source"] = by
        out[name] = cell
    return out


# --- data -------------------------------------------------------------------------------------------------

def separability_classes(n: int, *, data_root: str | os.PathLike | None = None,
                         seed: int = 0) -> dict[str, list]:
    """``{class: [Item]}``: the first ``n`` items of each class's dev part (see the module doc)."""
    from r1probe.data import benchmarks as B
    from r1probe.data.borderline import Item, hash_order
    from r1probe.data.partitions import partition_ids
    from r1probe.data.prompts import load_prompt_set

    def builtin(name, source):
        ps = load_prompt_set(f"builtin:{name}")
        return [Item(id=f"{name}/{p.id}", text=p.text, source=source)
                for s in ("train", "val") for p in ps.split(s, seed=seed).prompts]

    cv_dev = set(partition_ids("cvalues", "dev", root=data_root, seed=seed))
    xs_dev = set(partition_ids("xstest-safe", "dev", root=data_root, seed=seed))
    pools = {
        "must_refuse": builtin("zh-harmful", "zh-harmful"),
        "borderline": [Item(id=it.id, text=it.text, source="cvalues") for it in B.load_cvalues(data_root)
                       if it.id in cv_dev]
        + [Item(id=it.id, text=it.text, source="xstest-safe") for it in B.load_xstest(data_root, "safe")
           if it.id in xs_dev],
        "ordinary": builtin("zh-harmless", "zh-harmless"),
    }
    out, seen = {}, set()
    for cls, items in pools.items():
        keep = []
        for it in hash_order(items, SAMPLE_SALT):
            t = it.text.strip()
            if t and t not in seen:
                seen.add(t)
                keep.append(it)
        if len(keep) < n:
            raise SeparabilityError(f"--n {n}: the {cls} dev part holds only {len(keep)} distinct prompts")
        out[cls] = keep[:n]
    return out


def class_states(lm, items: Sequence, *, layers: Sequence[int], positions: Sequence[int], site: str = "resid_pre",
                 batch_size: int | None = None) -> np.ndarray:
    """Activations ``[n_items, n_layers, n_positions, d]`` (float32) of the chat-formatted prompts."""
    import torch

    from r1probe.extract.read import read_activations

    acts = read_activations(lm, [lm.chat.format(it.text) for it in items], sites=[site], positions=list(positions),
                            layers=list(layers), batch_size=batch_size)
    return torch.stack([acts[(site, int(L))] for L in layers], 1).numpy()


# --- the measurement ----------------------------------------------------------------------------------------

def check_settings(*, n: int, folds: int, positions: Sequence, bootstrap: int, C: float, level: float) -> None:
    """One-line :class:`SeparabilityError` for settings that cannot give a measurement."""
    if folds < 2:
        raise SeparabilityError(f"--folds {folds}: need at least 2")
    if n < 2 * folds:
        raise SeparabilityError(f"--n {n}: need at least 2 items per fold ({2 * folds} with {folds} folds)")
    if not positions:
        raise SeparabilityError("--positions: give at least one offset (e.g. -1,-3)")
    bad = [p for p in positions if isinstance(p, bool) or not isinstance(p, int) or p >= 0]
    if bad:
        raise SeparabilityError(f"--positions: {bad[0]!r} is not a negative offset (-1 = last prompt token)")
    if bootstrap < 0:
        raise SeparabilityError(f"--bootstrap {bootstrap}: must be >= 0")
    if not C > 0:
        raise SeparabilityError(f"--C {C}: must be > 0")
    if not 0 < level < 1:
        raise SeparabilityError(f"level {level}: must be in (0, 1)")


def measure(states: Mapping[str, np.ndarray], layers: Sequence[int], positions: Sequence[int], *,
            pairs: Sequence[tuple[str, str]] = PAIRS, sources: Mapping[str, Sequence[str]] | None = None,
            folds: int = 5, seed: int = 0, C: float = 0.1, bootstrap: int = 1000, level: float = 0.95,
            progress: Callable[[str], None] | None = None) -> list[dict]:
    """:func:`cell_separability` at every layer and position of ``states[class]``
    (``[n, n_layers, n_positions, d]``); one row per (pair, layer, position)."""
    fid = {c: fold_ids(len(v), folds, seed + i) for i, (c, v) in enumerate(sorted(states.items()))}
    rows = []
    total = len(layers) * len(positions)
    for a, L in enumerate(layers):
        for b, t in enumerate(positions):
            X = {c: v[:, a, b, :] for c, v in states.items()}
            cells = cell_separability(X, fid, pairs, sources=sources, C=C, B=bootstrap, level=level, seed=seed)
            for name, cell in cells.items():
                rows.append({"pair": name, "layer": int(L), "position": int(t), **cell})
            if progress:
                progress(f"cells: {a * len(positions) + b + 1}/{total}")
    return rows


def summarize(rows: Sequence[dict], pairs: Sequence[tuple[str, str]] = PAIRS) -> dict[str, dict]:
    """Per pair: the cell with the highest probe AUROC and the refusal direction's best AUROC."""
    out = {}
    for p, n in pairs:
        name = pair_name(p, n)
        ok = [r for r in rows if r["pair"] == name and r.get("ok") and np.isfinite(r["probe_auroc"])]
        if not ok:
            out[name] = {"ok": False}
            continue
        best = max(ok, key=lambda r: r["probe_auroc"])
        fin = [r for r in ok if np.isfinite(r["refusal_auroc"])]
        rbest = max(fin, key=lambda r: r["refusal_auroc"]) if fin else None
        out[name] = {"ok": True, "best_layer": best["layer"], "best_position": best["position"],
                     "probe_auroc": best["probe_auroc"], "probe_ci": best["probe_ci"],
                     "refusal_auroc_same_cell": best["refusal_auroc"], "refusal_ci_same_cell": best["refusal_ci"],
                     "cos_probe_refusal_same_cell": best["cos_probe_refusal"],
                     "by_source_same_cell": best.get("by_source") or {},
                     "refusal_best": None if rbest is None else {
                         "layer": rbest["layer"], "position": rbest["position"], "auroc": rbest["refusal_auroc"],
                         "ci": rbest["refusal_ci"]}}
    return out


def _clean(x):
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    return x


def run_separability(lm, out: str | os.PathLike, *, n: int = 96, layers: Sequence[int] | None = None,
                     positions: Sequence[int] = (-1, -3), site: str = "resid_pre", folds: int = 5, seed: int = 0,
                     C: float = 0.1, bootstrap: int = 1000, level: float = 0.95, batch_size: int | None = None,
                     data_root: str | os.PathLike | None = None, figure: bool = True,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Read the classes, measure every layer and position, write ``out/separability.json``,
    ``out/tuning_reads.json`` (the ids read) and the figure ``out/separability_auroc.{png,pdf,json}``; returns
    the result dict."""
    from r1probe.data.partitions import reads_of, write_tuning_reads
    from r1probe.models.loader import model_provenance
    from r1probe.provenance import atomic_write_json, base_manifest, sha256_json

    positions = [int(p) for p in positions]
    check_settings(n=n, folds=folds, positions=positions, bootstrap=bootstrap, C=C, level=level)
    layers = list(range(lm.layout.n_layers)) if layers is None else [int(L) for L in layers]
    bad = [L for L in layers if not 0 <= L < lm.layout.n_layers]
    if bad or not layers:
        raise SeparabilityError(f"--layers: layer {bad[0] if bad else '(none)'} is not one of the model's "
                                f"layers 0-{lm.layout.n_layers - 1}")
    classes = separability_classes(n, data_root=data_root, seed=seed)
    states, sources = {}, {}
    for c, items in classes.items():
        if progress:
            progress(f"reading {len(items)} {c} prompts at {len(layers)} layers")
        states[c] = class_states(lm, items, layers=layers, positions=positions, site=site, batch_size=batch_size)
        sources[c] = [it.source for it in items]
    rows = measure(states, layers, positions, sources=sources, folds=folds, seed=seed, C=C, bootstrap=bootstrap,
                   level=level, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reads = reads_of(it.id for items in classes.values() for it in items)
    result = base_manifest(
        kind="separability", **model_provenance(lm),
        settings={"n": n, "layers": layers, "positions": positions, "site": site, "folds": folds, "seed": seed,
                  "C": C, "bootstrap": bootstrap, "level": level, "refusal_direction": list(REFUSAL),
                  "pairs": [list(p) for p in PAIRS]},
        classes={c: {"n": len(items), "sources": {s: sum(it.source == s for it in items)
                                                  for s in sorted({it.source for it in items})},
                     "sha256": sha256_json([[it.id, it.text] for it in items])} for c, items in classes.items()},
        summary=summarize(rows), cells=rows)
    result = _clean(result)
    write_tuning_reads(out, reads)
    atomic_write_json(out / RESULT, result)
    if figure:
        result["figure"] = draw_separability(result, out / FIGURE, sources=[out / RESULT])
    return result


# --- report -----------------------------------------------------------------------------------------------

def _series(rows, pair, pos, key):
    pts = sorted((r["layer"], r) for r in rows if r["pair"] == pair and r["position"] == pos)
    xs = [L for L, _ in pts]
    ys = [np.nan if not r.get("ok") or r.get(key) is None else r[key] for _, r in pts]
    return xs, ys, [r for _, r in pts]


def draw_separability(result: Mapping, out_base: str | os.PathLike, sources: Sequence = ()) -> dict:
    """One panel per pair: held-out probe AUROC against layer (solid, bootstrap band) per position, and the
    refusal direction's AUROC (dashed)."""
    from r1probe.analysis.figures import new_figure, save_figure
    from r1probe.analysis.style import color_for

    rows = result["cells"]
    pairs = [pair_name(*p) for p in result["settings"]["pairs"]]
    positions = result["settings"]["positions"]
    fig, axes = new_figure(1, len(pairs), figsize=(4.2 * len(pairs), 3.6), sharey=True, squeeze=False)
    data = {}
    for ax, pair in zip(axes[0], pairs):
        for i, t in enumerate(positions):
            xs, ys, rs = _series(rows, pair, t, "probe_auroc")
            _, ry, _ = _series(rows, pair, t, "refusal_auroc")
            lo = [np.nan if not r.get("ok") or r["probe_ci"][0] is None else r["probe_ci"][0] for r in rs]
            hi = [np.nan if not r.get("ok") or r["probe_ci"][1] is None else r["probe_ci"][1] for r in rs]
            c = color_for(i)
            ax.plot(xs, ys, "-", color=c, marker="o", ms=2.5, label=f"probe, pos {t}")
            ax.fill_between(xs, lo, hi, color=c, alpha=0.15, lw=0)
            ax.plot(xs, ry, "--", color=c, label=f"refusal dir., pos {t}")
            data[f"{pair}@{t}"] = {"layers": xs, "probe_auroc": ys, "refusal_auroc": ry}
        ax.axhline(0.5, color="0.6", lw=0.6)
        ax.set_title(pair.replace("_vs_", " vs ").replace("_", "-"), fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylim(0.3, 1.02)
    axes[0][0].set_ylabel("held-out AUROC")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    caption = ("Held-out AUROC of a logistic probe (solid, 95% bootstrap band) and of the projection on the "
               "difference-in-means refusal direction (dashed), per layer and post-instruction position.")
    return save_figure(fig, out_base, sources, data=_clean(data), caption=caption)


def load_result(path: str | os.PathLike) -> dict:
    """``separability.json`` (``path``: the file or its folder); one-line error when missing or not one."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT
    try:
        data = json.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise SeparabilityError(f"{p}: no separability result (run r1probe probe separability)") from None
    except json.JSONDecodeError as e:
        raise SeparabilityError(f"{p}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or data.get("kind") != "separability" or "cells" not in data:
        raise SeparabilityError(f"{p}: not a separability result")
    return data


def _f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def _ci(v, ci):
    return _f(v) if not ci or ci[0] is None else f"{_f(v)} [{_f(ci[0])}, {_f(ci[1])}]"


def separability_section(path: str | os.PathLike, *, rel_to: str | os.PathLike | None = None,
                         heading: str = "##") -> str:
    """A markdown section for a report: per pair the best cell's probe AUROC with its interval beside the
    refusal direction's AUROC there, the cosine of the two directions, and the figure (linked relative to
    ``rel_to`` when given)."""
    p = Path(path)
    data = load_result(p)
    folder = p if p.is_dir() else p.parent
    s = data["settings"]
    cls = data["classes"]
    md = [f"{heading} Separability of must-refuse, borderline and ordinary prompts", "",
          f"Model {data.get('model')}; {s['site']} at layers {s['layers'][0]}-{s['layers'][-1]}, positions "
          f"{', '.join(map(str, s['positions']))}; {s['folds']}-fold cross-fitted logistic probe (C {s['C']}) and "
          f"the difference-in-means refusal direction ({s['refusal_direction'][0]} − {s['refusal_direction'][1]}); "
          f"{int(s['level'] * 100)}% bootstrap intervals ({s['bootstrap']} resamples). Classes (dev parts): "
          + "; ".join(f"{c} {v['n']} ({', '.join(f'{k} {m}' for k, m in v['sources'].items())})"
                      for c, v in cls.items()) + ".", "",
          "| pair | best layer, pos | probe AUROC | refusal-dir. AUROC there | cos(probe, refusal) | "
          "best refusal-dir. AUROC (layer, pos) |", "|---|---|---|---|---|---|"]
    for name, v in data["summary"].items():
        if not v.get("ok"):
            md.append(f"| {name} | – | – | – | – | – |")
            continue
        rb = v.get("refusal_best")
        md.append(f"| {name.replace('_vs_', ' vs ')} | {v['best_layer']}, {v['best_position']} | "
                  f"{_ci(v['probe_auroc'], v['probe_ci'])} | "
                  f"{_ci(v['refusal_auroc_same_cell'], v['refusal_ci_same_cell'])} | "
                  f"{_f(v['cos_probe_refusal_same_cell'])} | "
                  + ("–" if rb is None else f"{_ci(rb['auroc'], rb['ci'])} ({rb['layer']}, {rb['position']})") + " |")
    extra = [f"{name.replace('_vs_', ' vs ')} at its best cell: "
             + ", ".join(f"{k} (n {x['n']}) {_f(x['probe_auroc'])}" for k, x in v["by_source_same_cell"].items())
             for name, v in data["summary"].items() if v.get("ok") and v.get("by_source_same_cell")]
    if extra:
        md += ["", "Probe AUROC by source (one source of a class against the whole other class): "
               + "; ".join(extra) + "."]
    fig = folder / f"{FIGURE}.png"
    if fig.exists():
        link = os.path.relpath(fig, rel_to) if rel_to is not None else str(fig)
        md += ["", f"![separability]({link})"]
    return "\n".join(md) + "\n"


__all__ = ["CLASSES", "PAIRS", "REFUSAL", "RESULT", "SeparabilityError", "pair_name", "fold_ids", "auroc",
           "bootstrap_auroc", "cosine", "cell_separability", "separability_classes", "class_states",
           "check_settings", "measure", "summarize", "run_separability", "draw_separability", "load_result",
           "separability_section"]
