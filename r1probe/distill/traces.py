"""Reasoning traces in R1 format: ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.

A trace is one (question, reasoning, answer) triple. Builders:

- :func:`gsm8k_r1_traces`: GSM8K train (7,473 problems, MIT) with its worked solutions rewritten as the
  reasoning (calculator annotations ``<<48/2=24>>`` removed) and ``The answer is \\boxed{N}.`` as the answer;
  the question carries the same instruction suffix as the ``gsm8k`` benchmark.
- :func:`belle_r1_traces`: BELLE eval instructions (Chinese, ODC-By) whose ``std_answer`` is non-empty, outside
  the test split of ``builtin:zh-harmless`` (the over-refusal report part); the reasoning is written from the
  question and the reference answer's opening (see :func:`general_reasoning`), the answer is the reference.
- :func:`teacher_traces`: completions of a teacher model (through ``generate_texts``), split at
  ``</think>``; completions without a closed reasoning block or without an answer are dropped and counted.

Traces are stored as JSONL rows ``{"id", "prompt", "reasoning", "answer", "source"}``.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from r1probe.errors import DataError
from r1probe.provenance import atomic_write_text, sha256_json

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_CALC = re.compile(r"<<[^<>]*>>")


@dataclass
class Trace:
    """One training example: the user ``prompt`` and the assistant's ``reasoning`` and ``answer``."""

    prompt: str
    reasoning: str
    answer: str
    id: str = ""
    source: str = ""

    def reply(self) -> str:
        return r1_reply(self.reasoning, self.answer)


def r1_reply(reasoning: str, answer: str) -> str:
    """The assistant reply in R1 format: ``"<think>\\n" + reasoning + "\\n</think>\\n\\n" + answer``."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{answer.strip()}"


def traces_sha256(traces: Sequence[Trace]) -> str:
    """Hash of the traces' content (order matters), for provenance and resume checks."""
    return sha256_json([[t.prompt, t.reasoning, t.answer] for t in traces])


def gsm8k_solution_to_reasoning(solution: str) -> tuple[str, str]:
    """``(reasoning, final_number)`` from a GSM8K worked solution ``"...\\n#### N"``."""
    body, sep, final = solution.rpartition("####")
    if not sep:
        raise DataError("GSM8K solution without '#### N'")
    lines = [_CALC.sub("", ln).strip() for ln in body.strip().splitlines()]
    return "\n".join(ln for ln in lines if ln), final.strip().replace(",", "")


