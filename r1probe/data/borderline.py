"""Chinese borderline-safe (sensitive-but-answerable) prompts and the disjoint splits of the enhancement search.

Sources (all read from the shared data root, never copied into the repository):

- **CValues responsibility prompts** (664, Chinese, Apache-2.0): questions on sensitive topics that
  should be answered responsibly, the closest public Chinese over-refusal set;
- **XSTest v2 safe prompts** (250, English, CC-BY-4.0) and **OR-Bench-Hard** train (1,055, English):
  used only for the *contrast* direction (topic sensitivity), never for an objective or the report
  (the edit search keeps only XSTest's *dev* part, ``r1probe.data.partitions``).

Splits are deterministic and disjoint: items are ordered by ``sha256(salt + id)`` and cut in that
order, so a split never depends on file order, and adding sizes never moves an item from one split
to another of a different role. Roles:

- ``contrast``: builds the borderline direction (mean(borderline) vs mean(harmless / harmful));
- ``search``: the over-refusal *objective* of the search (validation);
- ``report``: the held-out numbers in the model card (never seen by the search).

The harmful side follows the same rule: PolyRefuse-zh ``train`` builds directions; PolyRefuse-zh ``val``
plus the CHiSafetyBench *search* part form the harmful objective; a fixed CHiSafetyBench *report*
part of 100 must-refuse questions (first 100 in hash order) is for the report only.
GSM8K: ``train.jsonl`` solutions for the search NLL, ``test.jsonl`` for the report.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from r1probe.data import benchmarks as B
from r1probe.errors import DataError

SALT = "r1probe-enhance-v1"
#: CValues: report part, search part; the rest is contrast
CVALUES_REPORT, CVALUES_SEARCH = 200, 132
#: CHiSafetyBench single-turn must-refuse: the report part; the rest is the search part
CHISAFETY_REPORT = 100


@dataclass
class Item:
    """A prompt of the enhancement data: ``id`` is ``<source>/<upstream id>``; ``solution`` for NLL items."""

    id: str
    text: str
    source: str
    category: str = ""
    solution: str | None = None
    meta: dict = field(default_factory=dict)


def hash_order(items: Sequence, salt: str = SALT, key=lambda it: it.id) -> list:
    """``items`` sorted by ``sha256(salt + key(item))`` (stable, independent of file order)."""
    return sorted(items, key=lambda it: hashlib.sha256((salt + str(key(it))).encode("utf-8")).hexdigest())


def cut(items: Sequence, sizes: Sequence[tuple[str, int | None]], salt: str = SALT) -> dict[str, list]:
    """Cut hash-ordered ``items`` into consecutive named parts (``None`` size: everything left);
    items repeating an earlier item's text are dropped so no text is in two parts."""
    order, seen = [], set()
    for it in hash_order(items, salt):  # a repeated prompt text stays in one part only
        t = it.text.strip()
        if t not in seen:
            seen.add(t)
            order.append(it)
    out, i = {}, 0
    for name, n in sizes:
        j = len(order) if n is None else min(len(order), i + int(n))
        out[name] = order[i:j]
        i = j
    return out


def _from_bench(items: Iterable, source: str) -> list[Item]:
    return [Item(id=it.id, text=it.text, source=source, category=getattr(it, "category", "") or "",
                 solution=getattr(it, "solution", None)) for it in items]


def borderline_splits(root=None, *, report: int = CVALUES_REPORT, search: int = CVALUES_SEARCH,
                      english_contrast: bool = True) -> dict[str, list[Item]]:
    """The borderline-safe set: ``{"contrast", "search", "report"}`` (disjoint; see the module doc)."""
    cv = _from_bench(B.load_cvalues(root), "cvalues")
    parts = cut(cv, [("report", report), ("search", search), ("contrast", None)])
    contrast = list(parts["contrast"])
    if english_contrast:
        for loader, src in ((lambda: B.load_xstest(root, "safe"), "xstest-safe"),
                            (lambda: B.load_or_bench(root, "train"), "or-bench-train")):
            try:
                contrast += _from_bench(loader(), src)
            except DataError:
                pass  # the Chinese part alone is enough for the contrast
    return {"contrast": contrast, "search": parts["search"], "report": parts["report"]}


