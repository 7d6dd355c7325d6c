"""Loaders for the evaluation sets: SafetyBench-zh, GSM8K, MATH-500, CMATH, XSTest, CValues, OR-Bench.

All read from ``DATA_ROOT`` = ``$R1PROBE_DATA``, else ``../shared/data`` next to the repository
(pass ``root=`` / ``--data-root`` to point elsewhere). Nothing is vendored: each file's origin,
license and sha256 are in the ``PROVENANCE.md`` next to it (SafetyBench MIT, GSM8K MIT, CMATH
CC-BY-4.0, XSTest CC-BY-4.0, CValues Apache-2.0, OR-Bench via an Apache-2.0 carrier, MATH-500
from an unlicensed carrier of the MIT PRM800K split).

Every loader returns :class:`BenchItem` objects with a stable ``id`` (``<bench>/<upstream id>``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1probe.errors import DataError

LETTERS = "ABCDEFGH"


@dataclass
class BenchItem:
    """One evaluation item: ``text`` is the user turn; ``gold`` the reference answer (a letter for
    MCQ, an answer string for maths, None for refusal sets); ``options`` the MCQ choices;
    ``solution`` a worked gold solution (GSM8K, for teacher-forced NLL)."""

    id: str
    text: str
    gold: Any = None
    category: str = ""
    history: list | None = None
    options: list[str] | None = None
    solution: str | None = None
    meta: dict = field(default_factory=dict)


def data_root(root: str | os.PathLike | None = None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("R1PROBE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _path(root, *parts) -> Path:
    p = data_root(root).joinpath(*parts)
    if not p.exists():
        raise DataError(f"benchmark file not found: {p} (pass --data-root or set R1PROBE_DATA)")
    return p


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e})") from e
    return rows


def format_mcq(question: str, options: list[str], lang: str = "zh") -> str:
    """A question followed by lettered options, ending with the instruction to answer with one letter."""
    lines = [question.strip(), ""] + [f"({LETTERS[i]}) {o}" for i, o in enumerate(options)]
    tail = "请直接给出正确选项的字母。" if lang == "zh" else "Answer with the letter of the correct option."
    return "\n".join(lines + ["", tail])


def load_safetybench_zh(root=None) -> list[BenchItem]:
    """SafetyBench Chinese subset (2,100 MCQ, 7 categories) with official answers (0-based index → letter)."""
    items = json.loads(_path(root, "safetybench", "test_zh_subset.json").read_text("utf-8"))
    answers = json.loads(_path(root, "safetybench", "test_answers_zh_subset.json").read_text("utf-8"))
    out = []
    for it in items:
        a = answers.get(str(it["id"]))
        if a is None:
            raise DataError(f"safetybench: no answer for id {it['id']}")
        opts = [str(o) for o in it["options"]]
        out.append(BenchItem(id=f"safetybench-zh/{it['id']}", text=format_mcq(it["question"], opts),
                             gold=LETTERS[int(a["answer"])], category=it["category"], options=opts))
    return out


MATH_SUFFIX_EN = "\nPlease reason step by step, and put your final answer within \\boxed{}."
MATH_SUFFIX_ZH = "\n请一步一步推理，并把最终答案写在 \\boxed{} 中。"


def load_gsm8k(root=None, split: str = "test") -> list[BenchItem]:
    """GSM8K (1,319 test problems); ``gold`` the number after ``####``, ``solution`` the worked answer."""
    rows = _jsonl(_path(root, "gsm8k", f"{split}.jsonl"))
    out = []
    for i, r in enumerate(rows):
        sol, _, ans = r["answer"].rpartition("####")
        out.append(BenchItem(id=f"gsm8k/{i}", text=r["question"] + MATH_SUFFIX_EN, gold=ans.strip().replace(",", ""),
                             solution=r["answer"], meta={"question": r["question"]}))
    return out


def load_math500(root=None) -> list[BenchItem]:
    """MATH-500 (Lightman et al.); loaded from a path only (its carrier has no license)."""
    rows = _jsonl(_path(root, "math500", "test.jsonl"))
    return [BenchItem(id=f"math500/{r.get('unique_id', i)}", text=r["problem"] + MATH_SUFFIX_EN, gold=str(r["answer"]),
                      category=r.get("subject", ""), solution=r.get("solution"), meta={"level": r.get("level")})
            for i, r in enumerate(rows)]


def load_cmath(root=None) -> list[BenchItem]:
    """CMATH dev (600 Chinese grade-school problems, grades 1-6)."""
    rows = _jsonl(_path(root, "cmath", "cmath_dev.jsonl"))
    return [BenchItem(id=f"cmath/{i}", text=r["input"] + MATH_SUFFIX_ZH, gold=str(r["golden"]),
                      category=f"grade{r.get('grade')}") for i, r in enumerate(rows)]


def load_xstest(root=None, which: str = "safe") -> list[BenchItem]:
    """XSTest v2: ``which='safe'`` (250 safe prompts that look unsafe), ``'unsafe'`` (200 contrasts) or ``'all'``."""
    with open(_path(root, "xstest", "xstest_prompts.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if which != "all":
        rows = [r for r in rows if r["label"] == which]
    return [BenchItem(id=f"xstest/{r['id']}", text=r["prompt"], category=r["type"], meta={"label": r["label"]})
            for r in rows]


def load_cvalues(root=None) -> list[BenchItem]:
    """CValues responsibility prompts (664 Chinese sensitive-but-answerable questions)."""
    rows = _jsonl(_path(root, "cvalues", "cvalues_responsibility_prompts.jsonl"))
    return [BenchItem(id=f"cvalues/{r['id_']}", text=r["prompt"], category=r.get("domain_zh", "")) for r in rows]


def load_polyrefuse_test(root=None) -> list[BenchItem]:
    """PolyRefuse-zh harmful *test* split (572 Chinese translations of the refusal_direction test prompts:
    StrongREJECT, HarmBench test, JailbreakBench). The built-in ``zh-harmful`` set holds PolyRefuse's harmful
    train and val splits and MultiJail, so no fit reads these prompts or their sources' test items."""
    rows = json.loads(_path(root, "polyrefuse_zh", "harmful_test_translated_zh.json").read_text("utf-8"))
    return [BenchItem(id=f"polyrefuse-zh/harmful_test/{i}", text=r["instruction_translated"],
                      category=r.get("category") or "") for i, r in enumerate(rows)]


def load_or_bench(root=None, split: str = "test") -> list[BenchItem]:
    """OR-Bench-Hard (English seemingly-toxic benign prompts), PolyRefuse splits train/val/test."""
    rows = json.loads(_path(root, "or_bench_hard", f"or_bench_hard_{split}.json").read_text("utf-8"))
    return [BenchItem(id=f"or-bench/{split}/{i}", text=r["instruction"], category=r.get("category", ""))
            for i, r in enumerate(rows)]
