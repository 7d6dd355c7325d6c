import json

import pytest

from r1probe.data import chisafety as cs
from r1probe.errors import DataError


def _write(root, refusal=True):
    (root / "v1").mkdir(parents=True)
    (root / cs.REFUSAL_FILE).write_text(json.dumps(
        [{"category": "应拒答", "infos": [{"id": 7, "question": "问题甲", "category": "子类"}]}], ensure_ascii=False), "utf-8")
    (root / cs.MULTITURN_FILE).write_text(json.dumps(
        [{"category": "c", "sub_category": "s", "input": "最后一问",
          "history": [{"role": "system", "content": "sys"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]}], ensure_ascii=False), "utf-8")
    (root / cs.MCQ_FILE).write_text(json.dumps(
        [{"category": "g", "infos": [{"id": 3, "question": "是吗？ \nA. 是 \nB. 否", "category": "k"}]}],
        ensure_ascii=False), "utf-8")
    return root


def test_loaders_on_synthetic_layout(tmp_path):
    root = _write(tmp_path / "csb")
    r = cs.load_chisafety_refusal(root)
    assert [(p.id, p.text, p.label, p.category, p.history) for p in r] == [("chisafety-refusal/7", "问题甲", "harmful", "子类", None)]
    m = cs.load_chisafety_multiturn(root)[0]
    assert m.text == "最后一问" and m.history[0]["role"] == "system" and len(m.history) == 3
    q = cs.load_chisafety_mcq(root)[0]
    assert q.label == "mcq" and cs.mcq_options(q.text) == ["A", "B"]


def test_env_root_and_missing(tmp_path, monkeypatch):
    root = _write(tmp_path / "csb")
    monkeypatch.setenv("R1PROBE_CHISAFETY", str(root))
    assert cs.default_root() == root and len(cs.load_chisafety_refusal()) == 1
    with pytest.raises(DataError, match="not found"):
        cs.load_chisafety_refusal(tmp_path / "nope")


def test_answer_key_formats(tmp_path):
    (tmp_path / "k.json").write_text('{"1": "a", "chisafety-mcq/2": "B"}')
    assert cs.load_answer_key(tmp_path / "k.json") == {"1": "A", "2": "B"}
    (tmp_path / "k.csv").write_text("# id,answer\n1,C\n2\tD\n")
    assert cs.load_answer_key(tmp_path / "k.csv") == {"1": "C", "2": "D"}
    (tmp_path / "bad.json").write_text('{"1": "yes"}')
    with pytest.raises(DataError):
        cs.load_answer_key(tmp_path / "bad.json")


def test_download_uses_cache_without_network(tmp_path):
    root = _write(tmp_path / "csb")
    from r1probe.provenance import sha256_file
    files = {cs.REFUSAL_FILE: sha256_file(root / cs.REFUSAL_FILE)}
    assert cs.download_chisafety(root, files=files) == root  # checksum matches: no download


def test_real_chisafety_counts(shared_data):
    root = shared_data / "chisafetybench"
    assert len(cs.load_chisafety_refusal(root)) == 462
    mt = cs.load_chisafety_multiturn(root)
    assert len(mt) == 101 and all(p.history and p.history[0]["role"] == "system" for p in mt)
    assert len(cs.load_chisafety_mcq(root)) == 1567
    assert set(cs.verify_root(root).values()) == {"ok"}
