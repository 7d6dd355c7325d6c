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
