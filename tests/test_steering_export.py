"""Exported checkpoints: load in a clean process without r1probe; atomic writes; model card."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.steering import edit as E
from r1probe.steering import export as X
from r1probe.steering import save_directions

IDS = [[5, 9, 17, 30, 41, 52, 8, 11]]

CHECK = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(sys.argv[1])
assert tok.chat_template, "no chat template"
assert not any(k.startswith("r1probe") for k in sys.modules), "r1probe was imported"
with torch.no_grad():
    print(json.dumps(m(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits.tolist()))
"""


@pytest.fixture
def edited(tiny_lm, tmp_path):
    lm = copy.deepcopy(tiny_lm)
    d = torch.randn(64, generator=torch.Generator().manual_seed(5))
    save_directions(tmp_path / "dirs" / "directions.safetensors", {"chosen": d})
    rec = [E.orthogonalize(lm, d), E.amplify(lm, d, [1], 2.0)]
    return lm, rec, tmp_path / "dirs"


def test_export_loads_in_a_clean_process_and_matches(edited, tmp_path):
    lm, rec, dirs = edited
    out = X.export_checkpoint(lm, tmp_path / "export", edits=rec, directions_file=dirs, direction_key="chosen",
                              metrics={"refusal": 0.5}, max_shard_size="100KB")
    files = sorted(p.name for p in out.iterdir())
    assert any(f.startswith("model-0000") for f in files) and "model.safetensors.index.json" in files  # sharded
    for f in ("config.json", "generation_config.json", "README.md", "r1probe_manifest.json", "tokenizer.json"):
        assert f in files, files
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o755 & ~mask  # not the private mode of a temp folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", CHECK, str(out), json.dumps(IDS)], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.tensor(json.loads(r.stdout.strip().splitlines()[-1]))
    with torch.no_grad():
        want = lm.model(input_ids=torch.tensor(IDS)).logits
    assert (got - want).abs().max() < 1e-4
    card = (out / "README.md").read_text()
    man = json.loads((out / "r1probe_manifest.json").read_text())
    assert man["directions_sha256"] in card and "orthogonalize" in card and "refusal" in card
    assert man["base_model"] == lm.spec.raw and man["edits"][1]["beta"] == 2.0


def test_interrupted_export_leaves_nothing_at_the_target(edited, tmp_path, monkeypatch):
    lm, rec, _ = edited
    target = tmp_path / "export"

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(lm.tokenizer), "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        X.export_checkpoint(lm, target, edits=rec)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


