"""Per-cell probe metrics: held-out accuracy, AUROC and F1 from stratified cross-validation.

For each fold every estimator is fitted on the training rows; held-out rows are scored by their
projection ``s(x) = x·r`` (``mean_diff``, ``pca``) or by ``w·x + b`` (``logistic``), and classified
positive when ``s(x) > t`` with ``t`` the midpoint of the two training-class mean scores. Metrics are
computed on the pooled out-of-fold scores. The logistic ``C`` is chosen once per cell by inner
3-fold CV on all rows and then kept fixed in the outer folds (cheap; slightly optimistic).
Degenerate cells yield ``{"ok": False, "error": ...}``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from r1probe.probes import estimators as E


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2 or not np.isfinite(s).all():
        return float("nan")
    return float(roc_auc_score(y, s))


def cohens_d(proj_pos, proj_neg) -> float:
    """Cohen's d of two projection samples: ``(μ₊ − μ₋) / sqrt((σ₊² + σ₋²) / 2)``.

    Variances are unbiased (``ddof=1``); NaN when a class has fewer than two rows or both are constant.
    """
    p, q = _float64(proj_pos), _float64(proj_neg)
    s = np.sqrt((p.var(ddof=1) + q.var(ddof=1)) / 2) if len(p) > 1 and len(q) > 1 else 0.0
    return float((p.mean() - q.mean()) / s) if s > 0 else float("nan")


def _float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def binary_metrics(y, scores, threshold: float | np.ndarray = 0.0) -> dict:
    """Accuracy, AUROC and F1 of ``scores > threshold`` against labels ``y`` (1 = positive)."""
    from sklearn.metrics import f1_score

    y = np.asarray(y).astype(int)
    s = np.asarray(scores, float)
    pred = (s > threshold).astype(int)
    return {"accuracy": float((pred == y).mean()), "auroc": _auroc(y, s),
            "f1": float(f1_score(y, pred, zero_division=0))}


def _fold_scores(name, Xtr, ytr, Xte, seed, logistic_kw):
    pos, neg = Xtr[ytr == 1], Xtr[ytr == 0]
    kw = dict(logistic_kw) if name == "logistic" else ({"seed": seed} if name == "pca" else {})
    r = E.estimate(name, pos, neg, **kw).double()
    s_tr = Xtr @ r
    t = 0.5 * (float(s_tr[ytr == 1].mean()) + float(s_tr[ytr == 0].mean()))
    return (Xte @ r).numpy(), t


def cv_metrics(pos, neg, estimators=E.ESTIMATORS, *, folds: int = 5, seed: int = 0,
               logistic_kw: dict | None = None) -> dict[str, dict]:
    """Out-of-fold accuracy/AUROC/F1 per estimator (stratified ``folds``-fold CV, shuffled with ``seed``).

    Returns ``{estimator: {"accuracy", "auroc", "f1"}}``, or ``{"ok": False, "error": msg}`` for an
    estimator that failed on some fold (degenerate data).
    """
    from sklearn.model_selection import StratifiedKFold

    p, n = E.check_pair(pos, neg)
    X = torch.cat([p, n])
    y = torch.cat([torch.ones(len(p)), torch.zeros(len(n))]).long()
    k = min(folds, len(p), len(n))
    out: dict[str, dict] = {}
    if k < 2:
        return {e: {"ok": False, "error": "too few rows per class for cross-validation"} for e in estimators}
    skf = StratifiedKFold(k, shuffle=True, random_state=seed)
    lkw = dict(logistic_kw or {"seed": seed})
    for name in estimators:
        scores = np.zeros(len(y))
        thr = np.zeros(len(y))
        try:
            for tr, te in skf.split(np.zeros(len(y)), y.numpy()):
                tr_t, te_t = torch.as_tensor(tr), torch.as_tensor(te)
                s, t = _fold_scores(name, X[tr_t], y[tr_t], X[te_t], seed, lkw)
                scores[te] = s
                thr[te] = t
        except E.DegenerateError as e:
            out[name] = {"ok": False, "error": str(e)}
            continue
        out[name] = {"ok": True, **binary_metrics(y.numpy(), scores - thr, 0.0)}
    return out


def cell_report(pos, neg, estimators=E.ESTIMATORS, *, folds: int = 5, seed: int = 0,
                logistic_kw: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Fit every estimator on all rows and cross-validate it; never raises on degenerate data.

    Returns ``(report, directions)``: ``report`` has per-estimator metrics plus ``norm`` (of the
    fitted vector), ``cosine`` between every pair of estimators, ``n_pos``/``n_neg`` and ``ok``;
    ``directions`` maps estimator name to its fitted float32 vector (only those that succeeded).
    """
    rep: dict = {"n_pos": int(len(pos)), "n_neg": int(len(neg)), "estimators": {}}
    dirs: dict[str, torch.Tensor] = {}
    try:
        E.check_pair(pos, neg)
    except E.DegenerateError as e:
        rep.update(ok=False, error=str(e))
        return rep, dirs
    lkw = dict(logistic_kw or {"seed": seed})
    entries: dict[str, dict] = {}
    for name in estimators:
        try:
            kw = lkw if name == "logistic" else ({"seed": seed} if name == "pca" else {})
            r = E.estimate(name, pos, neg, **kw)
            dirs[name] = r
            entries[name] = {"norm": float(r.double().norm())}
            if name == "logistic":
                entries[name]["C"] = E.logistic.last_C
                lkw = {**lkw, "C": E.logistic.last_C}  # outer CV reuses the C chosen on all rows
        except E.DegenerateError as e:
            entries[name] = {"ok": False, "error": str(e)}
    cv = cv_metrics(pos, neg, [e for e in estimators if e in dirs], folds=folds, seed=seed, logistic_kw=lkw)
    for name in estimators:
        if name in cv:
            entries[name] = {**cv[name], **entries[name]}
        rep["estimators"][name] = entries[name]
    names = sorted(dirs)
    rep["cosine"] = {f"{a}~{b}": E.cosine(dirs[a], dirs[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    rep["ok"] = bool(rep["estimators"].get("mean_diff", {}).get("ok", False))
    if not rep["ok"]:
        rep["error"] = rep["estimators"].get("mean_diff", {}).get("error", "mean_diff not computed")
    return rep, dirs


def finite_or_none(x):
    """JSON-safe float: NaN/inf become ``None``."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
