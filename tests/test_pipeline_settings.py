import pytest

from r1probe.errors import R1ProbeError
from r1probe.pipeline.settings import DEFAULT_LIMITS, load_settings


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[study]\nseed = 3\n[study.extract]\nn_train = 40\n[study.eval]\nbenches = ["gsm8k"]\n'
                 '[study.eval.limits]\ngsm8k = 5\n')
    cfg = load_settings(f, env={"R1PROBE_SEED": "7", "R1PROBE_EDIT__EDITS": "orthogonalize"},
                        flags={"probe": {"n_val": 5}})
    assert (cfg.extract.n_train, cfg.seed, cfg.probe.n_val, cfg.edit.edits, cfg.eval.benches) == \
        (40, 7, 5, ["orthogonalize"], ["gsm8k"])
    assert cfg.eval.limits["gsm8k"] == 5 and cfg.eval.limits["cvalues-report"] == DEFAULT_LIMITS["cvalues-report"]


def test_validation_errors(tmp_path):
    with pytest.raises(R1ProbeError, match="n_train"):
        load_settings(env={}, flags={"extract": {"n_train": 1}})
    with pytest.raises(R1ProbeError, match="edits"):
        load_settings(env={}, flags={"edit": {"edits": ["nope"]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("n_trian = 3\n")
    with pytest.raises(R1ProbeError, match="n_trian: unknown setting"):
        load_settings(bad, env={})
    bad.write_text("n_train = [\n")
    with pytest.raises(R1ProbeError, match="invalid TOML"):
        load_settings(bad, env={})
    with pytest.raises(R1ProbeError, match="integer"):
        load_settings(None, env={"R1PROBE_EXTRACT__N_TRAIN": "many"})


def test_full_preset_uses_full_sizes():
    cfg = load_settings(env={}, flags={"full": True})
    assert cfg.eval.limits["gsm8k"] is None and "math500" in cfg.eval.benches and cfg.eval.max_new_tokens >= 2048
