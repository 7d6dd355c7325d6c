"""Benchmark kinds: how a kind runs a chunk of items and which metrics it computes.

A :class:`r1probe.eval.benches.Bench` names its kind by string; the runner
(:mod:`r1probe.eval.runner`) looks the kind up here and does everything kind-specific through it:

- :meth:`BenchKind.run_chunk` turns a chunk of items into per-item records (generate or score
  with the engine, judge, extract, grade);
- :meth:`BenchKind.metrics` names the metrics computed over the records (``M.summarize``);
- :meth:`BenchKind.finish` adds kind-specific fields to the summary entry (notes, rates);
- ``needs_judge`` (a refusal judge is built and recorded), ``generates`` (the run depends on
  ``max_new_tokens``) and ``uses_reasoning_budget`` (maths: a study gives it the long budget).

Registered kinds: ``refusal`` (CHiSafetyBench labels: HR, RR-1, RR-2), ``overrefusal``
(refusal rate), ``mcq`` (option log-likelihood), ``mcq-gen`` (generate, extract a letter),
``math`` (generate, extract, check equivalence), ``nll`` (teacher-forced NLL of a target).
Add one with :func:`register_kind` (see docs/DEVELOPING.md, "A benchmark kind").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from r1probe.errors import R1ProbeError
from r1probe.eval import metrics as M
from r1probe.eval.answers import extract_choice, score_math


@dataclass(frozen=True)
class ChunkOptions:
    """What a chunk runs under: the generation budget, whether the reasoning is judged too,
    an answer key (item id tail -> letter) overriding the items' gold, and whether judged kinds
    stop each reply once its verdict is settled (:func:`verdict_settled`; the stored reply then
    ends there; engines without a ``done`` callback always generate the whole budget)."""

    max_new_tokens: int
    judge_reasoning: bool = False
    answers: dict | None = None
    early_stop: bool = True


@runtime_checkable
class BenchKind(Protocol):
    """One benchmark kind (see the module docstring)."""

    name: str
    needs_judge: bool
    generates: bool
    uses_reasoning_budget: bool

    def run_chunk(self, bench, engine, judge, items: Sequence, opts: ChunkOptions) -> list[dict]:
        """Per-item records (start from :func:`base_records`) for one chunk of items."""

    def metrics(self, *, judge_sees_harm: bool, has_gold: bool) -> dict[str, M.Metric]:
        """Metric name -> function of the records."""

    def has_gold(self, recs: Sequence[dict]) -> bool:
        """Whether the records can be graded (an MCQ without an answer key cannot)."""

    def metric_records(self, recs: Sequence[dict], has_gold: bool) -> list[dict]:
        """The records the metrics are computed over."""

    def finish(self, entry: dict, recs: Sequence[dict], *, judge, judge_reasoning: bool, has_gold: bool) -> None:
        """Add kind-specific fields to a summary entry in place."""


class BaseKind:
    """Defaults for a :class:`BenchKind`: a generating kind without a judge, every record graded."""

    name = ""
    needs_judge = False
    generates = True
    uses_reasoning_budget = False
    #: how the kind's forward passes begin an item: its chat-formatted prompt (``"reply"``:
    #: ``engine.format(text, history)``; ``"closed-think"``: the same after an empty closed reasoning block,
    #: ``close_think=True``), or None (something else). A conditional plan's gates read the prompt's last
    #: token, so with a prompt form they can be checked ahead (:func:`r1probe.eval.runner.run_bench`'s
    #: ``unchanged_from``)
    prompt_form: str | None = "reply"

    def run_chunk(self, bench, engine, judge, items, opts: ChunkOptions) -> list[dict]:
        raise NotImplementedError

    def metrics(self, *, judge_sees_harm: bool, has_gold: bool) -> dict[str, M.Metric]:
        return {}

    def has_gold(self, recs) -> bool:
        return True

    def metric_records(self, recs, has_gold: bool) -> list[dict]:
        return list(recs)

    def finish(self, entry, recs, *, judge, judge_reasoning: bool, has_gold: bool) -> None:
        return None


BENCH_KINDS: dict[str, BenchKind] = {}


def register_kind(kind: BenchKind) -> BenchKind:
    """Add ``kind`` under ``kind.name`` (a name already registered is replaced); returns it."""
    if not getattr(kind, "name", ""):
        raise R1ProbeError("a benchmark kind needs a name")
    BENCH_KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> BenchKind:
    """The registered kind ``name``, or a one-line error naming the known kinds."""
    try:
        return BENCH_KINDS[name]
    except KeyError:
        raise R1ProbeError(f"unknown benchmark kind {name!r}; known: {', '.join(BENCH_KINDS)}") from None


# -- helpers for kinds ---------------------------------------------------------------------------
def base_records(bench, items) -> list[dict]:
    """The fields every record starts with: id, bench, category, prompt (and history)."""
    return [{"id": it.id, "bench": bench.name, "category": it.category, "prompt": it.text,
             **({"history": it.history} if it.history else {})} for it in items]


def requests(items) -> list[tuple]:
    """Engine requests ``(text, history)`` of the items."""
    return [(it.text, it.history) for it in items]


def gold_of(it, answers: dict | None):
    """The item's gold answer, from the answer key (by id tail) when one is given."""
    if answers is not None:
        return answers.get((getattr(it, "meta", None) or {}).get("item_id", it.id).split("/")[-1])  # a sample: <id>#s<k>
    return it.gold


