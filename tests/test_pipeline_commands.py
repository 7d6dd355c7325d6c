"""``r1probe run``: generated flags, one-line errors before any model loads, --print-config round trip."""

import pytest

import r1probe.models
from r1probe.cli import main
from r1probe.cli_options import settings_fields
from r1probe.pipeline.commands import run
from r1probe.pipeline.settings import StudySettings, load_settings


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything loads a model."""
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(r1probe.models, "load_model", boom)
    import r1probe.models.loader as loader

    monkeypatch.setattr(loader, "load_model", boom)


def _fails(capsys, argv, env=None, monkeypatch=None):
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        main(["run", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _ok(argv):
    try:
        main(["run", *argv])
    except SystemExit as e:
        assert e.code in (0, None)


@pytest.mark.parametrize("argv,expect", [
    (["--n-train", "eight"], "extract.n_train"),
    (["--limits", "gsm8k=abc"], "eval.limits.gsm8k"),
    (["--benches", "xstest-saf"], "xstest-safe"),
    (["--edits", "orthogonalise"], "rank1-gate"),
    (["--eval.limits", "nope=3"], "eval.limits"),
])
def test_bad_flags_fail_in_one_line_before_loading(no_model, capsys, tmp_path, argv, expect):
    err = _fails(capsys, [*argv, "--out", str(tmp_path / "x")])
    assert expect in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("toml,expect", [
    ('[study.extract]\nn_train = "eight"\n', "extract.n_train"),
    ("[study.eval.limits]\ngsm8k = 2\ncvalues-repor = 3\n", "cvalues-report"),
    ("[study.probe]\nkl_maxx = 0.1\n", "probe.kl_maxx: unknown setting"),
    ('[study.eval]\nbenches = ["xstest-saf"]\n', "eval.benches"),
    ('[study.edit]\nedits = ["nope"]\n', "orthogonalize"),
])
def test_bad_toml_fails_in_one_line_before_loading(no_model, capsys, tmp_path, toml, expect):
    p = tmp_path / "s.toml"
    p.write_text(toml)
    assert expect in _fails(capsys, [str(p), "--out", str(tmp_path / "x")])


def test_bad_env_fails_in_one_line(no_model, capsys, monkeypatch, tmp_path):
    err = _fails(capsys, ["--out", str(tmp_path / "x")], {"R1PROBE_EVAL__BENCHES": "gsm8k,nope"}, monkeypatch)
    assert err.startswith("r1probe: error: eval.benches")


def test_print_config_round_trip(no_model, capsys, tmp_path, monkeypatch):
    for k in [k for k in __import__("os").environ if k.startswith("R1PROBE_")]:
        monkeypatch.delenv(k)
    _ok(["--print-config", "--n-train", "12", "--eval.limits", "gsm8k=3", "--no-report.figures"])
    first = capsys.readouterr().out
    p = tmp_path / "s.toml"
    p.write_text(first)
    _ok([str(p), "--print-config"])
    assert capsys.readouterr().out == first
    s = load_settings(p, env={})
    assert s.extract.n_train == 12 and s.eval.limits["gsm8k"] == 3 and s.report.figures is False
    assert s == load_settings(None, env={}, flags={"extract": {"n_train": 12}, "eval": {"limits": "gsm8k=3"},
                                                   "report": {"figures": False}})


def test_env_and_flag_override_the_file(no_model, capsys, tmp_path, monkeypatch):
    p = tmp_path / "s.toml"
    p.write_text("[study]\nseed = 3\n[study.extract]\nn_train = 12\n")
    monkeypatch.setenv("R1PROBE_EXTRACT__N_TRAIN", "20")
    monkeypatch.setenv("R1PROBE_PROBE__N_VAL", "6")
    _ok([str(p), "--print-config", "--n-val", "5"])
    p2 = tmp_path / "out.toml"
    p2.write_text(capsys.readouterr().out)
    s = load_settings(p2, env={})
    assert (s.seed, s.extract.n_train, s.probe.n_val) == (3, 20, 5)


def test_every_field_has_a_flag_with_help():
    params = {p.name: p for p in run.params}
    for path, f in settings_fields(StudySettings):
        p = params["__".join(path)]
        assert p.help and len(p.help) > 10, path
        assert any(o.startswith("--" + ".".join(x.replace("_", "-") for x in path)) for o in p.opts), p.opts


def test_shipped_study_toml_is_the_defaults():
    from pathlib import Path

    p = Path(__file__).resolve().parents[1] / "docs" / "study.toml"
    assert load_settings(p, env={}) == load_settings(None, env={})


@pytest.mark.parametrize("flags", [
    {},
    {"preset": "mini-distill", "threads": 2, "distill": {"restores": "plan-own"}},
    {"full": True, "seed": 3, "model": {"chat_template": "r1"}, "probe": {"estimators": "mean_diff,pca"}},
    {"eval": {"limits": "gsm8k=none,cvalues=7", "benches": "gsm8k,cvalues"}, "report": {"figures": False},
     "edit": {"edits": "amplify", "amplify_layers": "3-5"}, "plan": {"plans": "add,conditional"}},
])
def test_equivalent_command_parses_back_to_the_same_settings(flags, tmp_path, capsys, monkeypatch):
    import shlex

    from r1probe.pipeline.settings import equivalent_command

    for k in [k for k in __import__("os").environ if k.startswith("R1PROBE_")]:
        monkeypatch.delenv(k)
    s = load_settings(env={}, flags=flags)
    line = equivalent_command(s)
    _ok([*shlex.split(line)[2:], "--print-config"])
    p = tmp_path / "s.toml"
    p.write_text(capsys.readouterr().out)
    assert load_settings(p, env={}) == s
