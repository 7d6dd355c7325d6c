"""Separability measurement: the maths on planted data, the dev-part classes, the command on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from r1probe.analysis import separability as S


def _planted(n=40, d=16, shift=6.0, seed=0):
    """must_refuse and borderline differ along e0; the refusal direction (must_refuse − ordinary) is e1."""
    g = np.random.default_rng(seed)
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    X = {"must_refuse": g.normal(size=(n, d)) + shift * e0 + shift * e1,
         "borderline": g.normal(size=(n, d)) - shift * e0 + shift * e1,
         "ordinary": g.normal(size=(n, d)) + shift * e0}
    folds = {c: S.fold_ids(n, 5, i) for i, c in enumerate(X)}
    return X, folds


def test_auroc_matches_sklearn_and_handles_ties():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(1)
    p, q = g.normal(1, 1, 30).round(1), g.normal(0, 1, 25).round(1)
    y = np.r_[np.ones(30), np.zeros(25)]
    assert S.auroc(p, q) == pytest.approx(roc_auc_score(y, np.r_[p, q]))
    assert S.auroc([1, 1], [1, 1]) == 0.5
    assert np.isnan(S.auroc([], [1.0]))


def test_bootstrap_interval_contains_estimate_and_is_degenerate_when_separated():
    g = np.random.default_rng(2)
    p, q = g.normal(0.5, 1, 50), g.normal(0, 1, 50)
    lo, hi = S.bootstrap_auroc(p, q, B=500, seed=0)
    assert lo < S.auroc(p, q) < hi
    assert S.bootstrap_auroc(p + 100, q, B=200) == (1.0, 1.0)
    assert all(np.isnan(S.bootstrap_auroc(p, q, B=0)))


def test_fold_ids_balanced_and_seeded():
    f = S.fold_ids(23, 5, 3)
    assert sorted(np.bincount(f).tolist()) == [4, 4, 5, 5, 5]
    assert (f == S.fold_ids(23, 5, 3)).all() and not (f == S.fold_ids(23, 5, 4)).all()


def test_planted_separable_pairs_score_one_and_refusal_direction_misses_borderline():
    X, folds = _planted()
    src = {"borderline": ["cvalues"] * 30 + ["xstest-safe"] * 10}
    out = S.cell_separability(X, folds, sources=src, B=200)
    hb, ho = out["must_refuse_vs_borderline"], out["must_refuse_vs_ordinary"]
    assert hb["ok"] and hb["probe_auroc"] > 0.99 and hb["probe_ci"][0] > 0.95
    assert ho["probe_auroc"] > 0.99 and ho["refusal_auroc"] > 0.99
    # harmful and borderline share the refusal component: the refusal direction barely separates them
    assert 0.3 < hb["refusal_auroc"] < 0.8
    assert abs(hb["cos_meandiff_refusal"]) < 0.5
    assert set(hb["by_source"]) == {"borderline:cvalues", "borderline:xstest-safe"}
    assert hb["by_source"]["borderline:xstest-safe"]["n"] == 10


def test_shuffled_labels_score_about_half():
    X, _ = _planted(n=100, d=8)
    pool = np.random.default_rng(5).permutation(np.concatenate(list(X.values())))
    X = {c: pool[100 * i: 100 * (i + 1)] for i, c in enumerate(X)}
    folds = {c: S.fold_ids(100, 5, i) for i, c in enumerate(X)}
    out = S.cell_separability(X, folds, B=200)
    for cell in out.values():
        assert abs(cell["probe_auroc"] - 0.5) < 0.15
        assert cell["probe_ci"][0] < 0.6 and cell["probe_ci"][1] > 0.4


def test_degenerate_cell_is_recorded_not_raised():
    n, d = 20, 8
    X = {c: np.ones((n, d)) for c in S.CLASSES}
    folds = {c: S.fold_ids(n, 5, 0) for c in X}
    out = S.cell_separability(X, folds, B=10)
    assert all(not v["ok"] and "refusal direction" in v["error"] for v in out.values())


def test_measure_and_summary_and_section(tmp_path):
    X, _ = _planted(n=30, d=8)
    states = {c: np.stack([v, v * 0.1 + 0.01 * np.random.default_rng(0).normal(size=v.shape)], 1)[:, :, None, :]
              for c, v in X.items()}
    rows = S.measure(states, [0, 1], [-1], folds=3, bootstrap=50)
    assert len(rows) == 3 * 2
    summ = S.summarize(rows)
    assert summ["must_refuse_vs_borderline"]["ok"]
    res = {"kind": "separability", "model": "planted", "settings": {
        "site": "resid_pre", "layers": [0, 1], "positions": [-1], "folds": 3, "C": 0.1, "level": 0.95,
        "bootstrap": 50, "refusal_direction": list(S.REFUSAL), "pairs": [list(p) for p in S.PAIRS]},
        "classes": {c: {"n": 30, "sources": {c: 30}} for c in S.CLASSES}, "summary": summ, "cells": rows}
    (tmp_path / S.RESULT).write_text(json.dumps(S._clean(res)))
    S.draw_separability(S._clean(res), tmp_path / S.FIGURE)
    md = S.separability_section(tmp_path, rel_to=tmp_path)
    assert "must refuse vs borderline" in md.replace("_", " ") and "![separability](separability_auroc.png)" in md


def test_load_result_errors(tmp_path):
    with pytest.raises(S.SeparabilityError, match="no separability result"):
        S.load_result(tmp_path)
    (tmp_path / S.RESULT).write_text("{}")
    with pytest.raises(S.SeparabilityError, match="not a separability result"):
        S.load_result(tmp_path)


def test_classes_are_dev_parts_only(shared_data):
    from r1probe.data.partitions import part_of

    cls = S.separability_classes(40, data_root=shared_data)
    assert [len(v) for v in cls.values()] == [40, 40, 40]
    for it in cls["borderline"]:
        set_name = "cvalues" if it.source == "cvalues" else "xstest-safe"
        assert part_of(set_name, it.id, root=shared_data) == "dev"
    for c, name in (("must_refuse", "zh-harmful"), ("ordinary", "zh-harmless")):
        assert all(part_of(name, it.id) == "dev" for it in cls[c])
    texts = [it.text.strip() for v in cls.values() for it in v]
    assert len(texts) == len(set(texts))
    with pytest.raises(S.SeparabilityError, match="holds only"):
        S.separability_classes(100000, data_root=shared_data)


def _cli(argv, capsys):
    from r1probe.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


def test_command_on_tiny_model(tiny_qwen2, shared_data, tmp_path, capsys):
    from r1probe.cli import main
    from r1probe.data.partitions import load_tuning_reads

    out = tmp_path / "sep"
    main(["probe", "separability", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu",
          "--n", "12", "--folds", "3", "--positions", "-1,-2", "--bootstrap", "50", "--data-root", str(shared_data),
          "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert "must_refuse_vs_borderline" in text and "wrote" in text
    res = json.loads((out / S.RESULT).read_text())
    assert res["settings"]["layers"] == [0, 1, 2] and res["settings"]["positions"] == [-1, -2]
    assert len(res["cells"]) == 3 * 2 * 3
    assert (out / "separability_auroc.png").exists() and (out / "separability_auroc.pdf").exists()
    reads = load_tuning_reads(out)
    assert "chisafety-refusal" not in reads and sum(map(len, reads.values())) == 36
    assert "Separability" in S.separability_section(out)


@pytest.mark.parametrize("args, msg", [
    (["--positions", "1"], "negative offsets"),
    (["--positions", "-1", "--n", "3"], "--n 3"),
    (["--folds", "1"], "--folds 1"),
    (["--site", "nope"], "--site 'nope'"),
    (["--layers", "7"], "--layers: layer 7"),
])
def test_command_bad_input_one_line_exit_2(tiny_qwen2, shared_data, tmp_path, capsys, args, msg):
    out = tmp_path / "sep"
    code, cap = _cli(["probe", "separability", "--model", str(tiny_qwen2), "--dtype", "float32", "--n", "12",
                      "--folds", "3", "--data-root", str(shared_data), "--out", str(out), *args], capsys)
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_real_model_few_layers(real_lm, shared_data, tmp_path):
    res = S.run_separability(real_lm, tmp_path, n=16, layers=[4, 12], positions=[-1], folds=4, bootstrap=200,
                             data_root=shared_data, figure=False)
    ho = [r for r in res["cells"] if r["pair"] == "must_refuse_vs_ordinary" and r["layer"] == 12][0]
    assert ho["ok"] and ho["probe_auroc"] > 0.8 and ho["refusal_auroc"] > 0.8
    assert all(-1 <= r["cos_probe_refusal"] <= 1 for r in res["cells"] if r["ok"])