#: characters of slack past what the judge reads: the last token of a partial reply may decode to a
#: placeholder until its UTF-8 sequence is complete
EARLY_STOP_SLACK = 16


def verdict_settled(judge, reply: str, *, thinks: bool = False) -> bool:
    """True when the refusal verdict on ``reply`` (:mod:`r1probe.eval.judges.refusal`) is the same
    for every continuation of it, so generating further only costs time.

    Needs a judge whose verdict on an answer depends only on the answer's first ``reads_chars``
    characters (the attribute; None or missing: never settled). Settled when the reasoning is
    closed (or the model does not think) and the answer is longer than ``reads_chars`` plus
    :data:`EARLY_STOP_SLACK` characters. A closed reasoning is final (so judging it too,
    ``judge_reasoning``, keeps the rule exact), and a reply of a model that does not think is taken
    not to close a reasoning block later.
    """
    from r1probe.eval.judges.refusal import default_judge
    from r1probe.models.chat import split_reasoning

    judge = default_judge() if judge is None else judge
    reads = getattr(judge, "reads_chars", None)
    if reads is None:
        return False
    sp = split_reasoning(reply, prompt_opened_think=thinks)
    return sp.terminated and len(sp.answer) > reads + EARLY_STOP_SLACK


def refusal_done(judge, *, thinks: bool = False):
    """A ``done(prompt_index, text_so_far)`` callback for the generation engine: stop a row once
    :func:`verdict_settled`; None when the judge reads whole replies (no ``reads_chars``)."""
    from r1probe.eval.judges.refusal import default_judge

    judge = default_judge() if judge is None else judge
    if getattr(judge, "reads_chars", None) is None:
        return None
    return lambda i, text: verdict_settled(judge, text, thinks=thinks)


def _split_fields(sp) -> dict:
    return {"reasoning": sp.reasoning, "answer": sp.answer, "thought": sp.thought, "terminated": sp.terminated}


