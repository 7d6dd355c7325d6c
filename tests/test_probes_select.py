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
    for k in ("layer0_pos-1", "layer1_pos-1"):
        assert sc[k]["kl"] >= 0


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
