"""Invariants of the pure steering transforms."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.steering import transforms as T


@pytest.fixture
def hd():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 5, 16, generator=g), torch.randn(16, generator=g) * 3


def test_add_moves_the_projection_by_alpha_and_keeps_the_rest(hd):
    h, d = hd
    out = T.add(h, d, 2.5)
    assert torch.allclose(T.projection(out, d), T.projection(h, d) + 2.5, atol=1e-5)
    assert torch.allclose(T.ablate(out, d), T.ablate(h, d), atol=1e-5)
    assert torch.equal(T.add(h, d, 0.0), h)


def test_ablate_zeroes_the_projection_and_is_idempotent(hd):
    h, d = hd
    a = T.ablate(h, d)
    assert T.projection(a, d).abs().max() < 1e-5
    assert torch.allclose(T.ablate(a, d), a, atol=1e-6)
    # the orthogonal part is kept: h = ablate(h) + (h·d̂)d̂
    u = d / d.norm()
    assert torch.allclose(a + T.projection(h, d).unsqueeze(-1) * u, h, atol=1e-5)


def test_clamp_sets_the_projection_and_zero_clamp_is_ablation(hd):
    h, d = hd
    assert torch.allclose(T.projection(T.clamp(h, d, 7.0), d), torch.full(h.shape[:-1], 7.0), atol=1e-4)
    assert torch.allclose(T.clamp(h, d, 0.0), T.ablate(h, d), atol=1e-6)
    assert torch.allclose(T.ablate(T.clamp(h, d, -3.0), d), T.ablate(h, d), atol=1e-5)


def test_transforms_never_edit_their_input_and_keep_dtype(hd):
    h, d = hd
    for hh in (h, h.bfloat16()):
        before = hh.clone()
        for out in (T.add(hh, d, 1.0), T.ablate(hh, d), T.clamp(hh, d, 1.0)):
            assert out.dtype == hh.dtype and out.shape == hh.shape and out.data_ptr() != hh.data_ptr()
        assert torch.equal(hh, before)


def test_direction_scale_does_not_matter(hd):
    h, d = hd
    assert torch.allclose(T.add(h, d, 1.0), T.add(h, 10 * d, 1.0), atol=1e-5)
    assert torch.allclose(T.ablate(h, d), T.ablate(h, -d), atol=1e-5)


def test_bad_directions_raise_one_line_errors(hd):
    h, d = hd
    with pytest.raises(R1ProbeError, match="size 16"):
        T.ablate(h, torch.ones(8))
    with pytest.raises(R1ProbeError, match="degenerate"):
        T.add(h, torch.zeros(16), 1.0)


def test_gates_pool_score_and_select_rows(hd):
    h, d = hd
    valid = torch.tensor([[0, 0, 1, 1, 1]] * 3).bool()
    mean = T.pool(h, "mean", valid)
    assert torch.allclose(mean, h[:, 2:].mean(1), atol=1e-6)
    assert torch.equal(T.pool(h, -1), h[:, -1])
    s = T.gate_scores(mean, d, "projection")
    assert torch.allclose(T.gate_scores(mean, d, "dot"), s * d.norm(), atol=1e-4)
    cos = T.gate_scores(mean, d, "cosine")
    assert (cos.abs() <= 1 + 1e-6).all()
    g = T.gate(s, float(s.median()))
    assert g.sum() == 1
    new = T.add(h, d, 5.0)
    out = T.where_rows(new, h, g)
    assert torch.equal(out[g], new[g]) and torch.equal(out[~g], h[~g])
    tm = torch.tensor([[False, False, False, True, True]])
    out = T.where_tokens(new, h, tm)
    assert torch.equal(out[:, 3:], new[:, 3:]) and torch.equal(out[:, :3], h[:, :3])