# -- the built-in kinds ------------------------------------------------------------------------
class _JudgedKind(BaseKind):
    """Generate, then judge each reply under the refusal rule (:mod:`r1probe.eval.judges.refusal`)."""

    needs_judge = True

    def run_chunk(self, bench, engine, judge, items, opts):
        from r1probe.eval.judges.refusal import judge_replies

        t0 = time.perf_counter()
        base = base_records(bench, items)
        kw = {}
        done = refusal_done(judge, thinks=getattr(engine, "thinks", False)) if opts.early_stop else None
        if done is not None and getattr(engine, "supports_done", False):
            kw["done"] = done
        replies = engine.generate(requests(items), max_new_tokens=opts.max_new_tokens, **kw)
        dt = (time.perf_counter() - t0) / len(items)
        t = time.perf_counter()
        judged = judge_replies(replies, questions=[it.text for it in items], histories=[it.history for it in items],
                               prompt_opened_think=getattr(engine, "thinks", False), judge=judge,
                               judge_reasoning=opts.judge_reasoning)
        dj = (time.perf_counter() - t) / max(1, len(items))
        out = []
        for b, r, j in zip(base, replies, judged):
            v, av = j.verdict, j.answer_judged
            rec = {**b, "reply": r, **_split_fields(j.split), "label": v.label,
                   "refusal": av.get("refusal") if av is not None else v.refused,
                   "judge_raw": av.get("raw") if av is not None else None,
                   "judge_parsed": av.get("parsed", v.label is not None) if av is not None else None,
                   "judge_s": dj, "outcome": v.outcome}
            if j.reasoning_judged is not None:
                rv = j.reasoning_judged
                rec.update(reasoning_label=rv["label"], reasoning_refusal=rv.get("refusal"),
                           reasoning_judge_raw=rv.get("raw"))
            rec["gen_s"] = dt
            out.append(rec)
        return out

    def finish(self, entry, recs, *, judge, judge_reasoning, has_gold):
        if judge_reasoning:
            rr = [r for r in recs if r.get("reasoning_label") is not None and r.get("reasoning")]
            entry["metrics"]["reasoning_refusal_rate"] = (sum(r["reasoning_label"] in (2, 3) for r in rr) / len(rr)
                                                          if rr else None)


class RefusalKind(_JudgedKind):
    """Must-refuse prompts: CHiSafetyBench HR (when the judge sees harm), RR-1, RR-2."""

    name = "refusal"

    def metrics(self, *, judge_sees_harm, has_gold):
        return M.chisafety_metrics(judge_sees_harm)

    def finish(self, entry, recs, *, judge, judge_reasoning, has_gold):
        if not getattr(judge, "sees_harm", False):
            entry["metrics"] = {"HR": None, **entry["metrics"]}
            entry["ci95"] = {"HR": None, **entry["ci95"]}
            entry["notes"] = "HR unavailable: the keyword judge cannot see harm"
        super().finish(entry, recs, judge=judge, judge_reasoning=judge_reasoning, has_gold=has_gold)


class OverrefusalKind(_JudgedKind):
    """Prompts that should be answered: the refusal rate (lower is better)."""

    name = "overrefusal"

    def metrics(self, *, judge_sees_harm, has_gold):
        return M.REFUSAL_RATE


class _GradedKind(BaseKind):
    """Kinds graded against a gold answer: accuracy over the records that have one."""

    keyed = False  # gold may be missing (an MCQ without an answer key)

    def metrics(self, *, judge_sees_harm, has_gold):
        return M.ACCURACY if has_gold else {}

    def has_gold(self, recs):
        return not self.keyed or any(r.get("gold") is not None for r in recs)

    def metric_records(self, recs, has_gold):
        if self.keyed and has_gold:
            return [r for r in recs if r.get("gold") is not None]
        return list(recs)

    def finish(self, entry, recs, *, judge, judge_reasoning, has_gold):
        if self.keyed and not has_gold:
            entry["notes"] = "no answer key (pass --answers FILE): accuracy not reported"
        if self.generates:
            entry["metrics"]["extracted_rate"] = float(sum(r.get("pred") is not None for r in recs)) / len(recs)


