"""``r1probe run`` on a tiny random model: every stage runs, then a rerun skips them all."""

import json

import torch

from r1probe.pipeline.presets import run_preset
from r1probe.pipeline.settings import load_settings


def _cfg(model, out, *, limits=None, edits=("orthogonalize",), plans=("conditional",), benches=None, **kw):
    """The study's settings for a tiny model: ``kw`` are nested sections (``edit={"rank1_gate_layer": 1}``)."""
    flags = {"out": str(out), "model": {"spec": str(model), "dtype": "float32"}, "extract": {"n_train": 8},
             "probe": {"n_val": 4, "kl_max": 100.0, "max_layer_frac": 1.0, "score": "first_token"},
             "edit": {"edits": list(edits)}, "plan": {"plans": list(plans)}, "separability": {"n": 0},
             "eval": {"benches": benches or ["cvalues", "gsm8k-nll"],
                      "limits": limits or {"cvalues": 3, "gsm8k-nll": 3}, "max_new_tokens": 6},
             # the report's figures are drawn in the first test only (they cost seconds each on a slow CPU)
             "report": {"figures": False}}
    for k, v in kw.items():
        flags[k] = {**flags.get(k, {}), **v}
    return load_settings(env={}, flags=flags)


def run_study(cfg, **kw):
    return run_preset(cfg, **kw)


def test_study_runs_then_skips_and_redoes_only_what_changed(tiny_qwen2, tmp_path):
    logs = []
    cfg = _cfg(tiny_qwen2, tmp_path / "study", report={"figures": True})
    first = run_study(cfg, log=logs.append)
    report = tmp_path / "study" / "report.md"
    text = report.read_text()
    assert "## Key numbers" in text and "r1probe eval" in text and "orthogonalize" in text
    assert list((first["results"]["report"].path / "figures").glob("*.png"))
    legend = next(x for x in text.splitlines() if x.startswith("Variants: "))  # the variants of this run only
    assert "`orthogonalize` =" in legend and "`plan-conditional` =" in legend and "`amplify`" not in legend
    ran = {r.name for r in first["results"].values() if not r.skipped}
    assert {"extract", "probe", "edit-orthogonalize", "plan-conditional", "eval-base", "eval-orthogonalize",
            "eval-plan-conditional", "extract-orthogonalize", "compare", "report", "budget"} <= ran
    # a model that does not think keeps the configured token budgets, and the report says why
    b = first["results"]["budget"].info
    assert b["measured"] == {"refusal": 0, "reasoning": 0} and b["max_new_tokens"] == cfg.eval.max_new_tokens
    assert "opened no reasoning block on dev prompts" in text
    assert "eval base cvalues: 3/3" in logs and "eval plan-conditional gsm8k-nll: 3/3" in logs  # progress
    times = text.split("## Stage times", 1)[1].split("\n## ", 1)[0]
    assert "Machine:" in times and "torch threads" in times and "dtype auto on this CPU" in times
    for name in ("extract", "probe", "eval-base", "compare"):
        sec = json.loads((first["results"][name].path / "stage.json").read_text())["seconds"]
        assert f"| {name} | {sec} |" in times and times.split(f"| {name} |", 1)[1].split("\n", 1)[0].endswith("| ran |")
    cmp = json.loads((tmp_path / "study" / "compare" / "compare.json").read_text())["result"]
    pj = cmp["chosen"]["projection"]
    assert pj["orthogonalized"]["abs_mean"] < 1e-3 * pj["base"]["abs_mean"]
    # nothing changed: every stage is skipped and no model is even loaded
    second = run_study(cfg, log=logs.append)
    assert all(r.skipped for r in second["results"].values())
    # a new eval limit redoes the evaluations and the report, nothing upstream
    third = run_study(_cfg(tiny_qwen2, tmp_path / "study", limits={"cvalues": 4, "gsm8k-nll": 3},
                           report={"figures": True}), log=logs.append)
    redone = {r.name for r in third["results"].values() if not r.skipped}
    assert redone == {"eval-base", "eval-orthogonalize", "eval-plan-conditional", "report"}


