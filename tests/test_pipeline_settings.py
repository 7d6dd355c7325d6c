import pytest

from r1probe.analysis.config import DEFAULT_LIMITS, StudyConfig, load_config
from r1probe.errors import R1ProbeError


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[study]\nn_train = 40\nseed = 3\nbenches = ["gsm8k"]\n[study.limits]\ngsm8k = 5\n')
    cfg = load_config(f, env={"R1PROBE_SEED": "7", "R1PROBE_EDITS": "orthogonalize"}, overrides={"n_val": 5})
    assert (cfg.n_train, cfg.seed, cfg.n_val, cfg.edits, cfg.benches) == (40, 7, 5, ["orthogonalize"], ["gsm8k"])
    assert cfg.limits["gsm8k"] == 5 and cfg.limits["cvalues-report"] == DEFAULT_LIMITS["cvalues-report"]


def test_validation_errors(tmp_path):
    with pytest.raises(R1ProbeError, match="n_train"):
        StudyConfig(n_train=1)
    with pytest.raises(R1ProbeError, match="edits"):
        StudyConfig(edits=["nope"])
    bad = tmp_path / "bad.toml"
    bad.write_text("n_trian = 3\n")
    with pytest.raises(R1ProbeError, match="unknown settings n_trian"):
        load_config(bad, env={})
    bad.write_text("n_train = [\n")
    with pytest.raises(R1ProbeError, match="invalid TOML"):
        load_config(bad, env={})
    with pytest.raises(R1ProbeError, match="integer"):
        load_config(None, env={"R1PROBE_N_TRAIN": "many"})


def test_full_preset_uses_full_sizes():
    cfg = StudyConfig(full=True)
    assert cfg.limits["gsm8k"] is None and "math500" in cfg.benches and cfg.max_new_tokens >= 2048
