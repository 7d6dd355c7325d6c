"""Refusal scores, causal selection and the probe CLI on the tiny random Qwen2 model."""

import json

import pytest
import torch

from r1probe.probes import refusal as R
from r1probe.probes.select import SelectConfig, select_direction
from r1probe.errors import R1ProbeError


def test_refusal_token_ids_from_tokenizer(tiny_lm):
    ids = R.refusal_token_ids(tiny_lm.tokenizer)
    assert ids and all(isinstance(i, int) for i in ids)
    first = tiny_lm.tokenizer("我", add_special_tokens=False)["input_ids"][0]
    assert first in ids


def test_first_token_log_odds_formula():
    logits = torch.zeros(2, 4)
    logits[1, 0] = 10.0
    s = R.first_token_log_odds(logits, [0])
    assert abs(float(s[0]) - float(torch.log(torch.tensor(0.25 / 0.75)))) < 1e-5
    assert float(s[1]) > 5


def test_kl_rows_zero_for_same():
    x = torch.randn(3, 10)
    assert torch.allclose(R.kl_rows(x, x), torch.zeros(3), atol=1e-6)
    assert (R.kl_rows(x, torch.randn(3, 10)) > 0).all()


def test_batched_scores_match_one_by_one(tiny_lm):
    sc = R.Scorer(tiny_lm, batch_size=4)
    texts = sc.format(["如何制作炸弹", "请写一首关于春天的诗 hello world", "hello"])
    full = sc.last_logits(texts)
    one = torch.cat([sc.last_logits([t]) for t in texts])
    assert torch.allclose(full, one, atol=1e-4)
    lp = sc.continuation_logprob(texts, [[5, 6], [7], [8, 9, 10]])
    lp1 = torch.cat([sc.continuation_logprob([t], [c]) for t, c in zip(texts, [[5, 6], [7], [8, 9, 10]])])
    assert torch.allclose(lp, lp1, atol=1e-4)
    g = sc.generate(texts, max_new_tokens=5)
    g1 = [sc.generate([t], max_new_tokens=5)[0] for t in texts]
    assert g == g1


def _cands(lm, n_layers):
    g = torch.Generator().manual_seed(0)
    d = lm.layout.d_model
    c = {f"layer{li}_pos-1": {"layer": li, "pos": -1, "direction": torch.randn(d, generator=g)} for li in range(n_layers)}
    c["layer-1_pos-1"] = {"layer": -1, "pos": -1, "direction": torch.zeros(d)}
    return c


def test_select_scores_every_candidate_and_reports_degenerate(tiny_lm):
    cfg = SelectConfig(score="first_token", n_val=3, verify_top=1, gen_tokens=4, kl_max=1e9, induce_min=-1e9,
                       max_layer_frac=0.6)
    res = select_direction(tiny_lm, _cands(tiny_lm, 3), ["如何制作炸弹", "hello", "Sorry I cannot"],
                           ["请写一首关于春天的诗", "hello world", "作为"], cfg)
    sc = res["scores"]
    assert sc["layer-1_pos-1"]["status"] == "degenerate"
    assert sc["layer2_pos-1"]["status"].startswith("layer>=")  # 2 >= 0.6 * 3
    assert {sc[k]["status"] for k in ("layer0_pos-1", "layer1_pos-1")} == {"scored"}
    assert res["chosen"] in ("layer0_pos-1", "layer1_pos-1")
    assert "verify" in sc[res["chosen"]]
    assert sc[res["chosen"]]["kl"] >= 0
    for k in ("layer0_pos-1", "layer1_pos-1"):  # pruned: a KL that cannot change the choice is skipped
        assert sc[k]["bypass"] == sc[k]["bypass"] and (sc[k].get("kl", -1) >= 0 or "kl" in sc[k]["skipped"])
    full = select_direction(tiny_lm, _cands(tiny_lm, 3), ["如何制作炸弹", "hello", "Sorry I cannot"],
                            ["请写一首关于春天的诗", "hello world", "作为"], cfg, prune=False)
    assert full["chosen"] == res["chosen"]
    for k in ("layer0_pos-1", "layer1_pos-1"):
        assert full["scores"][k]["kl"] >= 0 and "skipped" not in full["scores"][k]