def test_study_rank1_gate_is_the_rank_one_edit_fitted_on_the_default_data(tiny_qwen2, tmp_path, shared_data):
    from safetensors.torch import load_file

    from r1probe.models import load_model

    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=["rank1-gate"], plans=[], edit={"rank1_gate_layer": 1}, benches=["gsm8k-nll"],
               limits={"gsm8k-nll": 2}, eval={"data_root": str(shared_data)})
    res = run_study(cfg, log=lambda m: None)
    assert res["results"]["edit-rank1-gate"].info["direction_key"] == "layer1_pos-1"
    rec = json.loads((out / "exports" / "rank1-gate" / "model" / "r1probe_manifest.json").read_text())["edits"][0]
    assert rec["op"] == "rank1-gate" and rec["layers"] == [1] and rec["lambda"] == 10.0
    assert rec["n_harmful"] == 362 and "GSM8K train 1-200" in rec["fit_data"]
    # only layer 1's MLP output projection differs from the base model
    base = load_model(str(tiny_qwen2), dtype="float32", device="cpu").model.state_dict()
    edited = {}
    for f in (out / "exports" / "rank1-gate" / "model").glob("*.safetensors"):
        edited.update(load_file(f))
    changed = [k for k, v in edited.items() if k in base and not torch.equal(v.float(), base[k].float())]
    assert changed == ["model.layers.1.mlp.down_proj.weight"], changed
    text = (out / "report.md").read_text()
    assert "--op rank1-gate --set direction_key=layer1_pos-1 --set layer=1 --set lam=10.0" in text
    assert "rank-one read/write" in text


