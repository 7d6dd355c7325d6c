import pytest

from r1probe.eval import metrics as M


def test_chisafety_rates():
    recs = [{"label": lab} for lab in [0, 1, 2, 3, 3, None]]
    m = M.chisafety_metrics(True)
    assert m["HR"](recs) == 0.2 and m["RR-1"](recs) == 0.6 and m["RR-2"](recs) == 0.4
    assert "HR" not in M.chisafety_metrics(False)
    s = M.summarize(recs, m, B=200)
    assert s["n"] == 6 and s["n_unparsed"] == 1 and s["n_judged"] == 5
    lo, hi = s["ci95"]["RR-1"]
    assert 0 <= lo <= 0.6 <= hi <= 1


def test_bootstrap_degenerate_and_empty():
    recs = [{"correct": True}] * 10
    assert M.bootstrap_ci(recs, M.ACCURACY["accuracy"]) == [1.0, 1.0]
    assert M.bootstrap_ci([], M.ACCURACY["accuracy"]) is None


def test_paired_bootstrap_uses_shared_ids():
    a = {str(i): {"correct": i % 2 == 0} for i in range(20)}
    b = {str(i): {"correct": True} for i in range(10, 30)}
    r = M.paired_bootstrap(a, b, M.ACCURACY["accuracy"], B=200)
    assert r["n"] == 10 and abs(r["diff"] - 0.5) < 1e-9
    assert r["ci95"][0] <= 0.5 <= r["ci95"][1]


def test_unterminated_rate():
    assert M.unterminated_rate([{"terminated": True}, {"terminated": False}]) == 0.5
    assert M.unterminated_rate([{"nll": 1.0}]) is None


def test_wilson_known_values():
    assert M.wilson_interval(0, 10) == pytest.approx([0.0, 0.27753], abs=1e-5)
    assert M.wilson_interval(5, 10) == pytest.approx([0.23659, 0.76341], abs=1e-5)
    assert M.wilson_interval(10, 10) == pytest.approx([0.72247, 1.0], abs=1e-5)
    assert M.wilson_interval(0, 0) is None


def test_rates_get_wilson_intervals_not_points():
    s = M.summarize([{"correct": True}] * 10, M.ACCURACY)
    assert s["ci95"]["accuracy"][1] == pytest.approx(1.0) and s["ci95"]["accuracy"][0] < 0.75
    recs = [{"label": lab} for lab in [0, 1, 2, 3, 3, None]]
    assert M.summarize(recs, M.REFUSAL_RATE)["ci95"]["refusal_rate"] == pytest.approx(M.wilson_interval(3, 5))


def test_mcnemar_exact_known_values():
    assert M.mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert M.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert M.mcnemar_exact(3, 3) == 1.0 and M.mcnemar_exact(0, 0) == 1.0


def test_paired_rate_difference():
    xa = [1] * 10 + [0] * 10 + [1] * 2 + [0] * 8
    xb = [1] * 10 + [0] * 10 + [0] * 2 + [1] * 8
    r = M.paired_rate_difference(xa, xb)
    assert r["n"] == 30 and r["n10"] == 2 and r["n01"] == 8
    assert r["diff"] == pytest.approx(0.2) and r["p_mcnemar"] == pytest.approx(M.mcnemar_exact(2, 8))
    lo, hi = r["ci95"]
    assert -1 <= lo < 0.2 < hi <= 1
    # identical runs: zero difference and an interval around it, never a single point
    same = M.paired_rate_difference([1, 0] * 10, [1, 0] * 10)
    assert same["diff"] == 0 and same["ci95"][0] < 0 < same["ci95"][1] and same["p_mcnemar"] == 1.0


def test_newcombe_paired_interval_hand_computed():
    import math

    n11, n10, n01, n00 = 3, 1, 4, 2
    n = 10
    pa, pb = 0.4, 0.7
    la, ua = M.wilson_interval(4, n)
    lb, ub = M.wilson_interval(7, n)
    phi = (n11 * n00 - n10 * n01 - n / 2) / math.sqrt(4 * 6 * 7 * 3)  # A = 2 > 0: A - n/2 < 0 -> 0
    phi = max(phi, 0.0)
    d = math.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2)
    e = math.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2)
    assert M.newcombe_paired_interval(n11, n10, n01, n00) == pytest.approx([0.3 - d, 0.3 + e])


def test_paired_compare_picks_the_test():
    a = {str(i): {"correct": i % 2 == 0, "nll": 1.0 + i / 10} for i in range(20)}
    b = {str(i): {"correct": True, "nll": 1.1 + i / 10} for i in range(20)}
    r = M.paired_compare(a, b, M.ACCURACY["accuracy"])
    assert r["test"] == "mcnemar-exact" and r["n01"] == 10 and r["n10"] == 0
    r = M.paired_compare(a, b, M.MEAN_NLL["mean_nll"], B=200)
    assert r["test"] == "paired-bootstrap" and r["diff"] == pytest.approx(0.1)


def test_tost_paired_known_values():
    from scipy.stats import t as tdist

    xa = [1, 0, 1, 1, 0, 1, 0, 1, 1, 0] * 10
    xb = [1, 0, 1, 1, 0, 1, 1, 1, 0, 0] * 10  # one gained, one lost per ten: mean difference 0
    r = M.tost_paired(xa, xb, margin=0.03)
    d = [y - x for x, y in zip(xa, xb)]
    se = (sum(v * v for v in d) / 99) ** 0.5 / 10
    assert r["diff"] == 0 and r["p"] == pytest.approx(tdist.sf(0.03 / se, 99))
    assert r["equivalent"] is False  # 100 items cannot show equivalence within 3 points here
    big = M.tost_paired([1, 0] * 2000, [1, 0] * 2000, margin=0.03)
    assert big["equivalent"] is True and big["p"] == 0.0
    wide = M.tost_paired(xa * 20, xb * 20, margin=0.03)
    assert wide["equivalent"] is True and -0.03 < wide["ci90"][0] < 0 < wide["ci90"][1] < 0.03


def test_nll_ratio():
    a = {str(i): {"nll": 1.0} for i in range(10)}
    b = {str(i): {"nll": 1.1} for i in range(10)}
    r = M.nll_ratio(a, b, B=100)
    assert r["ratio"] == pytest.approx(1.1) and r["ci95"] == pytest.approx([1.1, 1.1])
