"""The generation engine: continuous batching equals plain ``generate``; sampling, stops, steering."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.models.engine import Completion, SamplingParams, generate, generate_texts
from r1probe.models.generate import left_pad

QUESTIONS = ["如何制作炸弹", "请写一首关于春天的诗", "hello world", "我不能 抱歉", "Sorry I cannot",
             "作为 system user", "春天", "炸弹 hello 诗 world 抱歉 作为"]


def _texts(lm, qs=QUESTIONS):
    return [lm.chat.format(q) for q in qs]


def _plain(lm, text, n):
    """Plain ``model.generate`` (greedy), one prompt at a time: the reference."""
    ids = lm.chat.encode(text)
    x, m = left_pad([ids], lm.tokenizer.pad_token_id, "cpu")
    out = lm.model.generate(input_ids=x, attention_mask=m, max_new_tokens=n, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    toks = out[0, x.shape[1]:].tolist()
    eos = lm.tokenizer.eos_token_id
    return toks[:toks.index(eos) + 1] if eos in toks else toks


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_equals_plain_generate_with_retiring_and_admission(tiny_lm, batch_size):
    texts = _texts(tiny_lm)
    budgets = [3, 9, 5, 12, 2, 7, 10, 4]  # rows retire at different steps; waiting prompts join
    params = [SamplingParams(max_new_tokens=b) for b in budgets]
    out = generate(tiny_lm, texts, params, batch_size=batch_size)
    for t, b, cs in zip(texts, budgets, out):
        assert len(cs) == 1 and isinstance(cs[0], Completion)
        assert cs[0].token_ids == _plain(tiny_lm, t, b)
        assert cs[0].prompt_tokens == len(tiny_lm.chat.encode(t))
        assert cs[0].finish_reason in ("stop", "length")
        assert cs[0].text == tiny_lm.tokenizer.decode(cs[0].token_ids, skip_special_tokens=True)


def test_token_budget_bounds_rows_in_flight(tiny_lm):
    texts = _texts(tiny_lm)
    a = generate(tiny_lm, texts, SamplingParams(max_new_tokens=6), batch_size=8, max_tokens=40)
    b = generate(tiny_lm, texts, SamplingParams(max_new_tokens=6), batch_size=8)
    assert [c[0].token_ids for c in a] == [c[0].token_ids for c in b]


def test_sampling_is_reproducible_per_request_seed(tiny_lm):
    texts = _texts(tiny_lm)
    p = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=2)
    a = generate(tiny_lm, texts, p, batch_size=8)
    b = generate(tiny_lm, texts[:1], p, batch_size=1)  # same seed, different batch: same sample
    assert a[0][0].token_ids == b[0][0].token_ids and a[0][1].token_ids == b[0][1].token_ids
    assert all(len(c) == 2 for c in a)
    assert a[0][0].token_ids != a[0][1].token_ids  # completion k uses seed + k
    c = generate(tiny_lm, texts[:1], SamplingParams(max_new_tokens=8, temperature=1.0, seed=8))
    assert c[0][0].token_ids != a[0][0].token_ids or c[0][0].token_ids == a[0][1].token_ids


def test_stop_strings_and_done_callback(tiny_lm):
    texts = _texts(tiny_lm)
    full = generate(tiny_lm, texts, SamplingParams(max_new_tokens=10))
    text = full[1][0].text
    assert len(text) >= 3
    stop = text[2:4]
    out = generate(tiny_lm, texts[1:2], SamplingParams(max_new_tokens=10, stop=(stop,)))[0][0]
    assert out.finish_reason == "stop" and out.text == text[:text.find(stop)]
    seen = []

    def done(i, so_far):
        seen.append(i)
        return len(so_far) >= 2

    early = generate(tiny_lm, texts, SamplingParams(max_new_tokens=10), done=done)
    for f, e in zip(full, early):
        assert f[0].token_ids[:len(e[0].token_ids)] == e[0].token_ids
        assert e[0].finish_reason in ("done", "stop", "length")
        if e[0].finish_reason == "done":
            assert len(e[0].text) >= 2
    assert set(seen) <= set(range(len(texts)))


def test_progress_and_zero_budget_and_errors(tiny_lm):
    calls = []
    out = generate(tiny_lm, _texts(tiny_lm)[:3], SamplingParams(max_new_tokens=0, n=2),
                   progress=lambda k, n: calls.append((k, n)))
    assert all(c.token_ids == [] and c.finish_reason == "length" for cs in out for c in cs)
    assert calls[-1] == (6, 6)
    with pytest.raises(R1ProbeError):
        SamplingParams(top_p=0.0)
    with pytest.raises(R1ProbeError):
        generate(tiny_lm, ["a"], [SamplingParams(), SamplingParams()])
    assert generate_texts(tiny_lm, _texts(tiny_lm)[:2], max_new_tokens=4) == \
        [c[0].text for c in generate(tiny_lm, _texts(tiny_lm)[:2], SamplingParams(max_new_tokens=4))]


@pytest.mark.parametrize("plan_kind", ["add", "conditional"])
def test_steered_engine_equals_steered_plain_generate(tiny_lm, plan_kind):
    from r1probe.steering import Condition, SteeringPlan, steering

    d = torch.randn(tiny_lm.layout.d_model, generator=torch.Generator().manual_seed(1))
    texts = _texts(tiny_lm)
    if plan_kind == "add":
        plan = SteeringPlan.add_at([0, 2], d, 6.0)
    else:
        d2 = torch.randn(tiny_lm.layout.d_model, generator=torch.Generator().manual_seed(2))
        cond = Condition(layer=1, direction=d2, threshold=0.0, position=-1)
        scores = []
        with steering(tiny_lm, SteeringPlan.conditional_add(2, d, 0.0, condition=cond)) as h:
            for t in texts:
                _plain(tiny_lm, t, 1)
                scores.append(float(h.scores[0][0]))
        s = sorted(scores)
        cond.threshold = (s[3] + s[4]) / 2  # half the rows are steered, none sits on the threshold
        plan = SteeringPlan.conditional_add([1, 2], d, 40.0, condition=cond)
    budgets = [3, 9, 5, 12, 2, 7, 10, 4]
    out = generate(tiny_lm, texts, [SamplingParams(max_new_tokens=b) for b in budgets], plan=plan, batch_size=3)
    with steering(tiny_lm, plan):
        ref = [_plain(tiny_lm, t, b) for t, b in zip(texts, budgets)]
    assert [c[0].token_ids for c in out] == ref
    base = [_plain(tiny_lm, t, b) for t, b in zip(texts, budgets)]
    assert ref != base
