"""Fluency of generated replies: repetition loops and distinct-n, read from the text alone.

A reply is cut into *units*: each CJK character is a unit, each run of Latin letters or digits is a unit
(lower-cased); punctuation and white space are dropped, so a phrase repeated with commas between its copies
is a repetition. Two measures per reply:

- :func:`repetition_loop` (a 0/1 outcome): the reply holds a run in which one sequence of ``p`` units
  (``1 <= p <= max_period``) follows itself at least ``min_repeats`` times in a row and the run covers at
  least ``min_units`` units; the degenerate greedy loop ("非法恐怖主义，非法恐怖主义，…").
- :func:`distinct_n`: ``|unique n-grams| / |n-grams|`` over the reply's units (n = 2 by default); lower means
  more reuse of the same word pairs.

:data:`FLUENCY` holds both as metrics over records with a ``reply`` (the loop share a :class:`Rate`, so two
models pair item by item with McNemar and Newcombe's interval; distinct-n a mean, paired by bootstrap).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import numpy as np

from r1probe.eval.metrics import Metric, Rate

_UNIT = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")

#: the loop rule's defaults: a period of at most 64 units, repeated 3 times in a row, covering >= 12 units
MAX_PERIOD, MIN_REPEATS, MIN_UNITS = 64, 3, 12


def units(text: str) -> list[str]:
    """The reply's units: each CJK character, each run of other letters/digits (lower-cased); nothing else."""
    return [u.lower() for u in _UNIT.findall(text or "")]


@lru_cache(maxsize=1 << 16)  # paired bootstraps score the same replies many times
def repetition_loop(text: str, *, max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
                    min_units: int = MIN_UNITS) -> bool:
    """Whether ``text`` holds a repetition loop. With units ``u`` and, for a period ``p``, the run lengths of
    ``e_p[j] = [u[j] = u[j + p]]``: a run of ``k`` equal pairs starting at ``j`` is ``u[j : j + k + p]``, period
    ``p``, i.e. ``(k + p) / p`` copies of ``u[j : j + p]``. Loop ⇔ for some ``p <= max_period`` a run has
    ``k + p >= min_repeats · p`` and ``k + p >= min_units``."""
    u = units(text)
    if not u:
        return False
    ids = {}
    a = np.array([ids.setdefault(x, len(ids)) for x in u])
    n = len(a)
    for p in range(1, min(max_period, n // max(min_repeats, 1)) + 1):
        need = max((min_repeats - 1) * p, min_units - p)
        if _longest_true_run(a[:-p] == a[p:]) >= need:
            return True
    return False


def _longest_true_run(eq: np.ndarray) -> int:
    """The longest run of consecutive ``True`` in a boolean array (0 when none)."""
    if not eq.any():
        return 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], eq.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max())


@lru_cache(maxsize=1 << 16)
def distinct_n(text: str, n: int = 2) -> float | None:
    """``|unique n-grams| / |n-grams|`` over the units of ``text`` (None when it has fewer than ``n`` units)."""
    u = units(text)
    grams = [tuple(u[i:i + n]) for i in range(len(u) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _has_reply(r: dict) -> bool:
    return isinstance(r.get("reply"), str)


def mean_distinct(recs: Sequence[dict], n: int = 2) -> float | None:
    """Mean of :func:`distinct_n` over the records with a reply of at least ``n`` units (None over none)."""
    xs = [x for x in (distinct_n(r["reply"], n) for r in recs if _has_reply(r)) if x is not None]
    return float(np.mean(xs)) if xs else None


FLUENCY: dict[str, Metric] = {
    "loop_rate": Rate(lambda r: repetition_loop(r["reply"]), _has_reply),
    "distinct_2": mean_distinct,
}
