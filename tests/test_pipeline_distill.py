"""``r1probe run --preset mini-distill`` on a tiny random model: every stage runs, the report is written,
a rerun skips everything, and the preset's settings are validated."""

import json

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.pipeline.distill import cosine, gated_plan, mean_diff
from r1probe.pipeline.presets import run_preset
from r1probe.pipeline.settings import load_settings
from tests.conftest import SHARED_DATA


def run_distill_study(cfg, **kw):
    return run_preset(cfg, **kw)


def _traces(tmp_path):
    p = tmp_path / "traces.jsonl"
    rows = [{"prompt": f"What is {a}+{b}?", "reasoning": f"{a} plus {b} is {a + b}.",
             "answer": f"The answer is \\boxed{{{a + b}}}."} for a, b in ((2, 3), (4, 1), (7, 2), (5, 5))]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def _cfg(model, out, limits=None):
    return load_settings(env={}, flags={
        "preset": "mini-distill", "out": str(out), "model": {"spec": str(model), "dtype": "float32"},
        "extract": {"n_train": 8}, "probe": {"n_val": 4, "kl_max": 100.0, "max_layer_frac": 1.0, "score": "first_token"},
        "distill": {"traces": _traces(out.parent), "n_traces": 4, "max_len": 64, "grad_accum": 2, "warmup_steps": 0,
                    "lora_rank": 4, "lr": 1e-3, "amplify_layers": "0-2", "transfer_prompts": 3},
        "eval": {"benches": ["xstest-safe", "gsm8k-nll"], "limits": limits or {"xstest-safe": 3, "gsm8k-nll": 3},
                 "max_new_tokens": 6, "budget_prompts": 4, "budget_cap": 24, "batch_size": 4, "data_root": str(SHARED_DATA)}})


def test_preset_runs_writes_report_then_skips(tiny_qwen2, tmp_path):
    logs = []
    cfg = _cfg(tiny_qwen2, tmp_path / "md")
    first = run_distill_study(cfg, log=logs.append)
    ran = {r.name for r in first["results"].values() if not r.skipped}
    assert {"extract-base", "probe-base", "distill", "budget", "extract-distilled", "direction-distilled", "compare",
            "restore-plan-base", "restore-plan-own", "restore-edit-base", "restore-edit-own", "eval-base",
            "eval-distilled", "eval-restore-plan-base", "eval-restore-edit-own", "report", "think-positions",
            "extract-distilled-think-open", "extract-distilled-think-closed", "transfer"} <= ran
    text = (tmp_path / "md" / "report.md").read_text()
    assert "## Inside and after the think prefix" in text and "| inside <think> |" in text
    assert "read out of the base model's activations" in text
    assert "## Cross-model transfer, causally" in text
    tr = first["results"]["transfer"].info["results"]
    assert set(tr) == {"distilled", "base"} and tr["base"]["harmful"]["direction"] == "distilled"
    assert tr["distilled"]["harmless"]["intervention"] == "added" and tr["distilled"]["harmful"]["n"] == 3
    assert (tmp_path / "md" / "transfer" / "replies.jsonl").exists()
    assert "## Before / distilled / restored" in text and "## Answers" in text and "XSTest-safe" in text
    assert "restore-edit-own" in text and "Stage wall times" in text
    assert "## Figures" in text and list((first["results"]["report"].path / "figures").glob("*.png"))
    assert "tuning/report overlap: 0 items" in text and "probe-base/tuning_reads.json" in text
    assert "Judge: `" in text and "frozen test part" in text
    assert (tmp_path / "md" / "distill" / "tuning_reads.json").exists()
    # the distilled copy differs from the base model, and its export is a loadable checkpoint
    info = first["results"]["distill"].info
    assert info["steps"] == 2 and (tmp_path / "md" / "distill" / "model" / "config.json").exists()
    own = first["results"]["direction-distilled"].info
    assert -1.0 <= own["cosine_to_base_direction"] <= 1.0
    # the token budgets: a tiny random model does not think, so they stay as configured
    b = first["results"]["budget"].info
    assert b["n"] == {"harmful": 4, "harmless": 4, "gsm8k": 4} and b["max_new_tokens"] == 6
    assert (tmp_path / "md" / "budget" / "replies.jsonl").exists()
    # nothing changed: every stage is skipped, no model loaded
    second = run_distill_study(cfg, log=logs.append)
    assert all(r.skipped for r in second["results"].values())
    # a new eval limit redoes the evaluations and the report only
    third = run_distill_study(_cfg(tiny_qwen2, tmp_path / "md", limits={"xstest-safe": 4, "gsm8k-nll": 3}),
                              log=logs.append)
    redone = {r.name for r in third["results"].values() if not r.skipped}
    assert redone == {n for n in redone if n.startswith("eval-")} | {"report"}
    assert "distill" not in redone and "eval-base" in redone


