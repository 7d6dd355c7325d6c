"""Token budgets from reasoning closing positions."""

from __future__ import annotations

import pytest

from r1probe.eval.budget import choose_budget, closing_position, closing_positions


def test_choose_budget_quantile_answer_room_rounding_and_cap():
    pos = list(range(10, 110, 10))  # 10..100
    assert choose_budget(pos, quantile=0.9, answer_tokens=64, step=32) == 160  # q = 90 -> 154 -> 160
    assert choose_budget(pos, quantile=1.0, answer_tokens=64, step=32) == 192  # q = 100 -> 164 -> 192
    assert choose_budget(pos, quantile=0.5, answer_tokens=0, step=1) == 50
    # replies that never closed are left out (no budget closes them); none closed: the cap
    assert choose_budget(pos + [None, None, None], quantile=0.9, answer_tokens=64) == 160
    assert choose_budget([None, None], cap=512) == 512
    assert choose_budget([0, 0, 0], answer_tokens=64) == 64  # a model that does not think
    assert choose_budget([900], answer_tokens=200, cap=1024) == 1024
    with pytest.raises(ValueError):
        choose_budget([])
    with pytest.raises(ValueError):
        choose_budget([1], quantile=0)


class _Tok:
    """One token per character."""

    def __call__(self, text, add_special_tokens=False):
        return type("E", (), {"input_ids": list(text)})()


def test_closing_position_counts_tokens_through_the_close():
    t = _Tok()
    assert closing_position(t, "<think>\nab\n</think>\n\nanswer") == len("<think>\nab\n</think>")
    assert closing_position(t, "<think>\nstill thinking") is None
    assert closing_position(t, "plain answer") == 0
    # the R1 template opens <think> in the prompt: the reply holds only the close
    assert closing_position(t, "ab\n</think>\n\nx", prompt_opened_think=True) == len("ab\n</think>")
    assert closing_position(t, "no close yet", prompt_opened_think=True) is None


def test_closing_positions_stop_rows_at_the_close(tiny_lm):
    pos, replies = closing_positions(tiny_lm, ["hello", "你好"], cap=5)
    assert len(pos) == len(replies) == 2
    # a random tiny model writes neither tag: no reasoning block, position 0
    assert pos == [closing_position(tiny_lm.tokenizer, r) for r in replies] == [0, 0]
