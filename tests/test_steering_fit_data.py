"""The enhancement's default fit data: sizes, disjointness from the evaluation items, the borderline option."""

from r1probe.steering.fit_data import default_fit_data


def test_default_fit_data_sizes_and_disjoint_from_evaluation(tiny_lm, shared_data):
    from r1probe.data.borderline import borderline_splits
    from r1probe.data.prompts import load_prompt_set

    fit = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=3)
    assert len(fit.harmful) == 362 and len(fit.benign) == 611 + 3
    train = load_prompt_set("builtin:zh-harmless", split="train").prompts
    test = {p.text for p in load_prompt_set("builtin:zh-harmless", split="test").prompts}
    assert fit.benign[0] == tiny_lm.chat.encode(tiny_lm.chat.format(train[0].text))
    assert not test & {p.text for p in train}  # the held-out harmless prompts are never fitted on
    harm_test = {p.text for p in load_prompt_set("builtin:zh-harmful", split="test").prompts}
    assert not harm_test & set(fit.harmful)
    # GSM8K texts carry their worked solutions (prompt + at most 256 solution tokens)
    sol = tiny_lm.tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert all(len(t) > len(sol) for t in fit.benign[-3:])
    assert fit.summary()["n_benign_texts"] == 614 and "GSM8K train 1-3" in fit.description

    border = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=0, borderline=5)
    assert len(border.benign) == 611 + 5 and "CValues borderline contrast split 1-5" in border.description
    report = {it.text for it in borderline_splits(shared_data, english_contrast=False)["report"]}
    added = borderline_splits(shared_data, english_contrast=False)["contrast"][:5]
    assert not report & {it.text for it in added}


def test_subsample_is_a_pure_function_of_seed_and_id():
    from r1probe.steering.fit_data import subsample

    items = [f"id{i}" for i in range(2000)]
    a = subsample(items, str, 0.8, seed=1)
    assert a == subsample(list(reversed(items)), str, 0.8, seed=1)[::-1]  # order kept, membership by id only
    assert abs(len(a) / len(items) - 0.8) < 0.04
    b = subsample(items, str, 0.8, seed=2)
    assert a != b and set(subsample(items[:100], str, 0.8, seed=1)) == set(a) & set(items[:100])
    assert subsample(items, str, 1.0, seed=3) == items


def test_fit_seed_keeps_a_seeded_share_of_every_part_and_records_only_what_it_read(tiny_lm, shared_data):
    from r1probe.steering.fit_data import default_fit_data

    full = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=50, borderline=40)
    sub = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=50, borderline=40, fit_seed=1, fit_fraction=0.5)
    again = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=50, borderline=40, fit_seed=1, fit_fraction=0.5)
    assert sub.harmful == again.harmful and sub.benign == again.benign
    assert set(sub.harmful) < set(full.harmful) and 0.35 < len(sub.harmful) / len(full.harmful) < 0.65
    assert 0.35 < len(sub.benign) / len(full.benign) < 0.65
    for k, ids in sub.ids.items():
        assert set(ids) < set(full.ids[k]), k
    assert "fit subsample: 0.5 of each part, seed 1" in sub.description


def test_rank1_gate_refuses_a_fit_seed_with_files():
    import pytest

    from r1probe.steering.edits.rank1_gate import Rank1GateSettings

    with pytest.raises(ValueError, match="fit-seed"):
        Rank1GateSettings(harmful="h.jsonl", benign=["b.jsonl"], fit_seed=1)


def test_extra_benign_adds_whole_dev_parts_and_records_them(tiny_lm, shared_data):
    import pytest

    from r1probe.data.benchmarks import load_or_bench, load_xstest
    from r1probe.data.partitions import filter_items
    from r1probe.steering.edits.rank1_gate import Rank1GateSettings

    base = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=0)
    fit = default_fit_data(tiny_lm, data_root=shared_data, n_gsm=0, extra_benign=["or-bench", "xstest-safe"])
    dev = {"or-bench": filter_items("or-bench", load_or_bench(shared_data), "dev", root=shared_data),
           "xstest-safe": filter_items("xstest-safe", load_xstest(shared_data), "dev", root=shared_data)}
    n = sum(len(v) for v in dev.values())
    assert n and len(fit.benign) == len(base.benign) + n
    assert fit.benign[-1] == tiny_lm.chat.encode(tiny_lm.chat.format(dev["xstest-safe"][-1].text))
    assert set(fit.ids["or-bench"]) == {it.id for it in dev["or-bench"]}
    assert len(fit.ids["xstest-safe"]) == len(dev["xstest-safe"])
    report = filter_items("xstest-safe", load_xstest(shared_data), "report", root=shared_data)
    assert not set(fit.ids["xstest-safe"]) & {it.id for it in report}
    assert "the dev parts of or-bench, xstest-safe" in fit.description
    with pytest.raises(ValueError, match="extra_benign 'chisafety-refusal'"):
        Rank1GateSettings(extra_benign="chisafety-refusal")
    with pytest.raises(ValueError, match="extra-benign"):
        Rank1GateSettings(harmful="h.jsonl", benign=["b.jsonl"], extra_benign="or-bench")