def test_existing_target_needs_overwrite_and_is_replaced_whole(edited, tmp_path):
    lm, rec, _ = edited
    target = tmp_path / "export"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with pytest.raises(R1ProbeError, match="already exists"):
        X.export_checkpoint(lm, target, edits=rec)
    X.export_checkpoint(lm, target, edits=rec, overwrite=True)
    assert not (target / "stale.txt").exists() and (target / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirs", "export"]


_PATH_IN_TEXT = r"(?<![\w:/.~-])(?:~|\.{1,2})?/[^\s]+"


def _as_builtin(lm):
    from dataclasses import replace

    from r1probe.models.spec import parse_spec

    return replace(lm, spec=parse_spec("builtin:qwen2.5-coder-0.5b-instruct"))


def test_model_card_is_a_valid_hub_card_with_base_model_licence_and_no_local_path(edited, tmp_path):
    import re

    from huggingface_hub import ModelCard

    lm, rec, dirs = edited
    rec = [dict(rec[0]), {**rec[1], "fit_data": f"harmful: {tmp_path}/h.jsonl; benign: ./b.jsonl (first 150 each)"}]
    metrics = {"keyword refusal on h.jsonl": {"value": 0.4, "ci": [0.2, 0.6], "n": 20, "unit": "rate"}}
    out = X.export_checkpoint(_as_builtin(lm), tmp_path / "export", edits=rec, directions_file=dirs,
                              direction_key="chosen", metrics=metrics)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "transformers" and "amplify" in card.data.tags
    text = (out / "README.md").read_text()
    assert not re.findall(_PATH_IN_TEXT, text), re.findall(_PATH_IN_TEXT, text)
    assert str(tmp_path) not in text and "./" not in text
    assert "command" not in text.lower() and sys.argv[0] not in text
    assert "40.0%" in text and "20.0% – 60.0%" in text and "| 20 |" in text  # value, interval, n
    assert "beta" in text and "h.jsonl" in text  # the edit's settings and what it was fitted on
    man = json.loads((out / "r1probe_manifest.json").read_text())
    assert man["command"] and man["base_model_hub_id"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct"  # provenance stays


def test_model_card_carries_a_local_base_models_licence_and_no_base_model(edited, tmp_path):
    from dataclasses import replace

    from huggingface_hub import ModelCard

    from r1probe.models.spec import parse_spec

    lm, rec, _ = edited
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a local model\n")
    local = replace(lm, spec=parse_spec(str(base)))
    out = X.export_checkpoint(local, tmp_path / "export", edits=rec)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "mit" and card.data.base_model is None
    assert str(base) not in (out / "README.md").read_text()


def test_exported_files_are_readable_by_others(edited, tmp_path):
    lm, rec, _ = edited
    out = X.export_checkpoint(lm, tmp_path / "export", edits=rec)
    mask = os.umask(0)
    os.umask(mask)
    for p in out.iterdir():
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644) & ~mask, p


def test_distill_card_is_a_hub_card_without_local_paths(tmp_path):
    from huggingface_hub import ModelCard

    from r1probe.distill.export import model_card

    man = {"student": str(tmp_path / "student"), "student_hub_id": "Qwen/Qwen2.5-Coder-0.5B-Instruct",
           "student_license": "apache-2.0", "student_provenance": {"loaded_from": str(tmp_path / "cache")},
           "traces_source": str(tmp_path / "traces.jsonl"), "traces_sha256": "ab" * 32, "command": "r1probe distill x",
           "config": {"lr": 1e-4, "out": "./runs/x"}, "train_stats": {"encode": {"used": 3}}, "steps": 2,
           "total_steps": 2, "finished": True}
    (tmp_path / "README.md").write_text(model_card("student-x", man))
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and card.data.license == "apache-2.0"
    text = (tmp_path / "README.md").read_text()
    assert str(tmp_path) not in text and "./" not in text and "r1probe distill x" not in text
    assert "traces.jsonl" in text and "ab" * 32 in text


def test_atomic_writes_and_store_shards_get_ordinary_modes(tiny_lm, tmp_path):
    from r1probe.data.prompts import Prompt, PromptSet
    from r1probe.extract.api import extract_activations
    from r1probe.provenance import atomic_write_json

    mask = os.umask(0)
    os.umask(mask)
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
    ps = PromptSet("s", [Prompt(f"p{i}", f"hello {i}", "harmful") for i in range(2)])
    extract_activations(tiny_lm, ps, layers="0", positions="-1", out_dir=tmp_path / "acts", progress=False)
    files = [p for p in (tmp_path / "acts").rglob("*") if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o666 & ~mask for p in files), \
        [(p.name, oct(p.stat().st_mode)) for p in files]


def test_edit_measure_puts_the_rate_with_its_interval_in_the_card(tiny_qwen2, tmp_path):
    from click.testing import CliRunner
    from huggingface_hub import ModelCard

    from r1probe.cli import cli

    save_directions(tmp_path / "dirs" / "directions.safetensors",
                    {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(1))})
    prompts = tmp_path / "m.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"hello {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "exp"
    r = CliRunner().invoke(cli, ["edit", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu",
                                 "--directions", str(tmp_path / "dirs"), "--op", "orthogonalize", "--out", str(out),
                                 "--measure", str(prompts), "--quiet"])
    assert r.exit_code == 0, r.output
    man = json.loads((out / "r1probe_manifest.json").read_text())
    (m,) = man["metrics"].values()
    assert m["n"] + m["unterminated"] == 3 and m["unit"] == "rate"
    if m["n"]:
        assert 0 <= m["ci"][0] <= m["value"] <= m["ci"][1] <= 1
    text = (out / "README.md").read_text()
    assert "m.jsonl" in text and "95% interval" in text and str(tmp_path) not in text
    assert ModelCard.load(out / "README.md").data.license is None  # a local model without a card: no licence claimed