def test_report_records_the_settings_and_a_command_that_parses_back(tiny_qwen2, tmp_path):
    from click.testing import CliRunner

    from r1probe.pipeline.commands import run
    from r1probe.pipeline.settings import read_toml

    cfg = _cfg(tiny_qwen2, tmp_path / "study", plans=[])
    run_study(cfg, log=lambda m: None)
    text = (tmp_path / "study" / "report.md").read_text()
    toml = text.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "s.toml").write_text(toml)
    assert load_settings(tmp_path / "s.toml", env={}) == cfg
    line = text.split("Equivalent command:", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert line.startswith("r1probe run ")
    res = CliRunner().invoke(run, [*__import__("shlex").split(line)[2:], "--print-config"], env={})
    assert res.exit_code == 0, res.output
    (tmp_path / "p.toml").write_text(res.output)
    assert read_toml(tmp_path / "p.toml")["extract"]["n_train"] == 8
    assert load_settings(tmp_path / "p.toml", env={}) == cfg


def test_report_has_the_panel_paired_differences_and_the_overlap_line(tiny_qwen2, tmp_path):
    out = tmp_path / "study"
    benches = ["cvalues-report", "xstest-safe", "zh-harmless", "gsm8k-nll"]
    cfg = _cfg(tiny_qwen2, out, plans=[], benches=benches, limits={b: 3 for b in benches},
               separability={"n": 10, "bootstrap": 20})
    run_study(cfg, log=lambda m: None)
    text = (out / "report.md").read_text()
    # the separability stage ran on dev parts, its reads are checked like every tuning record
    assert (out / "separability" / "separability.json").exists() and "separability/tuning_reads.json" in text
    assert "r1probe probe separability" in text and "separability_auroc" in text
    assert "tuning/report overlap: 0 items" in text and "probe/tuning_reads.json" in text
    assert "### Paired differences to the unedited model" in text and "Reasoning retention" in text
    assert "XSTest-safe over-refusal" in text and "zh-harmless (test split) over-refusal" in text
    rows = [json.loads(x) for x in (out / "report" / "per_sample.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"base", "orthogonalize"} and {r["bench"] for r in rows} == set(benches)
    from r1probe.data.partitions import part_of

    xs = [r["id"] for r in rows if r["bench"] == "xstest-safe"]
    assert xs and all(part_of("xstest-safe", i) == "report" for i in xs)


def test_study_refuses_when_a_tuning_record_holds_a_reported_item(tmp_path, shared_data):
    from types import SimpleNamespace

    import pytest

    from r1probe.data.partitions import TuningOverlapError, write_tuning_reads
    from r1probe.pipeline import stages as S

    cfg = load_settings(env={}, flags={"out": str(tmp_path / "s"), "eval": {
        "benches": ["xstest-safe", "zh-harmless"], "limits": {"xstest-safe": 5, "zh-harmless": 5}}})
    ctx = SimpleNamespace(settings=cfg, results={"probe": SimpleNamespace(path=tmp_path / "probe", info={})})
    reported = S.reported_items(ctx)
    write_tuning_reads(tmp_path / "probe", {"zh-harmless": ["zh-harmless/not-reported"]})
    assert S.tuning_overlap(ctx)[0] == "tuning/report overlap: 0 items"
    item = reported["zh-harmless"][2]
    write_tuning_reads(tmp_path / "probe", {"zh-harmless": [item]})
    with pytest.raises(TuningOverlapError, match=item):
        S.tuning_overlap(ctx)


def test_fit_seeds_add_refits_on_seeded_subsamples_and_their_spread(tiny_qwen2, tmp_path, shared_data):
    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=["rank1-gate"], plans=[], benches=["gsm8k-nll"], limits={"gsm8k-nll": 2},
               edit={"rank1_gate_layer": 1, "fit_seeds": "1,2", "rank1_gate_fit_fraction": 0.5},
               eval={"data_root": str(shared_data)})
    res = run_study(cfg, log=lambda m: None)
    assert {"rank1-gate", "rank1-gate@s1", "rank1-gate@s2"} <= set(res["variants"])
    recs = {v: json.loads((out / "exports" / v / "model" / "r1probe_manifest.json").read_text())["edits"][0]
            for v in ("rank1-gate", "rank1-gate@s1", "rank1-gate@s2")}
    assert recs["rank1-gate"]["n_harmful"] == 362
    assert all(recs[v]["n_harmful"] < 362 * 0.65 for v in ("rank1-gate@s1", "rank1-gate@s2"))
    assert recs["rank1-gate@s1"]["fit_data"] != recs["rank1-gate@s2"]["fit_data"] or \
        recs["rank1-gate@s1"]["n_harmful"] != recs["rank1-gate@s2"]["n_harmful"]
    text = (out / "report.md").read_text()
    assert "### Spread across fits" in text and "rank1-gate: 2 seeded refits" in text
    assert "Judge: `" in text and "frozen test part" in text
    # a new seed adds one refit; the full fit and the other refits are reused
    more = run_study(_cfg(tiny_qwen2, out, edits=["rank1-gate"], plans=[], benches=["gsm8k-nll"],
                          limits={"gsm8k-nll": 2}, edit={"rank1_gate_layer": 1, "fit_seeds": "1,2,3",
                                                          "rank1_gate_fit_fraction": 0.5},
                          eval={"data_root": str(shared_data)}), log=lambda m: None)
    redone = {r.name for r in more["results"].values() if not r.skipped}
    assert redone == {"edit-rank1-gate@s3", "eval-rank1-gate@s3", "report"}, redone


def test_study_alphasteer_plan_is_fitted_recorded_and_evaluated(tiny_qwen2, tmp_path, shared_data):
    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=[], plans=["alphasteer"], benches=["gsm8k-nll"], limits={"gsm8k-nll": 2},
               plan={"alphasteer_layers": "1-2", "alphasteer_borderline": 12}, eval={"data_root": str(shared_data)})
    res = run_study(cfg, log=lambda m: None)
    path = res["results"]["plan-alphasteer"].path
    plan = json.loads((path / "plan.json").read_text())
    assert [st["layers"] for st in plan["steps"]] == [[1], [2]]
    assert all(st["condition"]["scale"] and st["tokens"] == "prompt" for st in plan["steps"])
    reads = json.loads((path / "tuning_reads.json").read_text())
    assert len(reads["cvalues"]) == 12 and any(k.startswith("zh-harmful") for k in reads)
    assert set(json.loads((path / "fit.json").read_text())["layers"]) == {"1", "2"}
    assert not res["results"]["eval-plan-alphasteer"].skipped
    text = (out / "report.md").read_text()
    assert "`plan-alphasteer` = run-time AlphaSteer" in text and "overlap: 0 items" in text
    # a seeded refit reads a subsample of every part (and records only that), and is evaluated beside the full fit
    seeded = run_study(_cfg(tiny_qwen2, out, edits=[], plans=["alphasteer"], benches=["gsm8k-nll"],
                            limits={"gsm8k-nll": 2}, eval={"data_root": str(shared_data)},
                            plan={"alphasteer_layers": "1-2", "alphasteer_borderline": 12,
                                  "alphasteer_fit_seeds": "1", "alphasteer_fit_fraction": 0.5}), log=lambda m: None)
    redone = {r.name for r in seeded["results"].values() if not r.skipped}
    assert redone == {"plan-alphasteer@s1", "eval-plan-alphasteer@s1", "report"}, redone
    sub = json.loads((out / "plans" / "alphasteer@s1" / "tuning_reads.json").read_text())
    for k, ids in sub.items():
        assert set(ids) < set(reads[k]), k  # a strict subset of each part the full fit read
    assert "seed 1" in json.loads((out / "plans" / "alphasteer@s1" / "fit.json").read_text())["fit_data"]
    text = (out / "report.md").read_text()
    assert "`plan-alphasteer@sK` = AlphaSteer refitted" in text and "plan-alphasteer: 1 seeded refit |" in text
    assert "vs the full fit" in text


def test_study_composite_edit_applies_its_edits_in_order_and_exports_once(tiny_qwen2, tmp_path, shared_data):
    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=["fr-ablate+rank1-gate"], plans=[], benches=["gsm8k-nll"],
               limits={"gsm8k-nll": 2}, edit={"rank1_gate_layer": 1, "fr_ablate_borderline": 12},
               eval={"data_root": str(shared_data)})
    res = run_study(cfg, log=lambda m: None)
    export = out / "exports" / "fr-ablate+rank1-gate" / "model"
    man = json.loads((export / "r1probe_manifest.json").read_text())
    assert [e["op"] for e in man["edits"]] == ["fr-ablate", "rank1-gate"]
    reads = json.loads((export / "tuning_reads.json").read_text())
    assert len(reads["cvalues"]) == 12  # fr-ablate's borderline prompts are on the tuning record
    assert not res["results"]["eval-fr-ablate+rank1-gate"].skipped
    text = (out / "report.md").read_text()
    assert "--op fr-ablate" in text and "--op rank1-gate" in text and ".step1" in text


