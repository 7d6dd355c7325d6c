"""The student recipe on a tiny random model: its traces, a deterministic build, reuse, and builtin:NAME."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from r1probe.distill.student import StudentRecipe, build_student, weights_sha256


def _data_root(tmp_path):
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    (root / "belle_eval").mkdir()
    (root / "gsm8k" / "train.jsonl").write_text("".join(
        json.dumps({"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"{i}+2={i + 2}\n#### {i + 2}"}) + "\n"
        for i in range(12)), encoding="utf-8")
    (root / "belle_eval" / "eval_set.json").write_text("".join(
        json.dumps({"question": f"请写一句关于第{i}座山的话。", "std_answer": f"第{i}座山很高。山上有树。", "class": "generation"},
                   ensure_ascii=False) + "\n" for i in range(30)), encoding="utf-8")
    return root


def _recipe(tiny_qwen2, **kw):
    base = dict(base=str(tiny_qwen2), n_math=4, n_general=4, max_steps=3, grad_accum=2, max_len=96, lr=1e-3,
                lora_rank=4, seed=0)
    base.update(kw)
    return StudentRecipe(**base)


def test_recipe_traces_mix_math_and_general_deterministically(tmp_path, tiny_qwen2):
    root = _data_root(tmp_path)
    r = _recipe(tiny_qwen2)
    ts = r.traces(root)
    assert sorted(t.source for t in ts) == ["belle-eval"] * 4 + ["gsm8k-train"] * 4
    assert [t.id for t in ts] == [t.id for t in r.traces(root)]
    assert [t.id for t in replace(r, seed=1).traces(root)] != [t.id for t in ts]
    assert all(t.reply().startswith("<think>\n") and "\n</think>\n\n" in t.reply() for t in ts)
    assert r.key() == _recipe(tiny_qwen2).key() and r.key() != replace(r, lr=2e-3).key()
    assert r.key() != replace(r, keypoint="clause" if r.keypoint == "sentence" else "sentence").key()


def test_same_recipe_same_weights_and_a_finished_build_is_reused(tmp_path, tiny_qwen2):
    root = _data_root(tmp_path)
    r = _recipe(tiny_qwen2)
    a = build_student(r, root=root, dest=tmp_path / "a", progress=False)
    b = build_student(r, root=root, dest=tmp_path / "b", progress=False)
    ia, ib = (json.loads((p / "student.json").read_text()) for p in (a, b))
    assert ia["weights_sha256"] == ib["weights_sha256"] == weights_sha256(a)
    assert ia["recipe_sha256"] == r.key() and ia["steps"] == 3
    c = build_student(replace(r, seed=1), root=root, dest=tmp_path / "c", progress=False)
    assert json.loads((c / "student.json").read_text())["weights_sha256"] != ia["weights_sha256"]
    mtime = (a / "student.json").stat().st_mtime_ns
    assert build_student(r, root=root, dest=a, progress=False) == a and (a / "student.json").stat().st_mtime_ns == mtime


def test_builtin_spec_resolves_a_built_model_through_its_entry_point(monkeypatch, tmp_path, tiny_qwen2):
    from r1probe.errors import SpecError
    from r1probe.models import builtin as B
    from r1probe.models import load_model
    from r1probe.models.spec import parse_spec

    calls = []

    class EP:
        name, value = "tiny-student", "tests:build"

        def load(self):
            return lambda: (calls.append(1), (str(tiny_qwen2), {"builtin": "tiny-student", "recipe_sha256": "r"}))[1]

    monkeypatch.setattr(B, "built_models", lambda: {"tiny-student": EP()})
    assert parse_spec("builtin:tiny-student").kind == "builtin"
    with pytest.raises(SpecError, match="tiny-student"):
        parse_spec("builtin:nope")
    lm = load_model("builtin:tiny-student", dtype="float32", device="cpu")
    assert calls == [1] and lm.provenance["recipe_sha256"] == "r" and lm.spec.raw == "builtin:tiny-student"


def test_r1_student_is_registered():
    from r1probe.models.builtin import built_models

    assert built_models()["r1-student"].value == "r1probe.distill.student:resolve_r1_student"
