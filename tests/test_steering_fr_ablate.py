"""The fr-ablate edit: the false-refusal direction, orthogonal to the refusal one, removed from every residual write;
equal to the run-time ablation of that direction everywhere."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.models import load_model
from r1probe.steering import SteeringPlan, steering
from r1probe.steering.directions import DirectionSet
from r1probe.steering.edits import make_settings, run_edit
from r1probe.steering.edits.fr_ablate import false_refusal_direction

IDS = torch.tensor([[5, 9, 17, 30, 41, 52, 8, 11], [0, 0, 0, 70, 12, 3, 40, 41]])
MASK = (IDS != 0).long()


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).logits


def test_false_refusal_direction_is_the_mean_difference_orthogonal_to_refusal():
    g = torch.Generator().manual_seed(0)
    border, safe, r = torch.randn(30, 8, generator=g) + 1.0, torch.randn(40, 8, generator=g), torch.randn(8, generator=g)
    fr = false_refusal_direction(border, safe, r)
    b = border.mean(0) - safe.mean(0)
    assert abs(float(fr @ r)) < 1e-5
    rh = r / r.norm()
    assert torch.allclose(fr, b - (b @ rh) * rh, atol=1e-5)


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_fr_ablate_equals_the_runtime_ablation_of_its_direction(kind, tmp_path_factory, shared_data, monkeypatch):
    from conftest import make_tiny
    from r1probe.steering.directions import save_directions

    monkeypatch.setenv("R1PROBE_DATA", str(shared_data))
    lm = load_model(str(make_tiny(kind, tmp_path_factory.mktemp("fr") / kind, seed=1)), dtype="float32", device="cpu")
    folder = tmp_path_factory.mktemp("dirs")
    r = torch.randn(lm.layout.d_model, generator=torch.Generator().manual_seed(5))
    save_directions(folder / "directions.safetensors", {"chosen": r})
    from r1probe.steering.edits import get_edit

    edit = get_edit("fr-ablate")
    s = make_settings("fr-ablate", {"layer": 1, "borderline": 16, "batch_size": 32})
    fitted = edit.fit(lm, DirectionSet.load(folder), s, log=lambda m: None)
    fr = fitted.direction
    assert abs(float(fr @ r)) < 1e-3 * float(fr.norm() * r.norm())
    with steering(lm, SteeringPlan.ablate_everywhere(fr, lm.layout.n_layers)):
        planned = _logits(lm.model)
    plain = _logits(lm.model)
    rec = edit.apply(lm, fitted)
    edited = _logits(lm.model)
    assert (edited - planned).abs().max() < 1e-3
    assert (plain - planned).abs().max() > 1e-3  # the edit did something
    assert rec["op"] == "fr-ablate" and rec["direction_layer"] == 1
    assert len(rec["tuning_reads"]["cvalues"]) == 16 and any(k.startswith("zh-harmless") for k in rec["tuning_reads"])


def test_fr_ablate_bad_layer_is_one_line(tiny_lm, tmp_path, shared_data, monkeypatch):
    from r1probe.steering.directions import save_directions

    monkeypatch.setenv("R1PROBE_DATA", str(shared_data))
    save_directions(tmp_path / "directions.safetensors", {"chosen": torch.ones(tiny_lm.layout.d_model)})
    with pytest.raises(R1ProbeError, match="out of range"):
        run_edit("fr-ablate", tiny_lm, tmp_path, {"layer": 40}, log=lambda m: None)


def test_fr_ablate_then_rank1_gate_exports_a_stock_checkpoint(tiny_lm, tmp_path, shared_data, monkeypatch):
    """The composite the study runs as ``fr-ablate+rank1-gate``: both edits in order, one export that loads in a
    clean process with stock transformers and gives the edited model's logits."""
    import copy
    import json
    import os
    import subprocess
    import sys

    from test_steering_export import CHECK, IDS as CHECK_IDS

    from r1probe.steering.directions import save_directions
    from r1probe.steering.export import export_checkpoint

    monkeypatch.setenv("R1PROBE_DATA", str(shared_data))
    lm = copy.deepcopy(tiny_lm)
    r = torch.randn(lm.layout.d_model, generator=torch.Generator().manual_seed(5))
    save_directions(tmp_path / "dirs" / "directions.safetensors", {"chosen": r})
    recs = run_edit("fr-ablate", lm, tmp_path / "dirs", {"layer": 1, "borderline": 16}, log=lambda m: None)
    harm, safe = tmp_path / "harm.jsonl", tmp_path / "safe.jsonl"  # small fit files keep the test quick
    harm.write_text("".join(json.dumps({"prompt": f"如何制造危险物品{i}"}) + "\n" for i in range(8)), "utf-8")
    safe.write_text("".join(json.dumps({"prompt": f"今天天气怎么样{i}", "answer": "很好"}) + "\n" for i in range(8)),
                    "utf-8")
    recs += run_edit("rank1-gate", lm, tmp_path / "dirs", {"layer": 1, "lam": 4.0, "harmful": str(harm),
                                                           "benign": [str(safe)]}, log=lambda m: None)
    out = export_checkpoint(lm, tmp_path / "export", edits=recs, directions_file=tmp_path / "dirs")
    man = json.loads((out / "r1probe_manifest.json").read_text())
    assert [e["op"] for e in man["edits"]] == ["fr-ablate", "rank1-gate"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", CHECK, str(out), json.dumps(CHECK_IDS)], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))
    with torch.no_grad():
        want = lm.model(input_ids=torch.tensor(CHECK_IDS)).logits
    assert (got - want).abs().max() < 1e-4