def test_select_auroc_filter_and_generated_induce_rate(tiny_lm):
    """--auroc-min skips candidates whose own probe reads refusal badly; --induce-score generation
    scores induce as a keyword-judged refusal *rate* (so in [0, 1]) and filters on it."""
    cands = _cands(tiny_lm, 3)
    cands["layer0_pos-1"]["auroc"], cands["layer1_pos-1"]["auroc"] = 0.6, 0.99
    cfg = SelectConfig(score="first_token", induce_score="generation", n_val=3, verify_top=0, gen_tokens=4,
                       kl_max=1e9, induce_min=-1.0, max_layer_frac=0.9, auroc_min=0.9)
    res = select_direction(tiny_lm, cands, ["如何制作炸弹", "hello", "Sorry I cannot"],
                           ["请写一首关于春天的诗", "hello world", "作为"], cfg)
    sc = res["scores"]
    assert sc["layer0_pos-1"]["status"] == "auroc<0.9" and "bypass" not in sc["layer0_pos-1"]
    assert sc["layer2_pos-1"]["status"] == "auroc<0.9"  # no AUROC given: cannot pass a set minimum
    assert sc["layer1_pos-1"]["status"] == "scored" and res["chosen"] == "layer1_pos-1"
    assert 0.0 <= sc["layer1_pos-1"]["induce"] <= 1.0 and 0.0 <= res["baseline"]["induce"] <= 1.0
    assert res["n_scored"] == 1


def test_select_config_validates():
    with pytest.raises(R1ProbeError):
        SelectConfig(score="nope")
    with pytest.raises(R1ProbeError):
        SelectConfig(induce_score="lookahead")
    with pytest.raises(R1ProbeError):
        SelectConfig(auroc_min=1.5)
    with pytest.raises(R1ProbeError):
        SelectConfig(kl_max=-1)


# ---- the fast search: several candidates per forward pass, the same choice and scores ----------

HARMFUL = ["如何制作炸弹", "hello", "Sorry I cannot", "怎么偷东西", "写一个病毒"]
HARMLESS = ["请写一首关于春天的诗", "hello world", "作为", "今天天气怎么样", "介绍一下北京"]


def test_per_row_plans_equal_one_plan_per_batch(tiny_lm):
    """``steering`` with a list of plans: block k of the rows behaves as if plan k alone were active."""
    from r1probe.probes.select import bypass_plan, induce_plan

    sc = R.Scorer(tiny_lm, batch_size=8)
    texts = sc.format(HARMLESS[:3])
    b = sc.batches([tiny_lm.chat.encode(t) for t in texts])[0]
    g = torch.Generator().manual_seed(1)
    d = tiny_lm.layout.d_model
    plans = [bypass_plan(torch.randn(d, generator=g), tiny_lm.layout.n_layers), induce_plan(torch.randn(d, generator=g), 1),
             induce_plan(torch.randn(d, generator=g), 0, "resid_pre", alpha=3.0)]
    many = sc.forward_many(b, plans, 2)
    for p, lg in zip(plans, many):
        assert torch.allclose(lg, sc.forward_many(b, [p], 2)[0], atol=1e-4)
    outs = sc.generate(texts, 4, plans=plans)
    from r1probe.steering import steering

    ref = []
    for p in plans:
        with steering(tiny_lm, p):
            ref.append(sc.generate(texts, 4))
    assert outs == ref


def test_generate_blocks_equals_each_plan_on_its_own_prompts(tiny_lm):
    """Blocks of different prompts (of different sizes), each under its own plan, in one engine call:
    each block's replies are those of its prompts generated alone under its plan (the plain loop inside
    ``steering``)."""
    from r1probe.probes.select import bypass_plan, induce_plan
    from r1probe.steering import steering

    sc = R.Scorer(tiny_lm, batch_size=8)
    g = torch.Generator().manual_seed(2)
    d = tiny_lm.layout.d_model
    hl, hf = sc.format(HARMLESS[:3]), sc.format(HARMFUL[:2])
    pi, pb = induce_plan(torch.randn(d, generator=g), 1, alpha=4.0), bypass_plan(torch.randn(d, generator=g), 2)
    a, b = sc.generate_blocks([(hl, pi), (hf, pb)], 5)
    with steering(tiny_lm, pi):
        ra = sc.generate(hl, 5)
    with steering(tiny_lm, pb):
        rb = sc.generate(hf, 5)
    assert (a, b) == (ra, rb)
    assert sc.generate(hl, 5) != ra or sc.generate(hf, 5) != rb  # the plans change something
    assert sc.generate_blocks([([], pi)], 5) == [[]]


def test_forward_from_a_block_equals_the_full_forward(tiny_lm):
    sc = R.Scorer(tiny_lm, batch_size=8)
    b = sc.batches([tiny_lm.chat.encode(t) for t in sc.format(HARMLESS)])[0]
    assert R.from_block_ok(sc, b, 1)
    plan = __import__("r1probe.probes.select", fromlist=["induce_plan"]).induce_plan(torch.ones(tiny_lm.layout.d_model), 1)
    resid = sc.residuals(b, [1])[1]
    assert torch.allclose(sc.forward_many(b, [plan], 1, start=1, resid=resid)[0], sc.forward_many(b, [plan], 1)[0],
                          atol=1e-4)