def _jsonl_fields(p: Path, what: str, fields, names: str):
    """``(line number, fields(row))`` of each non-blank JSON line of ``p``; one-line ``DataError`` on a missing
    file, a line that is not JSON or a row ``fields`` cannot read."""
    if not p.exists():
        raise DataError(f"{what} file not found: {p} (pass a path or set R1PROBE_DATA)")
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield n, fields(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{p}:{n}: not a {what} row with {names} ({e})") from e


def gsm8k_r1_traces(path: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> list[Trace]:
    """GSM8K train problems as R1 traces, shuffled with ``seed`` then cut to ``limit``.

    ``path``: a GSM8K ``train.jsonl`` (default ``<data root>/gsm8k/train.jsonl``, see
    ``r1probe.data.benchmarks.data_root``). The prompt is the question plus the benchmark's
    ``MATH_SUFFIX_EN`` so the student learns the format on the prompts it is evaluated with.
    """
    from r1probe.data.benchmarks import MATH_SUFFIX_EN, data_root

    p = Path(path) if path else data_root() / "gsm8k" / "train.jsonl"
    rows = []
    for n, (q, sol) in _jsonl_fields(p, "GSM8K", lambda r: (r["question"], r["answer"]), "question/answer"):
        reasoning, final = gsm8k_solution_to_reasoning(sol)
        rows.append(Trace(prompt=q.strip() + MATH_SUFFIX_EN,
                          reasoning="Let me solve this step by step.\n" + reasoning,
                          answer=f"The answer is \\boxed{{{final}}}.", id=f"gsm8k-train/{n - 1}",
                          source="gsm8k-train"))
    if not rows:
        raise DataError(f"{p}: no rows")
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


_SENTENCE_END = re.compile(r"(?<=[。！？!?\n])")
_CLAUSE_END = re.compile(r"(?<=[，。！？；：、,!?;:\n])")


def general_reasoning(question: str, answer: str, keypoint: str = "sentence", keypoint_chars: int = 120) -> str:
    """Reasoning of a general-instruction trace, written from the question and its reference answer::

        嗯，用户的问题是：「<question, lines joined, <= 60 characters>」。
        我先想一想要点：<the answer's first sentence or clause, <= keypoint_chars characters>
        好，我把这些整理成完整的回答。

    ``keypoint``: ``"sentence"`` (up to the first 。！？ or line break) or ``"clause"`` (up to the first
    punctuation mark of any kind), then cut to ``keypoint_chars``. A template, not a model's thoughts: it teaches
    the R1 reply shape (think, then answer) on everyday Chinese requests; the shorter the free text inside it,
    the less room a greedy decoder has to fall into a loop before ``</think>``.
    """
    if keypoint not in ("sentence", "clause"):
        raise ValueError(f"keypoint must be 'sentence' or 'clause', not {keypoint!r}")
    q = " ".join(ln.strip() for ln in question.strip().splitlines() if ln.strip())
    q = q if len(q) <= 60 else q[:60] + "……"
    split = _SENTENCE_END if keypoint == "sentence" else _CLAUSE_END
    first = split.split(answer.strip(), maxsplit=1)[0].strip()
    first = first.rstrip("，；：、,;:") if keypoint == "clause" else first
    first = first if len(first) <= keypoint_chars else first[:keypoint_chars] + "……"
    return f"嗯，用户的问题是：「{q}」。\n我先想一想要点：{first}\n好，我把这些整理成完整的回答。"


def belle_r1_traces(path: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0,
                    exclude_split: str | None = "test", keypoint: str = "sentence",
                    keypoint_chars: int = 120) -> list[Trace]:
    """BELLE eval instructions with a reference answer as R1 traces, shuffled with ``seed``, cut to ``limit``.

    ``path``: the BELLE ``eval_set.json`` (JSON Lines; default ``<data root>/belle_eval/eval_set.json``).
    Questions in ``exclude_split`` of the seeded prompt split (``r1probe.data.prompts.split_of``, seed 0, the
    split ``builtin:zh-harmless`` uses) are left out, so the zh-harmless report part is never trained on.
    Ids are the zh-harmless ids (``zh-harmless/belle-NNNN``, N the file line), so a tuning-read record of the
    traces is checked against that set's report part like any other. ``keypoint``, ``keypoint_chars``: see
    :func:`general_reasoning`.
    """
    from r1probe.data.benchmarks import data_root
    from r1probe.data.prompts import split_of

    p = Path(path) if path else data_root() / "belle_eval" / "eval_set.json"
    rows = []
    fields = lambda r: (str(r["question"]).strip(), str(r.get("std_answer") or "").strip())  # noqa: E731
    for n, (q, a) in _jsonl_fields(p, "BELLE eval", fields, "question/std_answer"):
        if not q or not a or (exclude_split and split_of(q, 0) == exclude_split):
            continue
        rows.append(Trace(prompt=q, reasoning=general_reasoning(q, a, keypoint, keypoint_chars), answer=a, id=f"zh-harmless/belle-{n - 1:04d}",
                          source="belle-eval"))
    if not rows:
        raise DataError(f"{p}: no rows with a reference answer")
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def teacher_traces(lm, prompts: Sequence[str], *, max_new_tokens: int = 1024, batch_size: int = 4,
                   do_sample: bool = False, temperature: float = 0.6, seed: int = 0, progress: bool = False,
                   ids: Sequence[str] | None = None, stats: dict | None = None) -> list[Trace]:
    """Traces written by a teacher ``lm`` (a ``LoadedModel``) for ``prompts``.

    Each prompt is rendered with the teacher's chat template and completed by ``generate_texts``;
    the completion is split at ``</think>``. Kept only when the reasoning block is closed and both the
    reasoning and the answer are non-empty (a teacher that does not think yields no traces).
    ``stats`` (a dict), when given, receives ``generated``, ``kept``, ``unterminated``, ``no_reasoning``, ``empty_answer``.
    """
    from r1probe.models.chat import split_reasoning
    from r1probe.models.generate import generate_texts

    texts = [lm.chat.format(p) for p in prompts]
    outs = generate_texts(lm, texts, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                          temperature=temperature, seed=seed, progress=progress, desc="teacher")
    counts = {"generated": len(outs), "kept": 0, "unterminated": 0, "no_reasoning": 0, "empty_answer": 0}
    kept = []
    for i, (p, o) in enumerate(zip(prompts, outs)):
        sp = split_reasoning(o, prompt_opened_think=lm.chat.thinks)
        if not sp.thought or not sp.reasoning:
            counts["no_reasoning"] += 1
        elif not sp.terminated:
            counts["unterminated"] += 1
        elif not sp.answer:
            counts["empty_answer"] += 1
        else:
            kept.append(Trace(prompt=p, reasoning=sp.reasoning, answer=sp.answer,
                              id=str(ids[i]) if ids is not None else str(i), source=f"teacher:{lm.spec.raw}"))
    counts["kept"] = len(kept)
    if stats is not None:
        stats.update(counts)
    return kept


def write_traces(path: str | os.PathLike, traces: Sequence[Trace]) -> None:
    """Write traces as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(asdict(t), ensure_ascii=False) + "\n" for t in traces))


def read_traces(path: str | os.PathLike, limit: int | None = None) -> list[Trace]:
    """Read JSONL traces: rows with ``prompt`` + ``reasoning`` + ``answer``, or ``prompt`` + ``completion``
    (an R1 reply, split at ``</think>``)."""
    from r1probe.models.chat import split_reasoning

    p = Path(path)
    if not p.exists():
        raise DataError(f"traces file not found: {p}")
    out = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not JSON ({e})") from e
            prompt = r.get("prompt") if isinstance(r, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise DataError(f"{p}:{n}: missing 'prompt'")
            if isinstance(r.get("reasoning"), str) and isinstance(r.get("answer"), str):
                reasoning, answer = r["reasoning"], r["answer"]
            elif isinstance(r.get("completion"), str):
                sp = split_reasoning(r["completion"])
                if not (sp.thought and sp.terminated):
                    raise DataError(f"{p}:{n}: completion has no closed <think>...</think> block")
                reasoning, answer = sp.reasoning, sp.answer
            else:
                raise DataError(f"{p}:{n}: needs 'reasoning' and 'answer', or an R1 'completion'")
            if not reasoning.strip() or not answer.strip():
                raise DataError(f"{p}:{n}: empty reasoning or answer")
            out.append(Trace(prompt=prompt, reasoning=reasoning, answer=answer, id=str(r.get("id", n - 1)),
                             source=str(r.get("source", ""))))
    if not out:
        raise DataError(f"{p}: no traces")
    return out[:limit] if limit else out
