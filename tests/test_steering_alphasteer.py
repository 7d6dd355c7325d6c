"""AlphaSteer as published: its closed form against the published matrix formulas, the graded gate, a fit."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.steering import Condition, SteeringPlan, steering
from r1probe.steering import alphasteer as A
from r1probe.steering import transforms as T


def _published(benign, harmful, r, ratio, ridge):
    """The published code's steps (src/utils/steering_utils.py): null space of BᵀB, the regularised fit of
    Δ̃ against R = 1 rᵀ with full matrices, and Δ = P Δ̃."""
    b, h, r = benign.double(), harmful.double(), r.double()
    _, _, vh = torch.linalg.svd(b.T @ b)
    q = vh[-int(b.shape[1] * ratio):, :].T
    p = q @ q.T
    x = h @ p
    a = x.T @ x + ridge * (p.T @ p)
    tilde = torch.linalg.pinv(a) @ (x.T @ r.repeat(x.shape[0], 1))
    return p, p @ tilde


@pytest.mark.parametrize("ratio,ridge", [(0.5, 10.0), (0.3, 0.1), (0.75, 0.0)])
def test_read_vector_is_the_published_steering_matrix(ratio, ridge):
    g = torch.Generator().manual_seed(0)
    d = 24
    benign = torch.randn(80, d, generator=g) @ torch.diag(torch.linspace(3, 0.01, d))  # a low-energy tail
    harmful = torch.randn(30, d, generator=g) + 2.0
    r = torch.randn(d, generator=g)
    p_ref, delta_ref = _published(benign, harmful, r, ratio, ridge)
    p = A.null_space_projector(benign, ratio)
    assert torch.allclose(p, p_ref, atol=1e-8)
    a = A.read_vector(harmful, p, ridge)
    assert torch.allclose(torch.outer(a, r.double()), delta_ref, atol=1e-6 * float(delta_ref.abs().max()))
    # x Δ for a row x (the published steering vector before λ) is (a·x) r
    x = torch.randn(d, generator=g).double()
    assert torch.allclose(x @ delta_ref, (x @ a) * r.double(), atol=1e-6 * float(delta_ref.abs().max()))


def test_read_vector_is_silent_on_the_benign_span_and_reads_harmful_rows():
    g = torch.Generator().manual_seed(1)
    d = 16
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    benign = torch.randn(200, 8, generator=g) @ basis[:, :8].T  # benign rows span 8 of 16 dimensions
    harmful = torch.randn(50, 8, generator=g) @ basis[:, :8].T + 3.0 * basis[:, 12]
    a = A.read_vector(harmful, A.null_space_projector(benign, 0.5), 0.0)
    assert float((benign.double() @ a).abs().max()) < 1e-6  # float32 inputs
    assert abs(float((harmful.double() @ a).mean()) - 1.0) < 1e-6


def test_scale_rows_is_a_graded_where():
    g = torch.Generator().manual_seed(2)
    h, h2 = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    w = torch.tensor([0.0, 1.0, 0.5])
    out = T.scale_rows(h2, h, w)
    assert torch.equal(out[0], h[0]) and torch.allclose(out[1], h2[1]) and torch.allclose(out[2], (h[2] + h2[2]) / 2)


def test_graded_condition_adds_score_times_alpha_on_prompt_tokens_only(tiny_lm):
    d_model = tiny_lm.layout.d_model
    g = torch.Generator().manual_seed(4)
    a, r = torch.randn(d_model, generator=g), torch.randn(d_model, generator=g)
    block2 = tiny_lm.layout.layers(tiny_lm.model)[2]
    ids = torch.tensor([[5, 9, 17, 30, 41], [70, 12, 3, 8, 2]])

    def block2_input():  # a pre-hook registered now runs after any steering hook already there
        seen = []
        hook = block2.register_forward_pre_hook(
            lambda m, args, kw: seen.append((args[0] if args else kw["hidden_states"]).clone()), with_kwargs=True)
        try:
            with torch.no_grad():
                tiny_lm.model(input_ids=ids)
        finally:
            hook.remove()
        return seen[0]

    base = block2_input()
    cond = Condition(layer=2, direction=a, threshold=None, metric="dot", scale=True)
    plan = SteeringPlan.conditional_add(2, r, 2.0, condition=cond, tokens="prompt")
    with steering(tiny_lm, plan) as h:
        steered = block2_input()
        scores = h.scores[0]
    assert torch.allclose(scores, base[:, -1] @ a, atol=1e-4)
    want = base + (2.0 * scores).view(-1, 1, 1) * T.unit(r)
    assert torch.allclose(steered, want, atol=1e-4)


def test_graded_condition_json_round_trip_and_threshold_rule(tmp_path):
    d = torch.randn(8)
    with pytest.raises(R1ProbeError, match="threshold"):
        Condition(layer=1, direction=d, threshold=None)
    plan = SteeringPlan.conditional_add(1, d, 1.0, condition=Condition(layer=1, direction=d, threshold=None,
                                                                       metric="dot", scale=True))
    plan.save(tmp_path / "p.json")
    back = SteeringPlan.load(tmp_path / "p.json")
    c = back.steps[0].condition
    assert c.scale is True and c.threshold is None and c.metric == "dot"
    assert "scale" not in Condition(layer=1, direction=d, threshold=0.0).to_dict()


def test_alphasteer_plan_fits_on_a_tiny_model(tiny_lm, shared_data, monkeypatch):
    monkeypatch.setenv("R1PROBE_DATA", str(shared_data))
    s = A.AlphaSteerSettings(layers="1-2", strength=0.5, borderline=20, batch_size=32, extra_benign="or-bench")
    plan, rec = A.alphasteer_plan(tiny_lm, s, log=lambda m: None)
    from r1probe.data.benchmarks import load_or_bench
    from r1probe.data.partitions import filter_items

    report = {it.id for it in filter_items("or-bench", load_or_bench(None), "report")}
    dev = {it.id for it in filter_items("or-bench", load_or_bench(None), "dev")}
    assert set(rec["tuning_reads"]["or-bench"]) == dev and not dev & report  # its whole dev part, no report item
    with pytest.raises(R1ProbeError, match="extra benign"):
        A.alphasteer_plan(tiny_lm, {"layers": "1", "extra_benign": "chisafety-refusal"}, log=lambda m: None)
    assert [st.layers for st in plan.steps] == [(1,), (2,)]
    assert all(st.condition.scale and st.tokens == "prompt" for st in plan.steps)
    assert set(rec["tuning_reads"]) >= {"cvalues"} and len(rec["tuning_reads"]["cvalues"]) == 20
    import math

    assert all(math.isfinite(v) for L in ("1", "2") for v in rec["layers"][L].values())
    assert all(st.condition.direction.norm() > 0 and st.alpha > 0 for st in plan.steps)
    with pytest.raises(R1ProbeError, match="out of range"):
        A.alphasteer_plan(tiny_lm, {"layers": "40"}, log=lambda m: None)