def test_student_recipe_distils_with_its_mix_and_records_what_it_read(tiny_qwen2, tmp_path):
    """traces='r1-student': the student recipe's GSM8K + BELLE mix (no safety data); the stage records the recipe
    and weights hashes, and its tuning record names the zh-harmless items it trained on (none reported)."""
    from r1probe.data.partitions import load_tuning_reads

    cfg = _cfg(tiny_qwen2, tmp_path / "st")
    cfg = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={
        "traces": "r1-student", "n_math": 2, "n_general": 2, "max_len": 512, "restores": ["plan-base"]}),
        "report": cfg.report.model_copy(update={"figures": False})})  # figures: the test above
    res = run_distill_study(cfg, log=lambda m: None)
    info = res["results"]["distill"].info
    assert info["n_traces"] == 4 and info["sources"] == ["belle-eval", "gsm8k-train"]
    assert len(info["recipe_sha256"]) == 64 and len(info["weights_sha256"]) == 64 and info["steps"] == 2
    assert info["recipe"]["base"] == str(tiny_qwen2)
    reads = load_tuning_reads(tmp_path / "st" / "distill" / "tuning_reads.json")
    assert len(reads["zh-harmless"]) == 2 and len(reads["gsm8k"]) == 2
    text = (tmp_path / "st" / "report.md").read_text()
    assert "the student recipe's mix" in text and "tuning/report overlap: 0 items" in text
    assert "## Figures" not in text  # report.figures off


def test_mean_diff_and_gate_on_a_synthetic_store():
    class Store:
        def get(self, layer, pos, label):
            g = torch.Generator().manual_seed(0 if label == "harmful" else 1)
            x = torch.randn(20, 8, generator=g)
            return x + (3.0 if label == "harmful" else 0.0) * torch.eye(8)[0]

    s = Store()
    d = mean_diff(s, 0, -1)
    assert cosine(d, torch.eye(8)[0]) > 0.9
    plan, info = gated_plan(d, 0, -1, s, n_layers=3, quantile=0.95)
    assert info["gate_layer"] == 1 and info["train_gate_rate"]["harmful"] > 0.8
    assert info["train_gate_rate"]["harmless"] <= 0.1


def test_config_is_validated_with_one_line_errors():
    with pytest.raises(R1ProbeError, match="restores"):
        load_settings(env={}, flags={"preset": "mini-distill", "distill": {"restores": ["plan-nobody"]}})
    with pytest.raises(R1ProbeError, match="threads"):
        load_settings(env={}, flags={"preset": "mini-distill", "threads": 0})
    with pytest.raises(R1ProbeError, match="distill.enhance_beta: unknown setting"):
        load_settings(env={}, flags={"preset": "mini-distill", "distill": {"enhance_beta": 1.0}})
    cfg = load_settings(env={"R1PROBE_DISTILL__N_TRACES": "50"},
                        flags={"preset": "mini-distill", "eval": {"limits": "gsm8k=10"}, "threads": "1"})
    assert cfg.eval.limits["gsm8k"] == 10 and cfg.eval.limits["chisafety-refusal"] == 200
    assert cfg.threads == 1 and cfg.distill.n_traces == 50 and cfg.distill.sft_config(cfg.seed).lora
