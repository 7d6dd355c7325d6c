"""The one settings schema: validation before any model is loaded, sources and their precedence, TOML round trip."""

import pytest

from r1probe.pipeline.settings import StudySettings, load_settings, read_toml
from r1probe.probes.select import SelectConfig
from r1probe.settings import SettingsError, to_toml


def _err(**kw) -> str:
    with pytest.raises(SettingsError) as e:
        load_settings(env=kw.pop("env", {}), **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_are_the_study():
    s = load_settings(env={})
    assert s.preset == "study" and s.extract.n_train == 96 and s.probe.n_val == 24
    assert s.edit.edits == ["rank1-gate"] and s.edit.rank1_gate_lam == 10.0
    assert s.probe.select_config().n_reference == 32


def test_bad_type_names_the_key(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('[study.extract]\nn_train = "eight"\n')
    assert _err(path=p).startswith("extract.n_train:")
    assert _err(flags={"eval": {"limits": "gsm8k=abc"}}).startswith("eval.limits.gsm8k:")


def test_unknown_keys_at_every_depth(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[study]\nnope = 1\n")
    assert "nope" in _err(path=p) and "allowed:" in _err(path=p)
    p.write_text("[study.probe]\nnope = 1\n")
    msg = _err(path=p)
    assert msg.startswith("probe.nope: unknown setting") and "n_val" in msg
    p.write_text("[study.eval.limits]\nxstest-saf = 3\n")
    msg = _err(path=p)
    assert msg.startswith("eval.limits:") and "xstest-safe" in msg


def test_unknown_bench_and_edit_name_the_allowed_values():
    msg = _err(flags={"eval": {"benches": "gsm8k,xstest-saf"}})
    assert msg.startswith("eval.benches:") and "xstest-saf" in msg and "gsm8k-nll" in msg
    msg = _err(flags={"edit": {"edits": ["orthogonalise"]}})
    assert msg.startswith("edit.edits:") and "orthogonalize" in msg and "rank1-gate" in msg


def test_old_edit_names_are_accepted_with_a_deprecation_line(capsys):
    s = load_settings(env={}, flags={"edit": {"edits": "enhance,enhance-borderline"}})
    assert s.edit.edits == ["rank1-gate", "rank1-gate-borderline"]
    assert "deprecated" in capsys.readouterr().err


def test_precedence_toml_env_flags(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text("[study]\nseed = 3\n[study.extract]\nn_train = 12\n[study.eval.limits]\ngsm8k = 5\n")
    s = load_settings(p, env={})
    assert (s.seed, s.extract.n_train, s.eval.limits["gsm8k"], s.eval.limits["xstest-safe"]) == (3, 12, 5, 96)
    s = load_settings(p, env={"R1PROBE_EXTRACT__N_TRAIN": "20", "R1PROBE_EVAL__BENCHES": "gsm8k,xstest-safe"})
    assert s.extract.n_train == 20 and s.eval.benches == ["gsm8k", "xstest-safe"]
    s = load_settings(p, env={"R1PROBE_EXTRACT__N_TRAIN": "20"}, flags={"extract": {"n_train": "30"}})
    assert s.extract.n_train == 30 and s.seed == 3


def test_env_errors_name_the_key():
    assert _err(env={"R1PROBE_PROBE__N_VAL": "many"}).startswith("probe.n_val:")
    assert _err(env={"R1PROBE_EVAL__FOO": "1"}).startswith("eval.foo: unknown setting")


def test_preset_defaults_sit_below_the_sources():
    s = load_settings(env={}, flags={"preset": "mini-distill", "eval": {"limits": "gsm8k=2"}})
    assert s.out == "runs/mini-distill" and s.probe.candidates == "mean_diff" and s.eval.judge_reasoning
    assert s.eval.limits == {"chisafety-refusal": 200, "cvalues-report": 64, "xstest-safe": 64, "or-bench": None,
                             "zh-harmless": 64, "gsm8k": 2, "gsm8k-nll": 64}
    assert s.distill.amplify_beta == 1.0


@pytest.mark.parametrize("flags", [{}, {"full": True}, {"preset": "mini-distill", "threads": 2},
                                   {"eval": {"limits": "gsm8k=none,cvalues=7"}, "model": {"chat_template": "r1"}}])
def test_toml_round_trip(tmp_path, flags):
    s = load_settings(env={}, flags=flags)
    p = tmp_path / "s.toml"
    p.write_text(to_toml(s, "study"))
    assert set(read_toml(p)) >= {"preset", "extract", "eval"}
    assert load_settings(p, env={}) == s


def test_select_config_is_a_settings_model():
    assert SelectConfig(n_val=3).n_val == 3
    with pytest.raises(SettingsError, match="select.ablation"):
        SelectConfig(ablation="sideways")
    assert isinstance(StudySettings.model_fields["probe"].annotation(), SelectConfig)
