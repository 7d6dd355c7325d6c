"""The objectives of the edit search: refusal of generated replies and the gold-solution NLL.

- refusal: greedy replies judged by the refusal rule (``r1probe.eval.judges.refusal.refusal_flags``,
  the keyword judge on the answer after ``</think>``; an unterminated reasoning is not a refusal);
- NLL: the mean over items of the teacher-forced NLL (nats/token) of the gold ``solution`` as the reply.
"""

from __future__ import annotations

from typing import Sequence

#: NLL batch size cap: full-vocabulary float32 logits of ``[batch, seq, V]`` dominate memory
NLL_BATCH = 1


def chat_texts(lm, items) -> list[str]:
    """Each item's text (``.text`` or ``str(item)``) formatted with the model's chat template."""
    return [lm.chat.format(it.text if hasattr(it, "text") else str(it)) for it in items]


def reply_refusals(lm, items, *, max_new_tokens: int, batch_size: int, plan=None) -> list[bool]:
    """Whether each item's greedy reply (under ``plan``, if given) is a refusal under the refusal rule."""
    from r1probe.eval.engines import plan_context
    from r1probe.eval.judges.refusal import refusal_flags
    from r1probe.models.generate import generate_texts

    if not items:
        return []
    with plan_context(lm, plan):
        outs = generate_texts(lm, chat_texts(lm, items), max_new_tokens=max_new_tokens, batch_size=batch_size)
    return refusal_flags(outs, prompt_opened_think=bool(lm.chat.thinks))


def mean_nll(lm, items, *, batch_size: int, plan=None) -> float:
    """Mean over items of the teacher-forced NLL (nats/token) of the gold ``solution`` as the reply."""
    from r1probe.eval.engines import HFEngine

    eng = HFEngine(lm, batch_size=max(1, min(batch_size, NLL_BATCH)), plan=plan)
    vals = eng.target_nll([(it.text, None) for it in items], [it.solution for it in items])
    return float(sum(vals) / len(vals))


def measure(lm, harmful: Sequence, border: Sequence, nll_items: Sequence, *, max_new_tokens: int,
            batch_size: int, plan=None) -> dict:
    """The objectives on the given items; harmful and borderline prompts share one generation pass.

    ``harm_refusal`` / ``border_refusal``: share of refused replies; ``nll``: :func:`mean_nll` (NaN
    without items).
    """
    flags = reply_refusals(lm, list(harmful) + list(border), max_new_tokens=max_new_tokens,
                           batch_size=batch_size, plan=plan)
    nh = len(harmful)
    fh, fb = flags[:nh], flags[nh:]
    return {"harm_refusal": sum(fh) / max(1, len(fh)), "border_refusal": sum(fb) / max(1, len(fb)),
            "nll": mean_nll(lm, nll_items, batch_size=batch_size, plan=plan) if nll_items else float("nan"),
            "n_harmful": len(fh), "n_border": len(fb), "n_nll": len(nll_items)}


__all__ = ["NLL_BATCH", "chat_texts", "reply_refusals", "mean_nll", "measure"]
