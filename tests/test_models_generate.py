"""Length-sorted batching of prompts."""


def test_length_sorted_batches_with_a_token_budget():
    from r1probe.models.generate import length_sorted_batches

    lengths = [10, 300, 12, 11, 40, 9]
    assert length_sorted_batches(lengths, 4) == [[1, 4, 2, 3], [0, 5]]
    got = length_sorted_batches(lengths, 4, max_tokens=100)
    assert got == [[1], [4, 2], [3, 0, 5]]  # the long prompt alone; no batch over 100 padded tokens but it
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in got if len(b) > 1)


def test_length_sorted_batches_with_a_forward_overhead_minimises_padded_cost():
    """With ``overhead`` the cut points minimise Σ (rows · longest + overhead): checked against every
    contiguous partition of the sorted lengths; one long prompt no longer pads the short ones."""
    import itertools
    import random

    from r1probe.models.generate import length_sorted_batches

    def cost(lengths, batches, ov):
        return sum(len(b) * max(lengths[i] for i in b) + ov for b in batches)

    assert length_sorted_batches([37, 39, 40, 45, 47, 48, 89, 128], 16, 1024, overhead=64) == \
        [[7, 6], [5, 4, 3, 2, 1, 0]]
    rng = random.Random(0)
    for _ in range(30):
        n, bs, ov = rng.randint(1, 8), rng.randint(1, 5), rng.choice([1, 16, 64])
        lengths = [rng.randint(1, 120) for _ in range(n)]
        budget = rng.choice([None, 150, 400])
        got = length_sorted_batches(lengths, bs, budget, overhead=ov)
        assert sorted(i for b in got for i in b) == list(range(n))
        assert all(len(b) <= bs and (len(b) == 1 or budget is None or len(b) * max(lengths[i] for i in b) <= budget)
                   for b in got)
        order = sorted(range(n), key=lambda i: -lengths[i])
        best = float("inf")
        for cuts in itertools.product([0, 1], repeat=n - 1):
            parts, cur = [], [order[0]]
            for c, i in zip(cuts, order[1:]):
                if c:
                    parts.append(cur)
                    cur = []
                cur.append(i)
            parts.append(cur)
            if all(len(b) <= bs and (len(b) == 1 or budget is None or len(b) * max(lengths[i] for i in b) <= budget)
                   for b in parts):
                best = min(best, cost(lengths, parts, ov))
        assert cost(lengths, got, ov) == best


def test_replies_open_think_watches_the_reply_start_once(tiny_lm, monkeypatch):
    import copy

    from r1probe.models import generate as G
    from r1probe.probes.refusal import Scorer

    lm = copy.copy(tiny_lm)
    lm.__dict__.pop("_replies_open_think", None)
    assert G.replies_open_think(lm) is False  # a random tiny model does not write <think>
    thinking = copy.copy(tiny_lm)
    thinking.__dict__.pop("_replies_open_think", None)
    calls = []

    def fake(lm_, texts, **kw):
        calls.append(len(texts))
        return ["<think>\n嗯", " <think>\n好", "Red."]

    monkeypatch.setattr(G, "generate_texts", fake)
    assert G.replies_open_think(thinking) is True and G.replies_open_think(thinking) is True
    assert calls == [len(G.THINK_CHECK_PROMPTS)]  # checked once
    # first-token scoring closes an empty reasoning block for it, not for the model that does not think
    assert Scorer(thinking).format(["你好"])[0].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert Scorer(lm).format(["你好"])[0].endswith("<|im_start|>assistant\n")
    assert Scorer(thinking).format(["你好"], close_think=False)[0].endswith("<|im_start|>assistant\n")
    # so does the engine's teacher forcing (gold NLL, option log-probabilities); generation prompts stay as they are
    from r1probe.eval.engines import HFEngine

    assert HFEngine(thinking, max_new_tokens=4).format("你好", close_think=True).endswith("assistant\n<think>\n\n</think>\n\n")
    assert HFEngine(thinking, max_new_tokens=4).format("你好").endswith("<|im_start|>assistant\n")
    assert HFEngine(lm, max_new_tokens=4).format("你好", close_think=True).endswith("<|im_start|>assistant\n")
