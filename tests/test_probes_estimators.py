"""Properties of the direction estimators and per-cell metrics (no model needed)."""

import math

import pytest
import torch

from r1probe.probes import estimators as E
from r1probe.probes.metrics import cell_report, cv_metrics


def _gauss(n=200, d=16, shift=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shift = torch.zeros(d).index_fill_(0, torch.tensor([3]), 2.0) if shift is None else shift
    neg = torch.randn(n, d, generator=g)
    pos = torch.randn(n, d, generator=g) + shift
    return pos, neg, shift


def test_mean_diff_recovers_shift():
    pos, neg, shift = _gauss(n=4000)
    r = E.mean_diff(pos, neg)
    assert r.dtype == torch.float32
    assert E.cosine(r, shift) > 0.99
    assert abs(float(r.norm()) - float(shift.norm())) < 0.1


def test_mean_diff_float64_accumulation():
    # a large common offset that float32 accumulation would blur
    pos = torch.full((1000, 4), 1e4, dtype=torch.float32)
    neg = pos.clone()
    pos[:, 0] += 0.5
    r = E.mean_diff(pos, neg)
    assert torch.allclose(r, torch.tensor([0.5, 0, 0, 0]), atol=1e-4)


def test_logistic_parallel_on_separable_data():
    pos, neg, shift = _gauss(n=150, shift=torch.zeros(16).index_fill_(0, torch.tensor([3]), 6.0))
    w = E.logistic(pos, neg, folds=3)
    assert E.cosine(w, shift) > 0.9
    assert float((pos.mean(0) - neg.mean(0)).double() @ w.double()) > 0


def test_pca_of_paired_differences_finds_axis_and_sign():
    pos, neg, shift = _gauss(n=300, shift=torch.zeros(16).index_fill_(0, torch.tensor([5]), 4.0))
    v = E.pca(pos, neg)
    assert abs(float(v.norm()) - 1) < 1e-5
    assert E.cosine(v, shift) > 0.9


def test_lda_interpolates_between_mean_diff_and_fisher():
    """Shrinkage 1 gives the mean difference back (same direction and size); less shrinkage discounts a
    noisy dimension that carries part of the mean difference, so held-out AUROC rises."""
    from sklearn.metrics import roc_auc_score

    d = 16
    shift = torch.zeros(d)
    shift[0], shift[1] = 1.0, 3.0
    g = torch.Generator().manual_seed(1)

    def draw(n):
        scale = torch.ones(d)
        scale[1] = 10.0  # dimension 1: large shift, but buried in noise
        neg = torch.randn(n, d, generator=g) * scale
        return neg + shift, torch.randn(n, d, generator=g) * scale

    pos, neg = draw(600)
    md = E.mean_diff(pos, neg)
    r1 = E.lda(pos, neg, shrinkage=1.0)
    assert E.cosine(r1, md) > 0.999 and abs(float(r1.norm()) - float(md.norm())) < 1e-3
    tp, tn = draw(400)
    y = [1] * len(tp) + [0] * len(tn)
    x = torch.cat([tp, tn]).double()

    def auc(r):
        return roc_auc_score(y, (x @ r.double()).numpy())

    r = E.lda(pos, neg, shrinkage=0.5)
    assert auc(r) > auc(md) + 0.05
    u = r.double() / r.double().norm()  # scaled as the mean difference along its own unit vector
    assert abs(float(r.double().norm()) - float((pos.mean(0) - neg.mean(0)).double() @ u)) < 1e-4
    with pytest.raises(E.R1ProbeError):
        E.lda(pos, neg, shrinkage=1.5)


@pytest.mark.parametrize("name", E.ESTIMATORS)
def test_degenerate_inputs_raise_one_line(name):
    x = torch.randn(10, 8)
    with pytest.raises(E.DegenerateError):
        E.estimate(name, x[:1], x)  # too few rows
    bad = x.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(E.DegenerateError, match="NaN"):
        E.estimate(name, bad, x)
    if name == "mean_diff":
        same = torch.ones(10, 8)
        with pytest.raises(E.DegenerateError, match="zero-norm"):
            E.mean_diff(same, same.clone())


def test_ablation_leaves_zero_projection():
    from r1probe.steering.transforms import ablate

    pos, neg, _ = _gauss()
    r = E.mean_diff(pos, neg)
    h = torch.randn(5, 7, 16)
    h2 = ablate(h, r)
    assert float((h2 @ (r / r.norm())).abs().max()) < 1e-5


def test_cv_metrics_separable_and_random():
    pos, neg, _ = _gauss(n=100, shift=torch.full((16,), 1.0))
    m = cv_metrics(pos, neg)
    for e in E.ESTIMATORS:
        assert m[e]["ok"] and m[e]["auroc"] > 0.95 and m[e]["accuracy"] > 0.9 and m[e]["f1"] > 0.9
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(60, 16, generator=g), torch.randn(60, 16, generator=g)
    m = cv_metrics(a, b, ("mean_diff",))
    assert m["mean_diff"]["auroc"] < 0.75


def test_cell_report_degenerate_cells_never_raise():
    same = torch.ones(20, 8)
    rep, dirs = cell_report(same, same.clone())
    assert rep["ok"] is False and "zero-norm" in rep["error"] and "mean_diff" not in dirs
    nan = torch.randn(20, 8)
    nan[0, 0] = float("nan")
    rep, dirs = cell_report(nan, torch.randn(20, 8))
    assert rep["ok"] is False and "NaN" in rep["error"]
    rep, dirs = cell_report(torch.randn(1, 8), torch.randn(20, 8))
    assert rep["ok"] is False and "row" in rep["error"]
    pos, neg, _ = _gauss(n=40)
    rep, dirs = cell_report(pos, neg)
    assert rep["ok"] and set(dirs) == set(E.ESTIMATORS)
    assert all(math.isfinite(v) for v in rep["cosine"].values())
    assert rep["estimators"]["mean_diff"]["norm"] > 0
