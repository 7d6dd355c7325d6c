"""Judges: label a reply with CHiSafetyBench's four labels.

- ``keyword``: :class:`r1probe.eval.judges.keyword.KeywordJudge` (rule-based, zh + en).
- ``llm:SPEC`` / ``openai:URL#MODEL``: :mod:`r1probe.eval.judges.llm` (CHiSafetyBench's judge protocol).

:mod:`r1probe.eval.judges.refusal` is the refusal rule built on a judge (answer after ``</think>``,
unterminated reasoning its own outcome): :func:`judge_refusal`, :func:`refusal_flags`.

Use :func:`make_judge` to build one from its ``--judge`` string.
"""

from r1probe.eval.judges.keyword import KeywordJudge, classify, has_guidance, is_refusal
from r1probe.eval.judges.refusal import RefusalVerdict, judge_refusal, refusal_flags


def make_judge(spec: str, **kw):
    """Build a judge from ``keyword``, ``llm:MODEL_SPEC`` or ``openai:URL#MODEL``."""
    from r1probe.errors import R1ProbeError

    if spec in ("keyword", "kw"):
        return KeywordJudge()
    if spec.startswith("llm:") or spec.startswith("openai:"):
        from r1probe.eval.judges.llm import make_llm_judge

        return make_llm_judge(spec, **kw)
    raise R1ProbeError(f"--judge {spec!r}: expected keyword, llm:MODEL_SPEC or openai:URL#MODEL")


__all__ = ["KeywordJudge", "classify", "has_guidance", "is_refusal", "make_judge", "RefusalVerdict", "judge_refusal",
           "refusal_flags"]
