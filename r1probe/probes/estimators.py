"""Direction estimators: pure functions from two activation matrices to one direction.

``pos`` holds activations of the positive class (harmful prompts, ``[n_pos, d]``), ``neg`` those of
the negative class (harmless, ``[n_neg, d]``). Every estimator returns a float32 vector ``[d]``
oriented so that positives project higher than negatives (``(μ₊ − μ₋)·r ≥ 0``).
Degenerate input raises :class:`DegenerateError` (one line), which the per-cell code reports.
"""

from __future__ import annotations

import numpy as np
import torch

from r1probe.errors import R1ProbeError

ESTIMATORS = ("mean_diff", "logistic", "pca", "lda")
MIN_ROWS = 2


class DegenerateError(R1ProbeError):
    """A cell whose direction cannot be estimated (too few rows, NaN input, zero difference)."""


def _as64(x, what: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.dim() != 2:
        raise DegenerateError(f"{what}: expected a matrix [n, d], got shape {tuple(x.shape)}")
    if x.shape[0] < MIN_ROWS:
        raise DegenerateError(f"{what}: only {x.shape[0]} row(s), need at least {MIN_ROWS}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        raise DegenerateError(f"{what}: {bad} row(s) with NaN/inf activations")
    return x


def check_pair(pos, neg) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert two classes to float64 CPU matrices of the same width."""
    p, n = _as64(pos, "positive class"), _as64(neg, "negative class")
    if p.shape[1] != n.shape[1]:
        raise DegenerateError(f"class widths differ ({p.shape[1]} vs {n.shape[1]})")
    return p, n


def mean_diff(pos, neg, *, eps: float = 1e-8) -> torch.Tensor:
    """Difference in means ``r = μ₊ − μ₋`` with ``μ = (1/n) Σᵢ xᵢ`` accumulated in float64.

    The vector is *not* normalised: its norm is the size of the shift, which the induce
    intervention adds (``x ← x + r``). Raises :class:`DegenerateError` when ``‖r‖ ≤ eps·(‖μ₊‖+‖μ₋‖)``
    (e.g. at the embedding layer where every prompt ends in the same template token).
    """
    p, n = check_pair(pos, neg)
    mp, mn = p.mean(0), n.mean(0)
    r = mp - mn
    scale = float(mp.norm() + mn.norm())
    if float(r.norm()) <= eps * max(scale, 1.0):
        raise DegenerateError("zero-norm mean difference (both classes have the same mean here)")
    return r.float()


def logistic(pos, neg, *, C: float | None = None, Cs=(1e-2, 1e-1, 1.0), folds: int = 3,
             seed: int = 0, standardize: bool = True, max_iter: int = 2000) -> torch.Tensor:
    """L2 logistic regression ``p(y=1|x) = σ(w·x + b)``, ``C`` chosen by stratified CV; returns ``w``.

    Features are centred on the pooled mean (and scaled by the pooled std when ``standardize``,
    then ``w`` is mapped back: ``w_x = w_z / σ``) so the bias does not absorb the signal.
    Standardised by default: the residual stream has a few huge dimensions that slow the solver.
    The weight vector is returned in float32, oriented towards the positive class. A fixed ``C``
    skips the search; the chosen ``C`` is kept in ``logistic.last_C`` (read by the cell report).
    """
    import warnings

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    p, n = check_pair(pos, neg)
    X = torch.cat([p, n]).numpy()
    y = np.r_[np.ones(len(p)), np.zeros(len(n))]
    mu = X.mean(0)
    sd = X.std(0) + 1e-6 if standardize else np.ones(X.shape[1])
    Z = (X - mu) / sd
    k = min(folds, len(p), len(n))
    from threadpoolctl import threadpool_limits

    # one BLAS thread: tiny problems, and spinning BLAS threads stall on a shared CPU
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", FutureWarning)
        if C is None and k >= 2:
            from sklearn.model_selection import StratifiedKFold

            clf = LogisticRegressionCV(Cs=list(Cs), cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                       max_iter=max_iter, scoring="roc_auc")
            clf.fit(Z, y)
            logistic.last_C = float(np.ravel(clf.C_)[0])
        else:
            clf = LogisticRegression(C=1.0 if C is None else float(C), max_iter=max_iter)
            clf.fit(Z, y)
            logistic.last_C = float(clf.C)
    w = clf.coef_[0] / sd
    if not np.isfinite(w).all() or np.linalg.norm(w) == 0:
        raise DegenerateError("logistic regression gave a zero or non-finite weight vector")
    return torch.from_numpy(w).float()


logistic.last_C = None


def pca(pos, neg, *, seed: int = 0) -> torch.Tensor:
    """First principal component of paired differences (RepE): ``r = argmax_‖v‖=1 Σₖ ((δₖ − δ̄)·v)²``.

    ``δₖ = x₊,π(k) − x₋,σ(k)`` pairs each positive with a negative (random permutations ``π, σ``
    from ``seed``, ``m = min(n₊, n₋)`` pairs); half of the pairs are flipped in sign (as RepE does), so
    the component captures the class axis rather than the mean offset. Unit norm, float32, oriented so
    that ``(μ₊ − μ₋)·r ≥ 0``.
    """
    p, n = check_pair(pos, neg)
    g = torch.Generator().manual_seed(seed)
    m = min(len(p), len(n))
    d = p[torch.randperm(len(p), generator=g)[:m]] - n[torch.randperm(len(n), generator=g)[:m]]
    sign = torch.ones(m, dtype=torch.float64)
    sign[torch.randperm(m, generator=g)[: m // 2]] = -1.0
    d = d * sign[:, None]
    d = d - d.mean(0)
    if float(d.norm()) == 0.0:
        raise DegenerateError("paired differences are all zero")
    _, _, vh = torch.linalg.svd(d, full_matrices=False)
    v = vh[0]
    if float((p.mean(0) - n.mean(0)) @ v) < 0:
        v = -v
    return v.float()


def lda(pos, neg, *, shrinkage: float = 0.98) -> torch.Tensor:
    """Shrunk linear discriminant: the mean difference whitened by a heavily shrunk covariance.

    ``w = Σₛ⁻¹ (μ₊ − μ₋)`` with ``Σₛ = (1 − s) Σ + s (tr Σ / d) I`` (``Σ`` the pooled within-class
    covariance; scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=s)``). ``s = 1``
    gives back the difference in means, ``s → 0`` the (non-causal) Fisher discriminant, which reads the
    class out best by leaning on directions the model does not use to refuse. In between it keeps
    most of the mean difference while discounting the few high-variance dimensions that blur the
    projection. Returned as
    ``r = ŵ (ŵ·(μ₊ − μ₋))``: unit direction ``ŵ`` scaled by the mean difference along it, so adding
    ``r`` shifts a harmless mean towards the harmful one as ``mean_diff`` does.
    """
    import warnings

    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from threadpoolctl import threadpool_limits

    if not 0.0 <= float(shrinkage) <= 1.0:
        raise R1ProbeError(f"lda shrinkage {shrinkage}: must be in [0, 1]")
    p, n = check_pair(pos, neg)
    delta = p.mean(0) - n.mean(0)
    X = torch.cat([p, n]).numpy()
    y = np.r_[np.ones(len(p)), np.zeros(len(n))]
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        w = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=float(shrinkage)).fit(X, y).coef_[0]
    w = torch.from_numpy(np.asarray(w, dtype=np.float64))
    if not torch.isfinite(w).all() or float(w.norm()) == 0:
        raise DegenerateError("shrunk LDA gave a zero or non-finite direction")
    u = w / w.norm()
    along = float(delta @ u)
    if along <= 0:
        raise DegenerateError("shrunk LDA direction has no component along the mean difference")
    return (u * along).float()


def estimate(name: str, pos, neg, **kw) -> torch.Tensor:
    """Dispatch to an estimator by name (``mean_diff`` | ``logistic`` | ``pca`` | ``lda``)."""
    fns = {"mean_diff": mean_diff, "logistic": logistic, "pca": pca, "lda": lda}
    if name not in fns:
        raise R1ProbeError(f"unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    return fns[name](pos, neg, **kw)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """``cos(a, b) = a·b / (‖a‖ ‖b‖)`` in float64 (NaN when either is zero)."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float("nan")
