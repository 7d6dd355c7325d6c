"""The Chinese borderline-safe set and the enhancement splits on the shared data: disjoint, deterministic."""

import pytest

from r1probe.data import borderline as BL


def test_cut_is_deterministic_and_ignores_order():
    items = [BL.Item(f"s/{i}", f"问题{i}", "s") for i in range(50)]
    a = BL.cut(items, [("report", 10), ("search", 15), ("rest", None)])
    b = BL.cut(list(reversed(items)), [("report", 10), ("search", 15), ("rest", None)])
    assert [x.id for x in a["report"]] == [x.id for x in b["report"]]
    assert sum(len(v) for v in a.values()) == 50
    assert not {x.id for x in a["report"]} & {x.id for x in a["search"]}


def test_cut_drops_repeated_texts():
    items = [BL.Item("a/1", "同一个", "s"), BL.Item("a/2", "同一个", "s"), BL.Item("a/3", "另一个", "s")]
    parts = BL.cut(items, [("x", 1), ("y", None)])
    assert sum(len(v) for v in parts.values()) == 2


def test_shared_splits_are_disjoint(shared_data):
    b = BL.borderline_splits(shared_data)
    h = BL.harmful_splits(shared_data)
    g = BL.gsm8k_splits(shared_data)
    assert len(b["report"]) == BL.CVALUES_REPORT and len(b["search"]) == BL.CVALUES_SEARCH
    assert len(h["report"]) == BL.CHISAFETY_REPORT
    assert {it.source for it in b["search"] + b["report"]} == {"cvalues"}
    BL.check_disjoint({"search": b["search"] + h["val"] + h["chisafety_search"] + g["search"][:50],
                       "report": b["report"] + h["report"] + g["report"][:50]})
    BL.check_disjoint({"search": b["search"], "contrast": b["contrast"]})
    assert len(BL.harmless_train(shared_data, 20)) == 20
