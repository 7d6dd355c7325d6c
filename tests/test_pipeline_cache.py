import json

import pytest

from r1probe.pipeline.cache import run_stage


def test_stage_runs_once_then_skips_until_inputs_change(tmp_path):
    calls = []

    def fn(path):
        calls.append(1)
        (path / "out.txt").write_text("x")
        return {"n": len(calls)}

    r1 = run_stage("s", tmp_path / "s", {"a": 1}, fn, log=lambda m: None)
    r2 = run_stage("s", tmp_path / "s", {"a": 1}, fn, log=lambda m: None)
    assert not r1.skipped and r2.skipped and r2.info == {"n": 1} and len(calls) == 1
    r3 = run_stage("s", tmp_path / "s", {"a": 2}, fn, log=lambda m: None)
    assert not r3.skipped and len(calls) == 2


def test_a_crashed_stage_is_redone(tmp_path):
    def boom(path):
        (path / "partial").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage("s", tmp_path / "s", {}, boom, log=lambda m: None)
    assert not (tmp_path / "s" / "stage.json").exists()
    r = run_stage("s", tmp_path / "s", {}, lambda p: {"ok": True}, log=lambda m: None)
    assert not r.skipped and not (tmp_path / "s" / "partial").exists()
    assert json.loads((tmp_path / "s" / "stage.json").read_text())["info"] == {"ok": True}
