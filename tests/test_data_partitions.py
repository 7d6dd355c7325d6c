"""Dev/report partitions: the hash rule, the registry, report-only CHiSafetyBench and the zh-harmless seed."""

from __future__ import annotations

import hashlib

import pytest

from r1probe.data import partitions as P
from r1probe.errors import R1ProbeError


def test_hash_rule_is_the_documented_formula():
    h = hashlib.sha256(f"{P.SALT}:xstest-safe:17".encode()).hexdigest()
    assert P.hash_unit("xstest-safe", "17") == int(h[:16], 16) / 2 ** 64
    assert P.hash_part("xstest-safe", "17", 1.0) == "dev"
    assert P.hash_part("xstest-safe", "17", 0.0) == "report"


def test_hash_sets_split_disjointly(shared_data):
    for name in ("xstest-safe", "cmath", "math500", "multijail", "polyrefuse", "or-bench"):
        dev, rep = P.partition_ids(name, "dev", root=shared_data), P.partition_ids(name, "report", root=shared_data)
        assert dev and rep and not set(dev) & set(rep), name
        assert all(P.part_of(name, i, root=shared_data) == "report" for i in rep[:20]), name
        assert all(P.part_of(name, i, root=shared_data) == "dev" for i in dev[:20]), name
    n = len(P.partition_ids("cmath", "dev", root=shared_data))
    assert 0.15 < n / 600 < 0.35  # dev fraction 0.25


def test_chisafety_is_report_only(shared_data):
    if not (shared_data / "chisafetybench").exists():
        pytest.skip("no CHiSafetyBench")
    assert P.get_set("chisafety-refusal").parts == ("report",)
    assert len(P.partition_ids("chisafety-refusal", "report")) == 462
    with pytest.raises(R1ProbeError, match="no 'dev' part"):
        P.partition_ids("chisafety-refusal", "dev")
    from r1probe.eval.benches import get_bench

    items = get_bench("chisafety-refusal").load(None)
    assert P.filter_items("chisafety-refusal", items, "dev") == []
    assert len(P.filter_items("chisafety-refusal", items, "report")) == 462


def test_gsm8k_and_cvalues_keep_their_upstream_splits(shared_data):
    from r1probe.eval.benches import get_bench

    assert all(i.startswith("gsm8k-train/") for i in P.partition_ids("gsm8k", "dev", root=shared_data))
    test = get_bench("gsm8k").load(shared_data)
    assert len(P.filter_items("gsm8k", test, "report", root=shared_data)) == len(test) == 1319
    assert P.canonical("gsm8k-nll", "gsm8k-nll/5") == ("gsm8k", "gsm8k/5")
    rep = {it.id for it in get_bench("cvalues-report").load(shared_data)}
    assert set(P.partition_ids("cvalues", "report", root=shared_data)) == rep
    assert not rep & set(P.partition_ids("cvalues", "dev", root=shared_data))


def test_builtin_sets_dev_is_train_and_val_of_the_seed():
    from r1probe.data.prompts import load_prompt_set

    for seed in (0, 1):
        rep = set(P.partition_ids("zh-harmless", "report", seed=seed))
        test = {f"zh-harmless/{p.id}" for p in load_prompt_set("builtin:zh-harmless", split="test", seed=seed)}
        assert rep == test
        assert not rep & set(P.partition_ids("zh-harmless", "dev", seed=seed))


def test_zh_harmless_bench_uses_the_configured_seed():
    """With seed 1 the rank1-gate fit (train split of seed 1) and the bench share no prompt."""
    from r1probe.data.prompts import load_prompt_set
    from r1probe.eval.benches import get_bench

    b = get_bench("zh-harmless")
    fit = {p.text for p in load_prompt_set("builtin:zh-harmless", split="train", seed=1)}
    bench1 = b.load(None, seed=1)
    assert bench1 and not fit & {it.text for it in bench1}
    assert {it.id for it in bench1} != {it.id for it in b.load(None, seed=0)}


def test_overlap_names_the_items():
    reads = P.reads_of(["cvalues/12", "gsm8k-train/3", "zh-harmless/belle-0001"])
    assert reads["gsm8k"] == ["gsm8k-train/3"]
    assert P.overlap(reads, {"gsm8k": ["gsm8k/3"], "gsm8k-nll": ["gsm8k-nll/3"]}) == []
    assert P.overlap(reads, {"cvalues-report": ["cvalues/12", "cvalues/13"]}) == ["cvalues/12"]
    assert P.overlap_line([]) == "tuning/report overlap: 0 items"
    with pytest.raises(P.TuningOverlapError, match="cvalues/12"):
        P.check_overlap(reads, {"cvalues": ["cvalues/12"]})


def test_tuning_reads_round_trip(tmp_path):
    P.write_tuning_reads(tmp_path, {"cvalues": ["cvalues/2", "cvalues/1"]})
    assert P.load_tuning_reads(tmp_path) == {"cvalues": ["cvalues/1", "cvalues/2"]}
    assert P.load_tuning_reads(tmp_path / P.TUNING_READS) == {"cvalues": ["cvalues/1", "cvalues/2"]}


def test_edit_search_reads_dev_data_only(shared_data):
    from r1probe.tuning.data import load_search_data
    from r1probe.tuning.settings import EditSearchSettings

    if not (shared_data / "chisafetybench").exists():
        pytest.skip("no CHiSafetyBench")
    reads = load_search_data(EditSearchSettings(), shared_data).tuning_reads()
    assert "chisafety-refusal" not in reads and reads["polyrefuse"] and reads["zh-harmless"]
    reported = {"cvalues-report": P.partition_ids("cvalues", "report", root=shared_data),
                "xstest-safe": P.partition_ids("xstest-safe", "report", root=shared_data),
                "zh-harmless": P.partition_ids("zh-harmless", "report"),
                "gsm8k": P.partition_ids("gsm8k", "report", root=shared_data),
                "chisafety-refusal": P.partition_ids("chisafety-refusal", "report")}
    assert P.overlap(reads, reported) == []


def test_polyrefuse_test_bench_is_a_harmful_source_no_fit_reads(shared_data):
    """The unseen-source bench: PolyRefuse-zh harmful test, split by the hash rule, sharing no prompt with the
    built-in harmful set (PolyRefuse train/val + MultiJail) that every fit reads."""
    from r1probe.data.prompts import load_prompt_set
    from r1probe.eval.benches import get_bench

    b = get_bench("polyrefuse-test")
    items = b.load(shared_data)
    assert b.kind == "refusal" and len(items) == 572 and all(it.text for it in items)
    rep = P.filter_items("polyrefuse-test", items, "report", root=shared_data)
    dev = P.filter_items("polyrefuse-test", items, "dev", root=shared_data)
    assert len(rep) + len(dev) == 572 and rep and dev
    assert {it.id for it in rep} <= set(P.partition_ids("polyrefuse", "report", root=shared_data))
    assert P.canonical("polyrefuse-test", rep[0].id) == ("polyrefuse", rep[0].id)
    fit = {p.text for p in load_prompt_set("builtin:zh-harmful").prompts}
    assert not fit & {it.text for it in items}