def _polyrefuse(root, name: str) -> list[Item]:
    p = B.data_root(root) / "polyrefuse_zh" / f"{name}_translated_zh.json"
    if not p.exists():
        raise DataError(f"PolyRefuse-zh file not found: {p} (pass --data-root or set R1PROBE_DATA)")
    rows = json.loads(p.read_text("utf-8"))
    key = "instruction_translated" if rows and "instruction_translated" in rows[0] else "instruction"
    return [Item(id=f"polyrefuse-zh/{name}/{i}", text=r[key], source=f"polyrefuse-zh-{name}",
                 category=r.get("category", "")) for i, r in enumerate(rows)]


def harmful_splits(root=None, chisafety_root=None, *, report: int = CHISAFETY_REPORT) -> dict[str, list[Item]]:
    """``{"train": PolyRefuse-zh harmful train, "val": PolyRefuse-zh harmful val,
    "chisafety_search": CHiSafetyBench minus its report part, "report": CHiSafetyBench report part}``."""
    from r1probe.data import chisafety as cs

    out = {"train": _polyrefuse(root, "harmful_train"), "val": _polyrefuse(root, "harmful_val")}
    if chisafety_root is None and root is not None and (B.data_root(root) / "chisafetybench").exists():
        chisafety_root = B.data_root(root) / "chisafetybench"
    cq = [Item(id=p.id, text=p.text, source="chisafety-refusal", category=p.category or "")
          for p in cs.load_chisafety_refusal(chisafety_root)]
    parts = cut(cq, [("report", report), ("search", None)])
    out["chisafety_search"], out["report"] = parts["search"], parts["report"]
    held = {it.text.strip() for it in parts["report"]}
    out["val"] = [it for it in out["val"] if it.text.strip() not in held]
    return out


def harmless_train(root=None, n: int | None = 260) -> list[Item]:
    """Harmless Chinese instructions for directions: BELLE eval set questions (``question``/``instruction``)."""
    p = B.data_root(root) / "belle_eval" / "eval_set.json"
    if p.exists():
        rows = B._jsonl(p)
        items = [Item(id=f"belle-eval/{i}", text=(r.get("instruction") or r.get("question") or "").strip(),
                      source="belle-eval", category=r.get("class", "")) for i, r in enumerate(rows)]
        items = [it for it in items if it.text]
    else:
        items = _polyrefuse(root, "harmless_train")
    items = hash_order(items)
    return items[:n] if n else items


def gsm8k_splits(root=None) -> dict[str, list[Item]]:
    """``{"search": GSM8K train (hash order), "report": GSM8K test (file order)}`` with gold solutions."""
    def load(split):
        out = []
        for it in B.load_gsm8k(root, split):
            out.append(Item(id=f"gsm8k-{split}/{it.id.split('/')[-1]}", text=it.meta["question"], source=f"gsm8k-{split}",
                            solution=it.solution))
        return out
    return {"search": hash_order(load("train")), "report": load("test")}


def take(items: Sequence, n: int | None) -> list:
    return list(items[:n]) if n else list(items)


def check_disjoint(named: dict[str, Sequence]) -> None:
    """Raise when two named parts share an id or a prompt text (used for search vs report)."""
    seen: dict[str, str] = {}
    for name, items in named.items():
        for it in items:
            for k in (f"id:{it.id}", f"text:{it.text.strip()}"):
                if k in seen and seen[k] != name:
                    raise DataError(f"split leak: {k[:60]!r} is in both {seen[k]} and {name}")
                seen[k] = name
