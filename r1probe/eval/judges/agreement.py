"""How well a judge agrees with the hand labels of the frozen test part of the judge set.

:func:`agreement` computes, for a judge's labels against the hand labels: refusal vs non-refusal
accuracy (labels 2/3 vs 0/1) with a Wilson 95% interval, Cohen's kappa over the four labels
(scikit-learn) with a percentile-bootstrap 95% interval, and the 4x4 confusion matrix (rows: hand
label, columns: judge label; an unparsed verdict is its own column ``None``).

:func:`judge_agreement` reads the recorded out-of-sample figures shipped with the package
(``judges/data/agreement.json``, written by ``scripts/build_judge_set.py measure``), so a report can
print the judge's agreement next to every rate it judged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

AGREEMENT_PATH = Path(__file__).parent / "data" / "agreement.json"
LABELS = (0, 1, 2, 3)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return (max(0.0, c - h), min(1.0, c + h))


def _kappa(y: Sequence[int], p: Sequence) -> float:
    from sklearn.metrics import cohen_kappa_score

    pp = [-1 if v is None else int(v) for v in p]
    if len(set(y) | set(pp)) < 2:
        return 1.0 if list(y) == pp else 0.0
    return float(cohen_kappa_score(list(y), pp, labels=[-1, *LABELS]))


def agreement(gold: Sequence[int], pred: Sequence, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Agreement of ``pred`` (judge labels, None = unparsed) with ``gold`` (hand labels)."""
    y = [int(g) for g in gold]
    n = len(y)
    ref_ok = [(g in (2, 3)) == (p in (2, 3)) for g, p in zip(y, pred)]
    k = int(sum(ref_ok))
    out = {"n": n, "refusal_accuracy": k / n if n else float("nan"), "refusal_accuracy_ci95": list(wilson(k, n)),
           "label_accuracy": float(np.mean([g == p for g, p in zip(y, pred)])) if n else float("nan"),
           "kappa": _kappa(y, pred) if n else float("nan")}
    rng = np.random.default_rng(seed)
    ks = []
    if n:
        ya = np.asarray(y)
        pa = np.asarray([-1 if v is None else int(v) for v in pred])
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            ks.append(_kappa(ya[idx].tolist(), pa[idx].tolist()))
    out["kappa_ci95"] = [float(np.percentile(ks, 2.5)), float(np.percentile(ks, 97.5))] if ks else [None, None]
    cols = [*LABELS, None]
    out["confusion"] = {str(g): {str(c): int(sum(1 for a, b in zip(y, pred) if a == g and b == c)) for c in cols}
                        for g in LABELS}
    out["n_unparsed"] = int(sum(p is None for p in pred))
    return out


def judge_agreement(judge: str | None = None, path: str | Path | None = None) -> dict | None:
    """The recorded frozen-test agreement of ``judge`` (e.g. ``"keyword"``, ``"trained"``): a dict with
    ``overall`` (see :func:`agreement`), ``by_source`` and ``test_set`` (size, sha256); None when
    nothing is recorded for it (an ``llm:SPEC`` judge is looked up by its whole spec; ``"default"``: the
    default judge). ``judge=None``: the whole record (all judges, the default judge)."""
    p = Path(path) if path is not None else AGREEMENT_PATH
    if not p.exists():
        return None
    d = json.loads(p.read_text("utf-8"))
    if judge is None:
        return d
    if judge == "default":
        judge = d.get("default", "keyword")
    return d.get("judges", {}).get(judge)


def agreement_line(judge: str | None, path: str | Path | None = None) -> str:
    """One line for a report: the judge's out-of-sample agreement, or that none is recorded."""
    rec = judge_agreement(judge or "keyword", path)
    if not rec:
        return f"judge {judge}: no out-of-sample agreement recorded"
    o = rec["overall"]
    lo, hi = o["refusal_accuracy_ci95"]
    klo, khi = o["kappa_ci95"]
    return (f"judge {judge}: refusal accuracy {o['refusal_accuracy']:.3f} [{lo:.3f}, {hi:.3f}], 4-label kappa "
            f"{o['kappa']:.3f} [{klo:.3f}, {khi:.3f}] on {o['n']} hand-labelled held-out replies")


__all__ = ["agreement", "judge_agreement", "agreement_line", "wilson", "AGREEMENT_PATH"]
