import pytest

from r1probe.data import benchmarks as B
from r1probe.errors import DataError
from r1probe.eval.benches import BENCHES, parse_benches, select


def test_counts_and_golds(shared_data):
    sb = B.load_safetybench_zh(shared_data)
    assert len(sb) == 2100 and all(it.gold in "ABCD"[:len(it.options)] for it in sb)
    assert "(A)" in sb[0].text
    g = B.load_gsm8k(shared_data)
    assert len(g) == 1319 and g[0].gold == "18" and "####" in g[0].solution
    assert len(B.load_math500(shared_data)) == 500
    c = B.load_cmath(shared_data)
    assert len(c) == 600 and c[0].gold == "9"
    assert len(B.load_xstest(shared_data)) == 250 and len(B.load_xstest(shared_data, "unsafe")) == 200
    assert len(B.load_cvalues(shared_data)) == 664
    assert len(B.load_or_bench(shared_data)) == 132


def test_every_bench_loads(shared_data):
    for name, b in BENCHES.items():
        items = b.load(str(shared_data))
        assert items and len({it.id for it in items}) == len(items), name


def test_select_is_deterministic():
    items = list(range(100))
    assert select(items, 10, 0) == select(items, 10, 0) != select(items, 10, 1)
    assert select(items, None, 0) == items and select(items, 5, None) == [0, 1, 2, 3, 4]


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        B.load_gsm8k(tmp_path)
    with pytest.raises(Exception, match="unknown benchmark"):
        parse_benches("gsm8k,nope")


def test_cvalues_report_bench_is_the_held_out_borderline_split(shared_data):
    from r1probe.data.borderline import borderline_splits
    from r1probe.eval.benches import get_bench

    items = get_bench("cvalues-report").load(str(shared_data))
    splits = borderline_splits(shared_data, english_contrast=False)
    assert len(items) == 200 and {it.id for it in items} == {it.id for it in splits["report"]}
    assert not {it.text for it in items} & {it.text for it in splits["contrast"] + splits["search"]}
