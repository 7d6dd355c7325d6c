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
