"""Length-sorted batching of prompts."""


def test_length_sorted_batches_with_a_token_budget():
    from r1probe.models.generate import length_sorted_batches

    lengths = [10, 300, 12, 11, 40, 9]
    assert length_sorted_batches(lengths, 4) == [[1, 4, 2, 3], [0, 5]]
    got = length_sorted_batches(lengths, 4, max_tokens=100)
    assert got == [[1], [4, 2], [3, 0, 5]]  # the long prompt alone; no batch over 100 padded tokens but it
    assert sorted(i for b in got for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 for b in got if len(b) > 1)
