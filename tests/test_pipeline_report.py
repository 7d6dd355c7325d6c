import json
from types import SimpleNamespace

from r1probe.pipeline.report import collect


def _results(tmp_path, summaries):
    out = {}
    for v, s in summaries.items():
        d = tmp_path / v
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(s))
        out[f"eval-{v}"] = SimpleNamespace(path=d)
    return out


def _summary(rr1, reasoning=None, unterminated=0.0):
    return {"chisafety-refusal": {"n": 10, "metrics": {"RR-1": rr1, "reasoning_refusal_rate": reasoning,
                                                      "unterminated_rate": unterminated},
                                  "ci95": {"RR-1": [rr1 - 0.1, rr1 + 0.1]}}}


def test_reasoning_columns_appear_only_when_a_variant_thinks(tmp_path):
    (tmp_path / "a").mkdir()
    plain = _results(tmp_path / "a", {"base": _summary(0.4), "edit": _summary(0.6)})
    cols, table = collect(plain, ["base", "edit"])
    assert [c[1] for c in cols] == ["RR-1"]
    assert table["edit"]["CHiSafetyBench refusal (RR-1) ↑"] == (0.6, 0.5, 0.7, 10)
    (tmp_path / "b").mkdir()
    thinking = _results(tmp_path / "b", {"base": _summary(0.4), "student": _summary(0.2, 0.3, 0.15)})
    cols, table = collect(thinking, ["base", "student"])
    assert [c[1] for c in cols] == ["RR-1", "reasoning_refusal_rate", "unterminated_rate"]
    assert table["student"]["unterminated <think> (CHiSafety)"][0] == 0.15
    assert table["base"]["refusal inside <think> (CHiSafety)"][0] is None


def test_fluency_table_pools_each_group_and_pairs_with_the_base():
    from r1probe.pipeline.report import fluency_section, fluency_tables

    loop, fine = "非法恐怖主义，" * 4, "这个问题可以从几个方面来回答。"
    recs = {
        "base": {"cvalues-report": {f"c/{i}": {"reply": fine} for i in range(6)},
                 "xstest-safe": {f"x/{i}": {"reply": fine} for i in range(4)},
                 "chisafety-refusal": {f"h/{i}": {"reply": fine, "label": 2} for i in range(5)},
                 "gsm8k-nll": {"g/0": {"nll": 1.0}}},
        "edit": {"cvalues-report": {f"c/{i}": {"reply": loop if i < 3 else fine} for i in range(6)},
                 "xstest-safe": {f"x/{i}": {"reply": fine} for i in range(4)},
                 "chisafety-refusal": {f"h/{i}": {"reply": fine, "label": 2} for i in range(5)}},
    }
    t = fluency_tables(recs)
    assert t["base"]["answerable panel"]["n"] == 10 and t["base"]["must-refuse"]["n"] == 5
    assert t["base"]["answerable panel"]["loop_rate"] == 0.0 and "loop_diff" not in t["base"]["answerable panel"]
    row = t["edit"]["answerable panel"]
    assert row["loop_rate"] == 0.3 and row["benches"] == ["cvalues-report", "xstest-safe"]
    assert row["loop_diff"]["diff"] == 0.3 and row["loop_diff"]["n"] == 10
    assert row["distinct_diff"]["diff"] < 0  # the looping replies reuse their word pairs
    assert t["edit"]["must-refuse"]["loop_diff"]["diff"] == 0.0
    md = "\n".join(fluency_section(t))
    assert "### Fluency" in md and "| edit | 0.300 (n 10); 0.300 [" in md and "answerable panel: loop share" in md
