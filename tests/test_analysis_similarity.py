import numpy as np
import pytest
import torch

from r1probe.analysis.similarity import auroc_along, cosine, linear_cka, project, relative_depth_map, separation


def test_cosine():
    assert cosine([1, 0], [2, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 3]) == pytest.approx(0.0)
    assert np.isnan(cosine([0, 0], [1, 0]))


def test_cka_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8))
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0)  # rotation + scale
    assert linear_cka(x, rng.normal(size=(50, 5))) < 0.5  # unrelated, different width
    with pytest.raises(ValueError):
        linear_cka(x, x[:10])


def test_projection_and_auroc():
    d = torch.tensor([0.0, 2.0])
    acts = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    assert project(acts, d).tolist() == [1.0, -1.0]
    assert auroc_along(acts, [1, 0], d) == 1.0 and auroc_along(acts, [0, 1], d) == 0.0
    assert separation([3, 4, 5], [0, 1, 2]) == pytest.approx(3.0)


def test_relative_depth_map():
    assert relative_depth_map(3, 5) == [(0, 0), (1, 2), (2, 4)]
    assert relative_depth_map(24, 24)[10] == (10, 10)


def test_bootstrap_direction_similarity_brackets_the_truth_and_narrows_with_signal():
    import numpy as np

    from r1probe.analysis.similarity import bootstrap_direction_similarity

    rng = np.random.default_rng(0)
    n, d = 60, 16
    y = np.array([1] * n + [0] * n)
    r = np.zeros(d)
    r[0] = 1.0
    xa = rng.normal(size=(2 * n, d)) + 3.0 * y[:, None] * r
    same = bootstrap_direction_similarity(xa, xa, y, B=100, seed=1)
    assert same["cosine"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert 0.95 < same["transfer_auroc"][0] <= same["transfer_auroc"][1] <= 1.0
    assert same["transfer_auroc_reverse"] == same["transfer_auroc"]
    # B's refusal signal lies on an orthogonal axis: cosine near 0, A's direction reads B near chance
    r2 = np.zeros(d)
    r2[1] = 1.0
    xb = rng.normal(size=(2 * n, d)) + 3.0 * y[:, None] * r2
    other = bootstrap_direction_similarity(xa, xb, y, B=100, seed=1)
    assert other["cosine"][0] < 0.5 and other["cosine"][1] < 0.6 and other["transfer_auroc"][0] < 0.75
    assert other["transfer_auroc_reverse"][0] < 0.75
    assert bootstrap_direction_similarity(xa, xb, y, B=100, seed=1) == other
    assert all(np.isnan(v) for v in bootstrap_direction_similarity(xa[:3], xb[:3], y[:3])["cosine"])
