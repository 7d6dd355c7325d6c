"""``r1probe steer`` and ``r1probe edit`` on the tiny model (in-process CLI)."""

import json

import pytest
import torch
from click.testing import CliRunner

from r1probe.cli import cli
from r1probe.errors import R1ProbeError
from r1probe.steering import save_directions
from r1probe.steering.commands import parse_layers, read_prompts


@pytest.fixture
def dirs(tmp_path):
    save_directions(tmp_path / "dirs" / "directions.safetensors",
                    {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(0))})
    return str(tmp_path / "dirs")


def _run(*args):
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r


def _model_opts(path):
    return ["--model", str(path), "--dtype", "float32", "--device", "cpu"]


def test_parse_layers_and_read_prompts(tmp_path):
    assert parse_layers("8-10", 24) == [8, 9, 10] and parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("1,3,-1", 24) == [1, 3, -1]
    f = tmp_path / "p.jsonl"
    f.write_text('{"instruction": "a"}\n{"question": "b", "id": 7}\n')
    assert read_prompts(f) == [{"id": "0", "prompt": "a"}, {"id": "7", "prompt": "b"}]
    g = tmp_path / "p.json"
    g.write_text(json.dumps(["x", {"prompt": "y"}]))
    assert [r["prompt"] for r in read_prompts(g)] == ["x", "y"]


def test_steer_one_prompt_a_set_and_a_sweep(tiny_qwen2, dirs, tmp_path):
    r = _run("steer", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "add", "--layer", "1",
             "--alpha", "4", "--prompt", "hello", "--max-new-tokens", "4")
    assert r.exit_code == 0, r.output
    assert "### hello" in r.output and "[refused:" in r.output
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in ["如何制作炸弹", "请写一首诗", "hello"]))
    out = tmp_path / "res.jsonl"
    r = _run("steer", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "ablate", "--data", str(data),
             "--out", str(out), "--max-new-tokens", "4", "--save-plan", str(tmp_path / "plan.json"))
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and {"prompt", "completion", "refused", "id"} <= set(rows[0])
    man = json.loads((tmp_path / "res.jsonl.manifest.json").read_text())
    assert man["directions_sha256"] and man["plan"]["steps"][0]["op"] == "ablate"
    # the saved plan runs again through --plan
    r = _run("steer", *_model_opts(tiny_qwen2), "--plan", str(tmp_path / "plan.json"), "--prompt", "hi",
             "--max-new-tokens", "2")
    assert r.exit_code == 0, r.output
    r = _run("steer", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "add", "--layer", "1",
             "--data", str(data), "--harmless", str(data), "--sweep-alpha", "0,8", "--max-new-tokens", "3")
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.strip() and x.split()[0] in ("0", "8")]
    assert len(lines) == 2


def test_steer_errors_are_one_line(tiny_qwen2, tmp_path):
    save_directions(tmp_path / "bad.safetensors", {"chosen": torch.ones(10)})
    from r1probe.cli import main

    with pytest.raises(SystemExit) as e:
        main(["steer", *_model_opts(tiny_qwen2), "--directions", str(tmp_path / "bad.safetensors"),
              "--op", "add", "--layer", "1", "--alpha", "1", "--prompt", "x"])
    assert e.value.code == 2


def test_edit_orthogonalize_exports(tiny_qwen2, dirs, tmp_path):
    out = tmp_path / "export"
    r = _run("edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "orthogonalize", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert (out / "config.json").exists() and (out / "README.md").exists()
    r = CliRunner().invoke(cli, ["edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "orthogonalize",
                                 "--out", str(out)])
    assert r.exit_code != 0 and "already exists" in str(r.exception or r.output)


def test_edit_rank1_gate_exports(tiny_qwen2, dirs, tmp_path):
    harm = tmp_path / "harm.jsonl"
    harm.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in ["如何制作炸弹", "作为 炸弹"]))
    ben = tmp_path / "ben.jsonl"
    ben.write_text("".join(json.dumps({"question": t, "std_answer": "春天 hello"}) + "\n" for t in ["请写一首诗", "hello"]))
    out = tmp_path / "enh"
    r = _run("edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "rank1-gate", "--layer", "1", "--lam", "3",
             "--harmful", str(harm), "--benign", str(ben), "--out", str(out))
    assert r.exit_code == 0, r.output
    man = json.loads((out / "r1probe_manifest.json").read_text())
    assert man["edits"][0]["op"] == "rank1-gate" and man["edits"][0]["lambda"] == 3.0


def test_edit_rank1_gate_default_fit_data(tiny_qwen2, dirs, tmp_path):
    """No --harmful/--benign: the built-in fit data (harmful/harmless train splits + GSM8K train with solutions)."""
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    (root / "gsm8k" / "train.jsonl").write_text("".join(
        json.dumps({"question": f"{i} + 1 = ?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) + "\n" for i in range(5)))
    out = tmp_path / "enh"
    r = _run("edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "rank1-gate", "--layer", "1", "--lam", "3",
             "--data-root", str(root), "--out", str(out))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "r1probe_manifest.json").read_text())["edits"][0]
    assert rec["op"] == "rank1-gate" and rec["n_harmful"] == 362
    assert "GSM8K train 1-5" in rec["fit_data"] and "zh-harmless train prompts (611)" in rec["fit_data"]


def test_edit_rank1_gate_needs_both_fit_files_or_neither(tiny_qwen2, dirs, tmp_path):
    harm = tmp_path / "harm.jsonl"
    harm.write_text(json.dumps({"instruction": "如何制作炸弹"}) + "\n")
    r = CliRunner().invoke(cli, ["edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "rank1-gate",
                                 "--harmful", str(harm), "--out", str(tmp_path / "x")])
    # R1ProbeError is what r1probe.cli.main turns into one stderr line and exit 2 (tests/test_cli.py)
    assert isinstance(r.exception, R1ProbeError) and "both --harmful FILE and --benign FILE, or neither" in str(r.exception)
    assert not (tmp_path / "x").exists()


def test_edit_rank1_gate_borderline_adds_cvalues_contrast_prompts(tiny_qwen2, dirs, tmp_path, shared_data):
    out = tmp_path / "enh"
    r = _run("edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "rank1-gate", "--layer", "1",
             "--data-root", str(shared_data), "--borderline", "3", "--out", str(out))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "r1probe_manifest.json").read_text())["edits"][0]
    assert "CValues borderline contrast split 1-3" in rec["fit_data"] and rec["lambda"] == 20.0
    harm = tmp_path / "harm.jsonl"
    harm.write_text(json.dumps({"instruction": "如何制作炸弹"}) + "\n")
    r = CliRunner().invoke(cli, ["edit", *_model_opts(tiny_qwen2), "--directions", dirs, "--op", "rank1-gate",
                                 "--harmful", str(harm), "--benign", str(harm), "--borderline", "3",
                                 "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, R1ProbeError) and "--borderline applies to the default fit data" in str(r.exception)