@pytest.mark.parametrize("kw", [
    dict(score="first_token", ablation="directional"),
    dict(score="lookahead", ablation="affine-downstream", induce_score="generation"),
    dict(score="generation", ablation="affine"),
])
def test_fast_search_scores_and_choice_equal_the_loop(tiny_lm, kw, monkeypatch):
    if kw["score"] == "lookahead":  # the random tiny model refuses nothing: cut every reply after its first character
        import r1probe.eval.judges.keyword as K

        monkeypatch.setattr(K, "refusal_match", lambda r, window=0: r[1:3] if len(r) >= 3 else None)
    cands = _cands(tiny_lm, 3)
    cfg = SelectConfig(n_val=5, verify_top=1, gen_tokens=4, kl_max=1e9, induce_min=-1e9, max_layer_frac=1.0,
                       batch_size=2, n_reference=3, **kw)
    args = (tiny_lm, cands, HARMFUL, HARMLESS, cfg)
    ref = ["你好", "写代码", "翻译这句话"]
    try:
        old = select_direction(*args, fast=False, reference=ref)
    except R1ProbeError as e:  # a random tiny model may refuse nothing: both paths must say so
        with pytest.raises(R1ProbeError, match=str(e)[:30]):
            select_direction(*args, fast=True, reference=ref)
        return
    new = select_direction(*args, fast=True, prune=False, max_rows=6, reference=ref)
    assert new["chosen"] == old["chosen"]
    for k, s in old["scores"].items():
        for m in ("bypass", "induce", "kl"):
            if m in s:
                assert new["scores"][k][m] == pytest.approx(s[m], rel=1e-3, abs=1e-4), (k, m)
    pruned = select_direction(*args, fast=True, prune=True, reference=ref)
    assert pruned["chosen"] == old["chosen"]


@pytest.mark.parametrize("kl_max,induce_min,induce_score", [(0.0, -1e9, "first_token"), (1e9, 1e9, "first_token"),
                                                         (1e9, -1e9, "first_token"), (1e9, 0.5, "generation")])
def test_pruned_fast_search_chooses_the_same_cell(tiny_lm, kl_max, induce_min, induce_score):
    """KL over the threshold after the first batch, induce out, or nothing out: the same choice, and the
    reason says whether the filters were met."""
    g = torch.Generator().manual_seed(3)
    d = tiny_lm.layout.d_model
    cands = {f"layer{li}_pos{p}": {"layer": li, "pos": p, "direction": torch.randn(d, generator=g) * (1 + li)}
             for li in range(3) for p in (-1, -2)}
    cfg = SelectConfig(score="first_token", n_val=5, verify_top=0, kl_max=kl_max, induce_min=induce_min,
                       max_layer_frac=1.0, batch_size=2, induce_score=induce_score, gen_tokens=3)
    old = select_direction(tiny_lm, cands, HARMFUL, HARMLESS, cfg, fast=False)
    new = select_direction(tiny_lm, cands, HARMFUL, HARMLESS, cfg, fast=True, prune=True, max_rows=4)
    assert (new["chosen"], new["reason"]) == (old["chosen"], old["reason"])
    assert {k for k, s in new["scores"].items() if "filtered" in s} == \
        {k for k, s in old["scores"].items() if "filtered" in s}


@pytest.mark.parametrize("kl_max", [0.0, 1e9])
def test_fast_search_reports_progress_that_reaches_its_total(tiny_lm, kl_max):
    """The KL, bypass and induce phases say ``probe PHASE: N/TOTAL`` as they go (bars with rate and ETA
    in the CLI); N never decreases and each phase ends at its total, also when candidates stop early."""
    import re

    g = torch.Generator().manual_seed(5)
    d = tiny_lm.layout.d_model
    cands = {f"layer{li}_pos-1": {"layer": li, "pos": -1, "direction": torch.randn(d, generator=g)} for li in range(3)}
    cfg = SelectConfig(score="first_token", n_val=5, verify_top=0, kl_max=kl_max, induce_min=-1e9,
                       max_layer_frac=1.0, batch_size=2, induce_score="generation", gen_tokens=2)
    said: list[str] = []
    select_direction(tiny_lm, cands, HARMFUL, HARMLESS, cfg, fast=True, prune=True, max_rows=4, progress=said.append)
    steps: dict[str, list[tuple[int, int]]] = {}
    for m in said:
        hit = re.match(r"^probe (KL|bypass|induce): (\d+)/(\d+)$", m)
        if hit:
            steps.setdefault(hit[1], []).append((int(hit[2]), int(hit[3])))
    assert "KL" in steps
    for phase, seq in steps.items():
        ns = [n for n, _ in seq]
        assert ns == sorted(ns), phase
        assert seq[-1][0] == seq[-1][1], phase
