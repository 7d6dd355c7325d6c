"""Batch planning of the extraction: fixed sizes, a token budget, and cuts weighed against a forward
pass's fixed cost."""

import itertools
import random

from r1probe.extract.batching import plan_batches, plan_shards


def _cost(batches, lengths, overhead):
    return sum(len(b) * max(lengths[r] for r in b) + overhead for b in batches)


def test_fixed_size_and_token_budget():
    lengths = [10, 50, 20, 40, 30]
    rows = plan_shards(lengths, 10)[0]
    assert rows == [1, 3, 4, 2, 0]
    assert plan_batches(rows, lengths, batch_size=2) == [[1, 3], [4, 2], [0]]
    assert plan_batches(rows, lengths, token_budget=100) == [[1, 3], [4, 2, 0]]
    assert plan_batches(rows, lengths, token_budget=10) == [[1], [3], [4], [2], [0]]  # one row at least


def test_overhead_cut_is_the_cheapest_contiguous_partition_under_the_budget():
    rng = random.Random(0)
    for _ in range(40):
        n = rng.randint(1, 7)
        lengths = [rng.choice([5, 8, 12, 40, 90, 300]) for _ in range(n)]
        rows = plan_shards(lengths, n)[0]
        budget, overhead = rng.choice([200, 1000, 4096]), rng.choice([1, 64, 500])
        got = plan_batches(rows, lengths, token_budget=budget, overhead=overhead)
        assert [r for b in got for r in b] == rows  # contiguous, in shard order, every row once
        best = None
        for cuts in itertools.product([0, 1], repeat=n - 1):
            parts, cur = [], [rows[0]]
            for r, c in zip(rows[1:], cuts):
                if c:
                    parts.append(cur)
                    cur = []
                cur.append(r)
            parts.append(cur)
            if all(len(p) == 1 or len(p) * max(lengths[r] for r in p) <= budget for p in parts):
                c = _cost(parts, lengths, overhead)
                best = c if best is None else min(best, c)
        assert _cost(got, lengths, overhead) == best


def test_a_long_prompt_does_not_pad_the_short_ones():
    lengths = [300] + [20] * 8
    rows = plan_shards(lengths, 9)[0]
    assert plan_batches(rows, lengths, token_budget=4096) == [rows]  # the budget alone: one padded batch
    assert plan_batches(rows, lengths, token_budget=4096, overhead=64) == [[0], rows[1:]]
