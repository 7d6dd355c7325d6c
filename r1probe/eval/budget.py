"""Token budgets for reasoning models, chosen from how long their reasoning runs.

A thinking model's reply is ``<think>\\n…\\n</think>\\n\\nanswer``: a refusal judge needs the answer, so the budget
must cover the reasoning and then the answer's opening. :func:`closing_positions` generates replies on dev
prompts until ``</think>`` (rows stop there; a row that never closes runs to the cap) and returns where each
reasoning closed, in tokens; :func:`choose_budget` turns those positions into a budget.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

THINK_CLOSE = "</think>"


def choose_budget(positions: Sequence[int | None], *, quantile: float = 0.95, answer_tokens: int = 64,
                  step: int = 32, cap: int = 1024) -> int:
    """The token budget from reasoning closing positions::

        B = min(cap, step * ceil((Q_q + answer_tokens) / step))

    ``Q_q`` is the ``quantile`` of the closing positions (tokens up to and including ``</think>``) of the
    replies that closed within the cap (the lower empirical quantile, ``sorted(x)[ceil(q n) - 1]``); a reply
    that did not close within the cap (None) is left out: a larger budget up to the cap would not close it,
    and the caller reports it as unterminated. ``cap`` when no reply closed. A model that does
    not think has positions of 0 and gets ``answer_tokens`` rounded up.
    """
    if not positions:
        raise ValueError("no closing positions to choose a budget from")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile {quantile} must be in (0, 1]")
    xs = sorted(p for p in positions if p is not None)
    if not xs:
        return cap
    q = xs[max(0, math.ceil(quantile * len(xs)) - 1)]
    return min(cap, step * math.ceil((q + answer_tokens) / step))


def closing_position(tokenizer, reply: str, prompt_opened_think: bool = False) -> int | None:
    """Tokens of ``reply`` up to and including its first ``</think>`` (None when it never closes; 0 when
    there is no reasoning block: the reply does not open one and the prompt did not either)."""
    if not prompt_opened_think and not reply.lstrip().startswith("<think>") and THINK_CLOSE not in reply:
        return 0
    i = reply.find(THINK_CLOSE)
    if i < 0:
        return None
    return len(tokenizer(reply[: i + len(THINK_CLOSE)], add_special_tokens=False).input_ids)


def closing_positions(lm, prompts: Sequence[str], *, cap: int = 1024, batch_size: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> tuple[list[int | None], list[str]]:
    """Greedy replies of ``lm`` (a ``LoadedModel``) to ``prompts`` (raw user messages), each stopped as soon
    as its reasoning closes, as soon as it starts without ``<think>`` (when the prompt did not open one), or
    after ``cap`` new tokens: ``(closing positions, replies)``."""
    from r1probe.models.engine import SamplingParams, generate

    opened = bool(lm.chat.thinks)

    def done(i: int, text: str) -> bool:
        head = text.lstrip()
        return THINK_CLOSE in text or (not opened and len(head) >= len("<think>") and not head.startswith("<think>"))

    texts = [lm.chat.format(p) for p in prompts]
    comps = generate(lm, texts, SamplingParams(max_new_tokens=cap), batch_size=batch_size, progress=progress,
                     done=done)
    replies = [c[0].text for c in comps]
    return [closing_position(lm.tokenizer, r, bool(lm.chat.thinks)) for r in replies], replies
