"""Run-time plans the searched edit is compared with: additive and CAST-conditional (arXiv 2409.05907)."""

from __future__ import annotations

from typing import Sequence

import torch

from r1probe.steering.transforms import unit
from r1probe.tuning.data import SearchData
from r1probe.tuning.directions import last_token_states


def cast_threshold(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """The threshold ``t`` on scores that maximises balanced accuracy
    ``½ (P(pos > t) + P(neg ≤ t))`` over the midpoints of the sorted scores."""
    cands = torch.cat([pos, neg]).sort().values
    mids = torch.cat([cands[:1] - 1, (cands[1:] + cands[:-1]) / 2, cands[-1:] + 1])
    best, thr = -1.0, float(mids[0])
    for m in mids.tolist():
        acc = 0.5 * float((pos > m).float().mean() + (neg <= m).float().mean())
        if acc > best:
            best, thr = acc, m
    return thr


def runtime_plans(lm, data: SearchData, dirs: dict, layer: int, *, batch_size: int = 16,
                  strengths: Sequence[float] = (1.0, 2.0), max_fit: int = 64) -> dict[str, object]:
    """Additive and CAST-conditional plans at ``layer`` for comparison with the edit.

    Both add ``α r̂`` (``r̂`` = unit harm direction, ``α = k · (μ_harmful − μ_harmless)·r̂``) at the input of
    block ``layer`` on every token; the conditional plan steers only prompts whose last-token projection
    on the harm-vs-borderline direction at the same layer exceeds a threshold fitted (balanced accuracy)
    on the *training/contrast* prompts (harmful vs borderline + harmless).
    """
    from r1probe.steering.plan import Condition, SteeringPlan

    r = unit(dirs[f"harm_L{layer}"])
    gap = float((dirs[f"mean_harmful_L{layer}"] - dirs[f"mean_harmless_L{layer}"]) @ r)
    hb = unit(dirs[f"hb_L{layer}"])
    n = max_fit
    pos = last_token_states(lm, data.harmful_train[:n], [layer], batch_size)[:, 0] @ hb
    neg = torch.cat([last_token_states(lm, data.border_contrast[:n], [layer], batch_size)[:, 0],
                     last_token_states(lm, data.harmless_train[:n], [layer], batch_size)[:, 0]]) @ hb
    thr = cast_threshold(pos, neg)
    plans = {}
    for k in strengths:
        a = k * gap
        plans[f"additive k={k:g}"] = SteeringPlan.add_at(layer, r, a, name=f"additive k={k:g}")
        cond = Condition(layer=layer, direction=hb, threshold=thr, metric="projection")
        plans[f"conditional k={k:g}"] = SteeringPlan.conditional_add(layer, r, a, condition=cond,
                                                                   name=f"conditional k={k:g}",
                                                                   meta={"threshold": thr, "k": k, "alpha": a})
    return plans


__all__ = ["cast_threshold", "runtime_plans"]
