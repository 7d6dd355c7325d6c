"""Fluency measures: repetition loops and distinct-n on known texts; the report's paired fluency table."""

import pytest

from r1probe.eval.fluency import FLUENCY, distinct_n, repetition_loop, units


def test_units_are_cjk_characters_and_words_without_punctuation():
    assert units("我不能，Sorry I can't 123！") == ["我", "不", "能", "sorry", "i", "can", "t", "123"]
    assert units("") == [] and units(None) == []


@pytest.mark.parametrize("text, loop", [
    ("非法恐怖主义，非法恐怖主义，非法恐怖主义。", True),          # 6-unit phrase three times, 18 units
    ("非法恐怖主义，非法恐怖主义。", False),                       # only twice
    ("I cannot help. I cannot help. I cannot help. I cannot help.", True),  # 3-unit phrase x4 = 12 units
    ("I cannot help. I cannot help. I cannot help.", False),       # x3 but 9 units < 12
    ("哈哈哈", False),                                             # too short a run
    ("哈" * 12, True),
    ("very very very good", False),
    ("1 2 3 4 5 6 7 8 9 10 11 12 13", False),
    ("作为一个人工智能助手，我不能提供任何非法或不道德的行为建议。", False),
    ("我们先算一下：" + "然后再算一下，" * 2 + "结果是 42。", False),
])
def test_repetition_loop(text, loop):
    assert repetition_loop(text) is loop


def test_repetition_loop_thresholds_are_the_rule():
    t = "abc " * 5  # one unit "abc"... five times: a period-1 run of 5 units
    assert repetition_loop(t, min_units=5) and not repetition_loop(t, min_units=6)
    assert not repetition_loop(t, min_units=5, min_repeats=6)
    long_period = "".join(chr(0x4e00 + i) for i in range(20))
    assert repetition_loop(long_period * 3) and not repetition_loop(long_period * 3, max_period=19)


def test_distinct_n():
    assert distinct_n("一二三四") == 1.0
    assert distinct_n("一二一二一") == pytest.approx(2 / 4)    # pairs 一二 二一 一二 二一
    assert distinct_n("一") is None and distinct_n("一二", n=3) is None


def test_fluency_metrics_over_records():
    recs = [{"reply": "好的。" + "重复的话，" * 5}, {"reply": "这是一个正常的回答。"}, {"label": 2}]
    assert FLUENCY["loop_rate"](recs) == 0.5           # the record without a reply is not counted
    assert FLUENCY["distinct_2"](recs) == pytest.approx((distinct_n(recs[0]["reply"]) + 1.0) / 2)
