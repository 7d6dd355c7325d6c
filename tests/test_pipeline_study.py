"""``r1probe run`` on a tiny random model: every stage runs, then a rerun skips them all."""

import json
import time

import torch

from r1probe.analysis.config import StudyConfig
from r1probe.analysis.study import run_study


def _cfg(model, out, **kw):
    base = dict(model=str(model), dtype="float32", n_train=8, n_val=4, benches=["cvalues", "gsm8k-nll"],
                limits={"cvalues": 3, "gsm8k-nll": 3}, max_new_tokens=6, kl_threshold=100.0, max_layer_frac=1.0,
                score="first_token", edits=["orthogonalize"], plans=["conditional"], out=str(out))
    base.update(kw)
    return StudyConfig(**base)


def test_study_runs_then_skips_and_redoes_only_what_changed(tiny_qwen2, tmp_path):
    logs = []
    cfg = _cfg(tiny_qwen2, tmp_path / "study")
    t = time.time()
    first = run_study(cfg, log=logs.append)
    first_s = time.time() - t
    report = tmp_path / "study" / "report.md"
    text = report.read_text()
    assert "## Key numbers" in text and "r1probe eval" in text and "orthogonalize" in text
    ran = {r.name for r in first["results"].values() if not r.skipped}
    assert {"extract", "probe", "edit-orthogonalize", "plan-conditional", "eval-base", "eval-orthogonalize",
            "eval-plan-conditional", "extract-orthogonalize", "compare", "report"} <= ran
    cmp = json.loads((tmp_path / "study" / "compare" / "compare.json").read_text())["result"]
    pj = cmp["chosen"]["projection"]
    assert pj["orthogonalized"]["abs_mean"] < 1e-3 * pj["base"]["abs_mean"]
    # nothing changed: every stage is skipped and no model is even loaded
    second = run_study(cfg, log=logs.append)
    assert all(r.skipped for r in second["results"].values())
    assert second["seconds"] < 0.1 * first_s
    # a new eval limit redoes the evaluations and the report, nothing upstream
    third = run_study(_cfg(tiny_qwen2, tmp_path / "study", limits={"cvalues": 4, "gsm8k-nll": 3}), log=logs.append)
    redone = {r.name for r in third["results"].values() if not r.skipped}
    assert redone == {"eval-base", "eval-orthogonalize", "eval-plan-conditional", "report"}


def test_study_enhance_is_the_rank_one_edit_fitted_on_the_default_data(tiny_qwen2, tmp_path, shared_data):
    from safetensors.torch import load_file

    from r1probe.models import load_model

    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=["enhance"], plans=[], enhance_layer=1, benches=["gsm8k-nll"],
               limits={"gsm8k-nll": 2}, data_root=str(shared_data))
    res = run_study(cfg, log=lambda m: None)
    assert res["results"]["edit-enhance"].info["direction_key"] == "layer1_pos-1"
    rec = json.loads((out / "exports" / "enhance" / "model" / "r1probe_manifest.json").read_text())["edits"][0]
    assert rec["op"] == "enhance" and rec["layers"] == [1] and rec["lambda"] == 20.0
    assert rec["n_harmful"] == 362 and "GSM8K train 1-200" in rec["fit_data"]
    # only layer 1's MLP output projection differs from the base model
    base = load_model(str(tiny_qwen2), dtype="float32", device="cpu").model.state_dict()
    edited = {}
    for f in (out / "exports" / "enhance" / "model").glob("*.safetensors"):
        edited.update(load_file(f))
    changed = [k for k, v in edited.items() if k in base and not torch.equal(v.float(), base[k].float())]
    assert changed == ["model.layers.1.mlp.down_proj.weight"], changed
    text = (out / "report.md").read_text()
    assert "--op enhance --direction-key layer1_pos-1 --layer 1 --lam 20.0" in text and "rank-one read/write" in text
