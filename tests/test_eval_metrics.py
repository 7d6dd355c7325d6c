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
