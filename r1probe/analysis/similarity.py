"""Pure functions comparing representations of two models (cosine, CKA, projections, depth maps)."""

from __future__ import annotations

import numpy as np
import torch

from r1probe.probes.metrics import cohens_d


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def cosine(a, b) -> float:
    """cos(a, b) = a·b / (‖a‖ ‖b‖); NaN when either vector is zero."""
    a, b = _np(a).ravel(), _np(b).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def linear_cka(x, y) -> float:
    """Linear CKA (Kornblith et al. 2019) between activations of the same n inputs.

    With column-centred X (n×p) and Y (n×q):  CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F).
    Invariant to orthogonal transforms and isotropic scaling; 1 for identical representations;
    works when p ≠ q (models of different widths).
    """
    x, y = _np(x), _np(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same inputs: {x.shape[0]} vs {y.shape[0]} rows")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    # n×n Gram form is cheaper when n < p
    kx, ky = x @ x.T, y @ y.T
    hsic = float((kx * ky).sum())
    den = float(np.sqrt((kx * kx).sum() * (ky * ky).sum()))
    return hsic / den if den > 0 else float("nan")


def project(acts, direction) -> np.ndarray:
    """Scalar projection of each row onto the unit direction: p_i = h_i · d / ‖d‖."""
    d = _np(direction).ravel()
    n = np.linalg.norm(d)
    if n == 0:
        raise ValueError("zero-norm direction")
    return _np(acts) @ (d / n)


def relative_depth_map(n_a: int, n_b: int) -> list[tuple[int, int]]:
    """Pairs (i, j) of layers at equal relative depth: j = round(i (n_b − 1) / (n_a − 1))."""
    if n_a < 1 or n_b < 1:
        raise ValueError("layer counts must be positive")
    if n_a == 1:
        return [(0, 0)]
    return [(i, int(round(i * (n_b - 1) / (n_a - 1)))) for i in range(n_a)]


def separation(proj_pos, proj_neg) -> float:
    """Cohen's d of two projection samples: (μ₊ − μ₋) / sqrt((σ₊² + σ₋²)/2) (see :func:`r1probe.probes.metrics.cohens_d`)."""
    return cohens_d(proj_pos, proj_neg)


def auroc_along(acts, labels, direction) -> float:
    """AUROC of the projection onto ``direction`` for separating label 1 from label 0."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y, project(acts, direction)))


def bootstrap_direction_similarity(xa, xb, labels, *, B: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile-bootstrap intervals, over prompts, of two models' refusal directions at one layer.

    ``xa``, ``xb``: activations of models A and B on the same prompts (rows aligned), ``labels`` 1 = harmful.
    Each resample draws the harmful rows and the harmless rows with replacement, the same rows for both
    models (paired), and recomputes the difference-in-means directions ``d = mean(x[y=1]) - mean(x[y=0])``:

    - ``cosine``: ``cos(d_A, d_B)``;
    - ``transfer_auroc``: AUROC of ``x_B · d_A`` (A's direction read out of B's activations) on the resample;
    - ``transfer_auroc_reverse``: AUROC of ``x_A · d_B`` (B's direction read out of A's activations).

    Returns ``{"cosine": [lo, hi], "transfer_auroc": [lo, hi], "transfer_auroc_reverse": [lo, hi]}`` (the
    ``level`` percentile interval).
    """
    from sklearn.metrics import roc_auc_score

    a, b, y = _np(xa).astype(np.float64), _np(xb).astype(np.float64), np.asarray(labels)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) < 2 or len(neg) < 2:
        return {k: [float("nan")] * 2 for k in ("cosine", "transfer_auroc", "transfer_auroc_reverse")}
    rng = np.random.default_rng(seed)
    cos, auc, rev = [], [], []
    for _ in range(B):
        p, n = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        da, db = a[p].mean(0) - a[n].mean(0), b[p].mean(0) - b[n].mean(0)
        cos.append(float(da @ db / (np.linalg.norm(da) * np.linalg.norm(db) + 1e-300)))
        idx = np.concatenate([p, n])
        auc.append(float(roc_auc_score(y[idx], b[idx] @ da)))
        rev.append(float(roc_auc_score(y[idx], a[idx] @ db)))
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: [float(v) for v in np.percentile(xs, q)]
            for k, xs in (("cosine", cos), ("transfer_auroc", auc), ("transfer_auroc_reverse", rev))}