class _GeneratedAnswerKind(_GradedKind):
    """Generate, split off the reasoning, grade the answer (the reasoning when it never closed, flagged)."""

    def grade(self, it, text: str, opts) -> dict:
        raise NotImplementedError

    def run_chunk(self, bench, engine, judge, items, opts):
        from r1probe.models.chat import split_reasoning

        t0 = time.perf_counter()
        base = base_records(bench, items)
        replies = engine.generate(requests(items), max_new_tokens=opts.max_new_tokens)
        dt = (time.perf_counter() - t0) / len(items)
        thinks = getattr(engine, "thinks", False)
        out = []
        for b, it, r in zip(base, items, replies):
            sp = split_reasoning(r, prompt_opened_think=thinks)
            rec = {**b, "reply": r, **_split_fields(sp), "gen_s": dt}
            # an unterminated reasoning has no answer: score what there is (the reasoning) but flag it
            rec.update(self.grade(it, sp.answer if sp.terminated else sp.reasoning, opts))
            out.append(rec)
        return out


class MathKind(_GeneratedAnswerKind):
    """Maths word problems: extract the final answer, check equivalence with the gold one."""

    name = "math"
    uses_reasoning_budget = True

    def grade(self, it, text, opts):
        pred, ok = score_math(text, it.gold)
        return {"pred": pred, "gold": it.gold, "correct": ok}


def _letters(it) -> list[str]:
    return it.options if it.options and len(it.options[0]) == 1 else \
        [chr(65 + i) for i in range(len(it.options or "AB"))]


class McqGenKind(_GeneratedAnswerKind):
    """Multiple choice by generation: extract a letter from the answer."""

    name = "mcq-gen"
    keyed = True

    def grade(self, it, text, opts):
        letters = "".join(it.options) if it.options and len(it.options[0]) == 1 else \
            "ABCDEFGH"[:len(it.options or "AB")]
        pred = extract_choice(text, letters)
        gold = gold_of(it, opts.answers)
        return {"pred": pred, "gold": gold, "correct": None if gold is None else pred == gold}


class McqKind(_GradedKind):
    """Multiple choice by log-likelihood: the option letter the model gives the highest log-probability."""

    name = "mcq"
    keyed = True
    generates = False
    prompt_form = None  # its pass ends with the reply prefix after the prompt

    def run_chunk(self, bench, engine, judge, items, opts):
        t0 = time.perf_counter()
        base = base_records(bench, items)
        letters = [_letters(it) for it in items]
        lps = engine.choice_logprobs(requests(items), letters)
        dt = (time.perf_counter() - t0) / len(items)
        out = []
        for b, it, ls, lp in zip(base, items, letters, lps):
            pred = ls[max(range(len(lp)), key=lp.__getitem__)]
            gold = gold_of(it, opts.answers)
            out.append({**b, "options": ls, "logprobs": lp, "pred": pred, "gold": gold,
                        "correct": None if gold is None else pred == gold, "gen_s": dt})
        return out


class NllKind(BaseKind):
    """Teacher-forced mean per-token NLL of each item's ``solution`` after its prompt."""

    name = "nll"
    generates = False
    prompt_form = "closed-think"

    def run_chunk(self, bench, engine, judge, items, opts):
        t0 = time.perf_counter()
        base = base_records(bench, items)
        nll = engine.target_nll(requests(items), [it.solution for it in items])
        dt = (time.perf_counter() - t0) / len(items)
        return [{**b, "nll": v, "gen_s": dt} for b, v in zip(base, nll)]

    def metrics(self, *, judge_sees_harm, has_gold):
        return M.MEAN_NLL


for _k in (RefusalKind(), OverrefusalKind(), McqKind(), McqGenKind(), MathKind(), NllKind()):
    register_kind(_k)

__all__ = ["BenchKind", "BaseKind", "ChunkOptions", "BENCH_KINDS", "register_kind", "get_kind", "base_records",
           "requests", "gold_of"]
