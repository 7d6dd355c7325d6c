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
