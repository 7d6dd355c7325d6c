"""The labelled judge set: which replies are in the development part and which in the frozen test part.

The set (``tests/fixtures/judge/dev.jsonl`` and ``test.jsonl``) holds model replies, each with its
source, item id, model tag and a hand-written CHiSafetyBench label (0 risky non-refusal, 1 harmless
non-refusal, 2 direct refusal, 3 refusal with responsible guidance). The split is fixed by rule:

- every CHiSafetyBench reply is in the **test** part (CHiSafetyBench is report-only: no judge is
  built on it);
- any other reply is in the test part when ``int(sha256(SALT + ":" + item_id), 16) % 100 < TEST_PERCENT``,
  else in the development part. The key is the *item* id, so all models' replies to one prompt
  fall in the same part.

Judges are built on the development part only; the test part was labelled and committed before
any judge change and is only read to measure them.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

SALT = "r1probe-judge-set-v1"
TEST_PERCENT = 50

#: sources of the set: name -> how its items are read (a benchmark name or a built-in split)
SOURCES = {
    "zh-harmful": "builtin:zh-harmful:val",
    "cvalues": "bench:cvalues",
    "xstest-safe": "bench:xstest-safe",
    "or-bench": "bench:or-bench",
    "zh-harmless": "bench:zh-harmless",
    "chisafety": "bench:chisafety-refusal",
}

#: sources whose replies only ever go to the frozen test part
REPORT_ONLY = ("chisafety",)


def salted_hash(s: str) -> int:
    """int(sha256(f"{SALT}:{s}")): the stable hash behind the split and the measured subsets."""
    return int(hashlib.sha256(f"{SALT}:{s}".encode("utf-8")).hexdigest(), 16)


def part_of(source: str, item_id: str) -> str:
    """``"test"`` or ``"dev"`` for a reply to ``item_id`` from ``source`` (see the module docstring)."""
    if source in REPORT_ONLY:
        return "test"
    return "test" if salted_hash(item_id) % 100 < TEST_PERCENT else "dev"


def load_source_items(source: str, data_root: str | None = None) -> list:
    """The items of ``source`` (objects with ``id``, ``text`` and optionally ``history``)."""
    from r1probe.errors import R1ProbeError

    spec = SOURCES.get(source)
    if spec is None:
        raise R1ProbeError(f"unknown judge-set source {source!r}; known: {', '.join(SOURCES)}")
    if spec.startswith("bench:"):
        from r1probe.eval.benches import get_bench

        return get_bench(spec[len("bench:"):]).load(data_root)
    from r1probe.data.benchmarks import BenchItem
    from r1probe.data.prompts import load_prompt_set

    ps = load_prompt_set(spec)
    return [BenchItem(id=f"{source}/{p.id}", text=p.text, category=p.category or "") for p in ps.prompts]


def slot_items(source: str, items: Sequence, slot: int, n: int) -> list:
    """The ``slot``-th block of ``n`` items of ``source`` in hash order (each model its own slot)."""
    order = sorted(items, key=lambda it: hashlib.sha256(f"{SALT}:order:{source}:{it.id}".encode()).hexdigest())
    return list(order[slot * n:(slot + 1) * n])


def questions_for(rows: Sequence[dict], data_root: str | None = None) -> list[str]:
    """The prompt text of each judge-set row, read back from its source by item id."""
    cache: dict[str, dict] = {}
    out = []
    for r in rows:
        src = r["source"]
        if src not in cache:
            cache[src] = {it.id: it.text for it in load_source_items(src, data_root)}
        out.append(cache[src].get(r["item_id"], ""))
    return out


__all__ = ["SALT", "TEST_PERCENT", "SOURCES", "REPORT_ONLY", "part_of", "load_source_items", "slot_items",
           "questions_for"]
