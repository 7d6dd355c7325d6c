"""Steering plans: validation, constructors, JSON round trip and direction resolution."""

import json

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.steering import Condition, SteeringPlan, SteeringStep, load_direction, save_directions


def test_plan_json_round_trip(tmp_path):
    d = torch.randn(8)
    cond = Condition(layer=1, direction="chosen", threshold=0.5, position="mean")
    plan = SteeringPlan([SteeringStep("add", [1, 2], d, alpha=4.0, tokens="generated"),
                         SteeringStep("clamp", 0, "layer1_pos-1", value=2.0, site="resid_post"),
                         SteeringStep("ablate", [2], "chosen", condition=cond)],
                        directions="dirs.safetensors", name="x")
    plan.save(tmp_path / "plan.json")
    back = SteeringPlan.load(tmp_path / "plan.json")
    assert back.to_dict() == plan.to_dict()
    assert torch.allclose(back.steps[0].direction, d)
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "r1probe.steering_plan/1"


@pytest.mark.parametrize("kw,msg", [
    (dict(op="scale", layers=[1]), "op"),
    (dict(op="add", layers=[1]), "alpha"),
    (dict(op="clamp", layers=[1]), "value"),
    (dict(op="ablate", layers=[1], alpha=1.0), "alpha"),
    (dict(op="ablate", layers=[]), "no layers"),
    (dict(op="ablate", layers=[1], tokens="all"), "tokens"),
    (dict(op="ablate", layers=[1], site="mid"), "site"),
    (dict(op="ablate", layers=[1], direction=torch.zeros(4)), "zero"),
    (dict(op="ablate", layers=[1], direction=torch.ones(2, 3)), "one vector"),
    (dict(op="add", layers=[0], alpha=1.0, condition=dict(layer=2, direction="chosen", threshold=0.0)),
     "condition layer"),
])
def test_bad_steps_raise_one_clear_error(kw, msg):
    with pytest.raises(R1ProbeError, match=msg):
        SteeringStep(**kw)


def test_constructors():
    d = torch.randn(8)
    p = SteeringPlan.ablate_everywhere(d, 3)
    sites = {(s.site, s.layers) for s in p.steps}
    assert sites == {("resid_pre", (0,)), ("attn_out", (0, 1, 2)), ("mlp_out", (0, 1, 2))}
    a = SteeringPlan.add_at(2, d, 3.0)
    assert a.steps[0].op == "add" and a.steps[0].layers == (2,) and a.steps[0].alpha == 3.0
    assert len((p + a).steps) == 4


def test_named_directions_resolve_and_sizes_are_checked(tmp_path):
    f = tmp_path / "directions.safetensors"
    save_directions(f, {"chosen": torch.ones(8), "layer1_pos-1": torch.arange(8.0)})
    assert torch.equal(load_direction(tmp_path), torch.ones(8))
    assert torch.equal(load_direction(f, "layer1_pos-1"), torch.arange(8.0))
    plan = SteeringPlan.add_at(1, "layer1_pos-1", 2.0, directions=str(f))
    assert torch.equal(plan.resolve(8).steps[0].direction, torch.arange(8.0))
    with pytest.raises(R1ProbeError, match="hidden size is 16"):
        plan.resolve(16)
    with pytest.raises(R1ProbeError, match="no direction 'nope'"):
        load_direction(f, "nope")
    with pytest.raises(R1ProbeError, match="no directions file"):
        SteeringPlan.add_at(1, "chosen", 1.0).resolve(8)


def test_affine_ablate_sets_each_block_input_projection_to_its_reference(tiny_lm):
    from r1probe.steering import steering

    n, d = tiny_lm.layout.n_layers, tiny_lm.layout.d_model
    r = torch.randn(d, generator=torch.Generator().manual_seed(1))
    refs = [0.5 * (i + 1) for i in range(n)]
    plan = SteeringPlan.affine_ablate(r, refs)
    seen = {}
    layers = tiny_lm.model.model.layers
    ids = torch.tensor([tiny_lm.chat.encode(tiny_lm.chat.format("hello world"))])
    with steering(tiny_lm, plan), torch.inference_mode():
        # registered after the plan's hooks, so these see what the blocks receive
        hooks = [layers[i].register_forward_pre_hook(
            lambda m, a, kw, i=i: seen.__setitem__(i, (a[0] if a else kw["hidden_states"]).detach().clone()),
            with_kwargs=True) for i in range(n)]
        try:
            tiny_lm.model(ids)
        finally:
            for h in hooks:
                h.remove()
    u = r / r.norm()
    for i in range(n):
        proj = seen[i].float() @ u
        assert torch.allclose(proj, torch.full_like(proj, refs[i]), atol=1e-3), (i, proj)
