"""Trace builders: GSM8K rewrite into R1 format, teacher traces, JSONL round trip."""

from __future__ import annotations

import json

import pytest

from r1probe.distill.traces import (Trace, gsm8k_r1_traces, gsm8k_solution_to_reasoning, r1_reply, read_traces,
                                    teacher_traces, traces_sha256, write_traces)
from r1probe.errors import DataError


def _gsm8k_file(tmp_path, n=5):
    p = tmp_path / "train.jsonl"
    rows = [{"question": f"Q{i}: what is {i}+1000?", "answer": f"We add: {i}+1000 = <<{i}+1000={i + 1000}>>{i + 1000}.\n#### {i + 1000:,}"}
            for i in range(n)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_r1_reply_format():
    assert r1_reply(" step 1\nstep 2 ", "The answer is \\boxed{3}.") == \
        "<think>\nstep 1\nstep 2\n</think>\n\nThe answer is \\boxed{3}."


def test_gsm8k_solution_rewrite_strips_calculator_and_commas():
    reasoning, final = gsm8k_solution_to_reasoning("She sold 48/2 = <<48/2=24>>24 clips.\n\n#### 1,072")
    assert reasoning == "She sold 48/2 = 24 clips."
    assert final == "1072"
    with pytest.raises(DataError):
        gsm8k_solution_to_reasoning("no final answer")


def test_gsm8k_traces_seeded_shuffle_and_limit(tmp_path):
    p = _gsm8k_file(tmp_path)
    a = gsm8k_r1_traces(p, limit=3, seed=1)
    assert len(a) == 3 and [t.id for t in a] == [t.id for t in gsm8k_r1_traces(p, limit=3, seed=1)]
    assert sorted(t.id for t in gsm8k_r1_traces(p, seed=1)) == sorted(f"gsm8k-train/{i}" for i in range(5))
    t = a[0]
    i = int(t.id.split("/")[1])
    assert t.prompt.startswith(f"Q{i}:") and "\\boxed{}" in t.prompt  # the benchmark's instruction suffix
    assert "<<" not in t.reasoning and t.answer == f"The answer is \\boxed{{{i + 1000}}}."
    assert t.reply().startswith("<think>\n") and "\n</think>\n\n" in t.reply()


def test_gsm8k_real_file_has_7473_rows(shared_data):
    assert len(gsm8k_r1_traces(shared_data / "gsm8k" / "train.jsonl")) == 7473


def test_read_write_round_trip_and_completion_rows(tmp_path):
    tr = [Trace("问题", "推理", "答案 \\boxed{1}", id="a", source="x"), Trace("q2", "r2", "a2", id="b")]
    p = tmp_path / "t.jsonl"
    write_traces(p, tr)
    assert read_traces(p) == tr and traces_sha256(read_traces(p)) == traces_sha256(tr)
    q = tmp_path / "c.jsonl"
    q.write_text(json.dumps({"prompt": "p", "completion": "<think>\nthink\n</think>\n\nans"}) + "\n", encoding="utf-8")
    (t,) = read_traces(q)
    assert (t.reasoning, t.answer) == ("think", "ans")
    q.write_text(json.dumps({"prompt": "p", "completion": "no think block"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=":1:"):
        read_traces(q)


def test_teacher_traces_keeps_only_closed_reasoning_with_answer(tiny_lm, monkeypatch):
    import r1probe.models.generate as gen

    canned = ["<think>\nreason\n</think>\n\nanswer \\boxed{1}", "<think>\nstill thinking", "plain answer",
              "<think>\nr\n</think>\n\n"]
    monkeypatch.setattr(gen, "generate_texts", lambda lm, texts, **kw: canned[:len(texts)])
    stats = {}
    out = teacher_traces(tiny_lm, ["a", "b", "c", "d"], stats=stats)
    assert [(t.prompt, t.reasoning, t.answer) for t in out] == [("a", "reason", "answer \\boxed{1}")]
    assert stats == {"generated": 4, "kept": 1, "unterminated": 1, "no_reasoning": 1, "empty_answer": 1}
    assert out[0].source.startswith("teacher:")


def _belle_file(tmp_path):
    from r1probe.data.prompts import split_of

    qs = [f"请介绍第{i}个城市。" for i in range(40)]
    rows = [{"question": q, "std_answer": ("" if i % 5 == 0 else f"第{i}个城市很有名。它有很多公园！更多内容。"),
             "class": "open qa"} for i, q in enumerate(qs)]
    p = tmp_path / "eval_set.json"
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p, {q: split_of(q, 0) for q in qs}


def test_belle_traces_skip_the_zh_harmless_report_split_and_empty_answers(tmp_path):
    from r1probe.distill.traces import belle_r1_traces

    p, split = _belle_file(tmp_path)
    ts = belle_r1_traces(p)
    expect = {f"请介绍第{i}个城市。" for i in range(40) if i % 5 and split[f"请介绍第{i}个城市。"] != "test"}
    assert {t.prompt for t in ts} == expect and 0 < len(ts) < 32
    assert all(t.source == "belle-eval" and t.id.startswith("zh-harmless/belle-00") for t in ts)
    assert len(belle_r1_traces(p, exclude_split=None)) == 32
    assert [t.id for t in belle_r1_traces(p, seed=3)] == [t.id for t in belle_r1_traces(p, seed=3)]
    assert [t.id for t in belle_r1_traces(p, limit=5, seed=1)] != [t.id for t in belle_r1_traces(p, limit=5, seed=2)]


def test_general_reasoning_quotes_the_question_and_the_answer_opening_bounded():
    from r1probe.distill.traces import general_reasoning

    r = general_reasoning("回答以下问题的答案。\n中国有多少个省？", "中国有34个省级行政区。具体分为23个省。")
    assert r.splitlines() == ["嗯，用户的问题是：「回答以下问题的答案。 中国有多少个省？」。", "我先想一想要点：中国有34个省级行政区。",
                              "好，我把这些整理成完整的回答。"]
    long = general_reasoning("问" * 500, "答" * 900)
    assert len(long) < 60 + 120 + 60 and "……" in long
    # the clause key point: up to the first punctuation mark (the mark itself dropped), then cut
    c = general_reasoning("中国有多少个省？", "中国有34个省级行政区，具体分为23个省。", keypoint="clause", keypoint_chars=32)
    assert c.splitlines()[1] == "我先想一想要点：中国有34个省级行政区"
    assert general_reasoning("问", "答" * 100, keypoint="clause", keypoint_chars=8).splitlines()[1] == "我先想一想要点：" + "答" * 8 + "……"
    with pytest.raises(ValueError, match="keypoint"):
        general_reasoning("问", "答", keypoint="word")


def test_belle_traces_bad_input_is_one_line(tmp_path):
    from r1probe.distill.traces import belle_r1_traces

    with pytest.raises(DataError, match="not found"):
        belle_r1_traces(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text('{"question": "x"\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.json:1"):
        belle_r1_traces(p)
