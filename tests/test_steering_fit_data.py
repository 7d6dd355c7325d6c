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
