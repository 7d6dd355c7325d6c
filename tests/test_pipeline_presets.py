"""A preset is a list of stages plus settings defaults: the DEVELOPING.md example registered and run via the CLI."""

import pytest

from r1probe.cli import main
from r1probe.pipeline import presets, settings
from r1probe.pipeline import stages as S
from r1probe.pipeline.study import evaluate, extract, plans, probe, report


def base(ctx):
    ctx.variants["base"] = S.Variant(ctx.settings.model.spec, None, ctx.base_key)


@pytest.fixture
def probe_only():
    p = presets.register_preset(
        presets.Preset("probe-only", "the refusal direction and a gated plan against the base model",
                       (extract, probe, base, plans, evaluate, report)),
        defaults={"edit": {"edits": []}, "eval": {"benches": ["gsm8k-nll"], "limits": {"gsm8k-nll": 2}}})
    yield p
    presets.PRESETS.pop("probe-only")
    settings.PRESETS.pop("probe-only")


def test_registered_preset_runs_through_the_cli(probe_only, tiny_qwen2, tmp_path, capsys):
    out = tmp_path / "po"
    main(["run", "--preset", "probe-only", "--out", str(out), "--model", str(tiny_qwen2), "--dtype", "float32",
          "--n-train", "8", "--n-val", "4", "--kl-max", "100", "--max-layer-frac", "1", "--score", "first_token",
          "--max-new-tokens", "6"])
    text = (out / "report.md").read_text()
    assert "plan-conditional" in text and "--preset probe-only" in text
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["base", "plan-conditional"]
    assert not (out / "exports").exists()


def test_unknown_preset_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--preset", "nope", "--print-config"])
    assert e.value.code == 2 and "study, powered, mini-distill" in capsys.readouterr().err


def test_powered_preset_is_the_study_at_200_items_per_safety_set():
    from r1probe.pipeline import study
    from r1probe.pipeline.presets import get_preset
    from r1probe.pipeline.settings import load_settings

    assert get_preset("powered").stages == study.STAGES
    s = load_settings(env={}, flags={"preset": "powered"})
    assert all(s.limit(b) is None or s.limit(b) >= 200 for b in ("chisafety-refusal", "cvalues-report", "xstest-safe",
                                                                   "or-bench", "zh-harmless"))
    assert s.limit("gsm8k-nll") is None and s.out == "runs/powered"
    # a flag still wins over the preset's limits
    assert load_settings(env={}, flags={"preset": "powered", "eval": {"limits": "gsm8k=5"}}).limit("gsm8k") == 5
