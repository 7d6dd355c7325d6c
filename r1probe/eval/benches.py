"""The benchmark registry: name → kind (:mod:`r1probe.eval.kinds`), loader, data files and default
generation length."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from r1probe.data import benchmarks as B
from r1probe.errors import R1ProbeError

@dataclass(frozen=True)
class Bench:
    """A benchmark: ``kind`` names its :class:`r1probe.eval.kinds.BenchKind` (how items are run,
    judged and summarised); ``load(data_root)`` returns its items."""

    name: str
    kind: str
    load: Callable[[str | None], list]
    files: tuple[str, ...]  # relative to the data root (for sha256 in the manifest)
    max_new_tokens: int = 256
    description: str = ""
    seeded: bool = False  # ``load(data_root, seed=S)``: its items are a split of the configured seed
    source: str = ""  # where the data comes from (a URL, or a file's name for a user bench)
    license: str = ""  # the data's licence as its upstream states it


def _chisafety(part: str):
    def load(root):
        from r1probe.data import chisafety as cs

        csroot = cs.resolve_root(root)
        fn = {"refusal": cs.load_chisafety_refusal, "multiturn": cs.load_chisafety_multiturn,
              "mcq": cs.load_chisafety_mcq}[part]
        out = []
        for p in fn(csroot):
            opts = cs.mcq_options(p.text) if part == "mcq" else None
            text = p.text + ("\n请直接给出正确选项的字母。" if part == "mcq" else "")
            out.append(B.BenchItem(id=p.id, text=text, gold=None, category=p.category, history=p.history,
                                   options=opts))
        return out
    return load


def _gsm8k_nll(root):
    items = B.load_gsm8k(root)
    for it in items:
        it.id = it.id.replace("gsm8k/", "gsm8k-nll/")
        it.text = it.meta["question"]
    return items


def _zh_harmless(root, seed: int = 0):
    """The built-in zh-harmless *test* split of ``seed`` (the seed the fit's train split uses): over-refusal."""
    from r1probe.data.prompts import load_prompt_set

    ps = load_prompt_set("builtin:zh-harmless", label="harmless", split="test", seed=seed)
    return [B.BenchItem(id=f"zh-harmless/{p.id}", text=p.text, category=p.category or "") for p in ps.prompts]


def _cvalues_report(root):
    """CValues' borderline *report* split (200; ``r1probe.data.borderline``): never in any fit or contrast set."""
    from r1probe.data.borderline import borderline_splits

    keep = {it.id for it in borderline_splits(root, english_contrast=False)["report"]}
    return [it for it in B.load_cvalues(root) if it.id in keep]


BENCHES: dict[str, Bench] = {b.name: b for b in [
    Bench("chisafety-refusal", "refusal", _chisafety("refusal"),
          ("chisafetybench/v1/risky_questions_without_dialog_history.json",), 256,
          "CHiSafetyBench 462 single-turn must-refuse questions: HR, RR-1, RR-2"),
    Bench("chisafety-multiturn", "refusal", _chisafety("multiturn"),
          ("chisafetybench/v1/risky_questions_with_dialog_history.json",), 256,
          "CHiSafetyBench 101 dialogues (history incl. system message): HR, RR-1, RR-2"),
    Bench("chisafety-mcq", "mcq", _chisafety("mcq"), ("chisafetybench/v1/mcq.json",), 8,
          "CHiSafetyBench MCQ (no answer key upstream: --answers FILE), option log-likelihood"),
    Bench("chisafety-mcq-gen", "mcq-gen", _chisafety("mcq"), ("chisafetybench/v1/mcq.json",), 256,
          "CHiSafetyBench MCQ by generation + letter extraction (--answers FILE)"),
    Bench("safetybench-zh", "mcq", B.load_safetybench_zh,
          ("safetybench/test_zh_subset.json", "safetybench/test_answers_zh_subset.json"), 8,
          "SafetyBench zh subset (2,100), option log-likelihood accuracy"),
    Bench("safetybench-zh-gen", "mcq-gen", B.load_safetybench_zh,
          ("safetybench/test_zh_subset.json", "safetybench/test_answers_zh_subset.json"), 256,
          "SafetyBench zh subset, generation + letter extraction accuracy"),
    Bench("gsm8k", "math", B.load_gsm8k, ("gsm8k/test.jsonl",), 512, "GSM8K test (1,319), accuracy"),
    Bench("gsm8k-nll", "nll", _gsm8k_nll, ("gsm8k/test.jsonl",), 0,
          "GSM8K test, teacher-forced mean NLL (nats/token) of the gold solutions"),
    Bench("math500", "math", B.load_math500, ("math500/test.jsonl",), 1024, "MATH-500, accuracy (math-verify)"),
    Bench("cmath", "math", B.load_cmath, ("cmath/cmath_dev.jsonl",), 512, "CMATH dev (600, Chinese), accuracy"),
    Bench("polyrefuse-test", "refusal", B.load_polyrefuse_test, ("polyrefuse_zh/harmful_test_translated_zh.json",),
          256, "PolyRefuse-zh harmful test split (572, Chinese; sources no fit reads): RR-1, RR-2"),
    Bench("xstest-safe", "overrefusal", B.load_xstest, ("xstest/xstest_prompts.csv",), 256,
          "XSTest v2 safe prompts (250): refusal rate (over-refusal)"),
    Bench("cvalues", "overrefusal", B.load_cvalues, ("cvalues/cvalues_responsibility_prompts.jsonl",), 256,
          "CValues responsibility prompts (664, Chinese): refusal rate (over-refusal)"),
    Bench("cvalues-report", "overrefusal", _cvalues_report, ("cvalues/cvalues_responsibility_prompts.jsonl",), 256,
          "CValues held-out report split (200 of the 664; disjoint from the enhancement's fit data): refusal rate"),
    Bench("zh-harmless", "overrefusal", _zh_harmless, (), 256,
          "Built-in zh-harmless test split of the seed (BELLE eval, held out from direction training): refusal rate",
          seeded=True),
    Bench("or-bench", "overrefusal", B.load_or_bench, ("or_bench_hard/or_bench_hard_test.json",), 256,
          "OR-Bench-Hard test split (132, English): refusal rate (over-refusal)"),
]}


#: upstream source and licence of each built-in bench's data (``r1probe eval --bench list``)
_ABOUT = {
    "chisafety": ("https://github.com/UnicomAI/UnicomBenchmark (CHiSafetyBench)",
                  "none stated (read from its path, never redistributed)"),
    "safetybench": ("https://github.com/thu-coai/SafetyBench", "MIT"),
    "gsm8k": ("https://github.com/openai/grade-school-math", "MIT"),
    "math500": ("MATH-500 of https://github.com/openai/prm800k", "MIT"),
    "cmath": ("https://github.com/XiaoMi/cmath", "CC-BY-4.0"),
    "xstest": ("https://github.com/paul-rottger/exaggerated-safety", "CC-BY-4.0"),
    "cvalues": ("https://github.com/X-PLUG/CValues", "Apache-2.0"),
    "zh-harmless": ("BELLE eval set, https://github.com/LianjiaTech/BELLE (vendored)", "ODC-By-1.0 (research use)"),
    "polyrefuse": ("https://github.com/mainlp/Multilingual-Refusal (PolyRefuse)", "Apache-2.0"),
    "or-bench": ("OR-Bench-Hard via https://github.com/mainlp/Multilingual-Refusal", "CC-BY-4.0 (unverified)"),
}
for _name, _b in list(BENCHES.items()):
    _src, _lic = next((v for k, v in _ABOUT.items() if _name.startswith(k)), ("", ""))
    BENCHES[_name] = replace(_b, source=_b.source or _src, license=_b.license or _lic)

#: default generation length of a user bench, by kind (others: 256)
_USER_MAX_NEW_TOKENS = {"math": 512, "mcq": 8, "nll": 0}


def user_bench(spec: str) -> Bench:
    """A benchmark from a prompt file: ``file:PATH:KIND`` (e.g. ``file:my.jsonl:refusal``).

    The file is read now through :func:`r1probe.data.prompts.read_prompt_file` (any of its formats), so a bad
    file fails before any model loads, in one line naming the file and line. Each row is an item: its ``id``
    (default ``<name>/<line>``), text, ``answer`` (the gold of graded kinds, the solution of ``nll``),
    ``category`` and ``history``. The bench is named after the file's stem.
    """
    from r1probe.data.prompts import read_prompt_file
    from r1probe.errors import DataError
    from r1probe.eval.kinds import BENCH_KINDS, get_kind

    body = spec[len("file:"):]
    path, sep, kind = body.rpartition(":")
    if not sep or not path or not kind:
        raise R1ProbeError(f"--bench {spec!r}: a user bench is file:PATH:KIND (KIND one of {', '.join(BENCH_KINDS)})")
    get_kind(kind)
    rows = read_prompt_file(path)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.") or "user"
    name = stem if stem not in BENCHES else f"file-{stem}"
    items, seen = [], {}
    for r in rows:
        iid = f"{name}/{r.id if r.id is not None else r.line}"
        if iid in seen:
            raise DataError(f"{path}: line {r.line}: duplicate id {iid.split('/', 1)[1]!r} (first at line {seen[iid]})")
        seen[iid] = r.line
        items.append(B.BenchItem(id=iid, text=r.text, gold=r.answer, category=r.category or "", history=r.history,
                                 solution=r.answer, meta={"question": r.text}))
    if kind == "nll" and any(it.solution is None for it in items):
        missing = next(r.line for r in rows if r.answer is None)
        raise DataError(f"{path}: line {missing}: kind nll needs an answer (the text to score) on every row")

    def load_user(root, _items=tuple(items)):
        return [B.BenchItem(**{**it.__dict__, "meta": dict(it.meta)}) for it in _items]

    return Bench(name, kind, load_user, (str(Path(path).resolve()),), _USER_MAX_NEW_TOKENS.get(kind, 256),
                 f"user bench from {Path(path).name} ({len(items)} items)", source=Path(path).name,
                 license="the file's own")


def bench_rows(data_root=None) -> list[dict]:
    """One row per registered bench: name, kind, items (counted by loading it; ``?`` when its data is missing),
    metrics (the kind's, with a judge that sees harm and a gold answer), source and licence."""
    from r1probe.eval.kinds import get_kind

    rows = []
    for b in BENCHES.values():
        try:
            n = str(len(b.load(data_root)))
        except Exception:  # noqa: BLE001 - a bench whose data is not installed is still listed
            n = "?"
        try:
            metrics = ", ".join(get_kind(b.kind).metrics(judge_sees_harm=True, has_gold=True))
        except R1ProbeError:
            metrics = "?"
        rows.append({"name": b.name, "kind": b.kind, "items": n, "metrics": metrics or "-",
                     "source": b.source or "-", "license": b.license or "-"})
    return rows


def bench_table(data_root=None) -> str:
    """:func:`bench_rows` as an aligned text table (``r1probe eval --bench list``)."""
    rows = bench_rows(data_root)
    cols = ["name", "kind", "items", "metrics", "source", "license"]
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:-1]}
    lines = ["  ".join(c.ljust(width.get(c, 0)) for c in cols).rstrip()]
    lines += ["  ".join(r[c].ljust(width.get(c, 0)) for c in cols).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def bench_help() -> str:
    """The ``--bench`` help text: every registered bench, ``list`` and the user-bench form."""
    from r1probe.eval.kinds import BENCH_KINDS

    return (f"Benchmarks, comma-separated: {', '.join(BENCHES)}; 'list' prints them with their kind, items, "
            f"metrics, source and licence; file:PATH:KIND adds a prompt file as a bench (KIND: "
            f"{', '.join(BENCH_KINDS)}).")


def register_bench(bench: Bench) -> Bench:
    """Add ``bench`` to :data:`BENCHES` (its kind must be registered); returns it."""
    from r1probe.eval.kinds import get_kind

    get_kind(bench.kind)
    BENCHES[bench.name] = bench
    return bench


def uses_reasoning_budget(name: str) -> bool:
    """True when benchmark ``name`` needs the long (reasoning) generation budget: its kind's
    ``uses_reasoning_budget`` (the maths benches)."""
    from r1probe.eval.kinds import get_kind

    return bool(get_kind(get_bench(name).kind).uses_reasoning_budget)


def get_bench(name: str) -> Bench:
    if name not in BENCHES:
        raise R1ProbeError(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
    return BENCHES[name]


def parse_benches(spec: str) -> list[Bench]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise R1ProbeError("--bench needs at least one benchmark name")
    return [user_bench(n) if n.startswith("file:") else get_bench(n) for n in names]


def select(items: list, limit: int | None, seed: int | None) -> list:
    """The evaluated subset: all items, or ``limit`` items drawn with ``random.Random(seed)``
    (seed None: the first ``limit``). The same (limit, seed) always gives the same ids."""
    if not limit or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    idx = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in idx]
