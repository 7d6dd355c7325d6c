"""Judges: label a reply with CHiSafetyBench's four labels.

- ``keyword``: :class:`r1probe.eval.judges.keyword.KeywordJudge` (rule-based, zh + en).
- ``trained``: :class:`r1probe.eval.judges.trained.TrainedJudge` (character n-gram classifier fitted on
  the development part of the labelled judge set, shipped as JSON).
- ``llm:SPEC`` / ``openai:URL#MODEL``: :mod:`r1probe.eval.judges.llm` (CHiSafetyBench's judge protocol).
- ``default``: :data:`DEFAULT_JUDGE`, chosen on the frozen test part of the judge set
  (:func:`r1probe.eval.judges.agreement.judge_agreement` gives every judge's figures).

:mod:`r1probe.eval.judges.refusal` is the refusal rule built on a judge (answer after ``</think>``,
unterminated reasoning its own outcome): :func:`judge_refusal`, :func:`refusal_flags`.

Use :func:`make_judge` to build one from its ``--judge`` string.
"""

from r1probe.eval.judges.keyword import KeywordJudge, classify, has_guidance, is_degenerate, is_refusal
from r1probe.eval.judges.refusal import DEFAULT_JUDGE, RefusalVerdict, judge_refusal, refusal_flags


def make_judge(spec: str, **kw):
    """Build a judge from ``keyword``, ``trained``, ``default``, ``llm:MODEL_SPEC`` or ``openai:URL#MODEL``."""
    from r1probe.errors import R1ProbeError

    if spec == "default":
        spec = DEFAULT_JUDGE
    if spec in ("keyword", "kw"):
        return KeywordJudge()
    if spec == "trained":
        from r1probe.eval.judges.trained import TrainedJudge

        return TrainedJudge(kw.get("path"))
    if spec.startswith("llm:") or spec.startswith("openai:"):
        from r1probe.eval.judges.llm import make_llm_judge

        return make_llm_judge(spec, **kw)
    raise R1ProbeError(f"--judge {spec!r}: expected keyword, trained, default, llm:MODEL_SPEC or openai:URL#MODEL")


__all__ = ["KeywordJudge", "classify", "has_guidance", "is_degenerate", "is_refusal", "make_judge", "RefusalVerdict",
           "judge_refusal", "refusal_flags", "DEFAULT_JUDGE"]