def test_study_rejects_an_unknown_part_of_a_composite_edit():
    import pytest

    from r1probe.settings import SettingsError

    with pytest.raises((SettingsError, ValueError), match="unknown edit"):
        load_settings(env={}, flags={"edit": {"edits": ["fr-ablate+nope"]}})


def test_a_model_that_thinks_gets_budgets_its_reasoning_needs(tiny_qwen2, tmp_path):
    """With the R1 template the prompt opens <think>; a random model never closes it, so the budget stage measures
    nothing that closed and raises both budgets to the cap (never lowering them), and the evaluation uses them."""
    cfg = _cfg(tiny_qwen2, tmp_path / "think", edits=(), plans=(), benches=["cvalues"], limits={"cvalues": 2},
               eval={"budget_prompts": 4, "budget_cap": 16})
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"chat_template": "r1"})})
    res = run_study(cfg, log=lambda m: None)
    b = res["results"]["budget"].info
    assert b["prompt_opens_think"] and b["opens_think"] == {"harmful": 1.0, "harmless": 1.0, "gsm8k": 1.0}
    assert b["closes_within_cap"] == {"harmful": 0.0, "harmless": 0.0, "gsm8k": 0.0}
    assert b["max_new_tokens"] == 16 and b["reasoning_max_new_tokens"] == 256  # raised to the cap; never lowered
    conf = json.loads((tmp_path / "think" / "eval" / "base" / "cvalues.config.json").read_text())
    assert conf["max_new_tokens"] == 16 and conf["judge_reasoning"]  # and its reasoning is judged too
    text = (tmp_path / "think" / "report.md").read_text()
    assert "Token budgets from the model's own reasoning" in text and "unterminated <think> (CHiSafety)" not in text


def test_rank1_gate_borderline_extra_benign_joins_its_fit_data_only(tiny_qwen2, tmp_path, shared_data):
    out = tmp_path / "study"
    cfg = _cfg(tiny_qwen2, out, edits=["rank1-gate", "rank1-gate-borderline"], plans=[], benches=["gsm8k-nll"],
               limits={"gsm8k-nll": 2}, eval={"data_root": str(shared_data)},
               edit={"rank1_gate_layer": 1, "rank1_gate_borderline": 8, "rank1_gate_extra_benign": "or-bench"})
    run_study(cfg, log=lambda m: None)
    reads = {v: json.loads((out / "exports" / v / "model" / "tuning_reads.json").read_text())
             for v in ("rank1-gate", "rank1-gate-borderline")}
    assert "or-bench" in reads["rank1-gate-borderline"] and "or-bench" not in reads["rank1-gate"]
    text = (out / "report.md").read_text()
    assert "--set extra_benign=or-bench" in text and "the whole dev parts of or-bench" in text
