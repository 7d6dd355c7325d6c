"""Steering transforms as pure tensor functions (never in place).

Every function takes hidden states ``h`` of shape ``[..., d]`` and a direction ``d`` of
shape ``[d]`` and returns a *new* tensor of ``h``'s dtype and shape. The direction is
normalised inside (``d̂ = d / ‖d‖``); projections are computed in float32 so that
bfloat16 activations lose nothing beyond the final cast.

Invariants (tested in ``tests/test_steering_transforms.py``):

- ``add(h, d, 0) == h``; ``proj(add(h, d, a), d) == proj(h, d) + a``
- ``proj(ablate(h, d), d) == 0`` and ``ablate(ablate(h, d), d) == ablate(h, d)`` (idempotent)
- ``proj(clamp(h, d, v), d) == v``; ``clamp(h, d, 0) == ablate(h, d)``
- ``proj(amplify(h, d, b), d) == (1 + b) proj(h, d)``; ``amplify(h, d, -1) == ablate(h, d)``
- the component of ``h`` orthogonal to ``d̂`` is left unchanged by all three.

The registry ``TRANSFORMS`` names the transforms a steering plan can use (``SteeringStep.op``):
plan validation, the hook runtime and ``r1probe steer --op`` all read it. A transform's parameters
are fields of its plan step (``PARAMS``: ``alpha``, a strength, and ``value``, a target projection).
Adding one is a module with the pure function plus one ``register_transform`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

import torch

from r1probe.errors import R1ProbeError

_EPS = 1e-12


def unit(d: torch.Tensor) -> torch.Tensor:
    """``d̂ = d / ‖d‖`` in float32; a zero (or non-finite) direction raises a one-line error."""
    d32 = d.detach().reshape(-1).float()
    n = torch.linalg.vector_norm(d32)
    if not torch.isfinite(n) or float(n) <= _EPS:
        raise R1ProbeError(f"degenerate steering direction (norm {float(n):.3g}): cannot normalise it")
    return d32 / n


def _check(h: torch.Tensor, d: torch.Tensor) -> None:
    if d.numel() != h.shape[-1]:
        raise R1ProbeError(f"direction has {d.numel()} entries but the hidden states have size {h.shape[-1]}")


def projection(h: torch.Tensor, d: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
    """Scalar projection ``h · d̂`` over the last axis, in float32 (shape ``h.shape[:-1]``)."""
    _check(h, d)
    u = d.float() if normalized else unit(d)
    return h.float() @ u.to(h.device)


def add(h: torch.Tensor, d: torch.Tensor, alpha: float, *, normalized: bool = False) -> torch.Tensor:
    """Activation addition: ``h' = h + α d̂``."""
    _check(h, d)
    u = d.float() if normalized else unit(d)
    return (h.float() + float(alpha) * u.to(h.device)).to(h.dtype)


def ablate(h: torch.Tensor, d: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
    """Directional ablation: ``h' = h − (h · d̂) d̂`` (idempotent; ``h' · d̂ = 0``)."""
    _check(h, d)
    u = (d.float() if normalized else unit(d)).to(h.device)
    h32 = h.float()
    return (h32 - (h32 @ u).unsqueeze(-1) * u).to(h.dtype)


def clamp(h: torch.Tensor, d: torch.Tensor, value: float, *, normalized: bool = False) -> torch.Tensor:
    """Clamp the projection to a target: ``h' = h + (v − h · d̂) d̂`` (so ``h' · d̂ = v``).

    ``v`` is typically the mean projection of harmful prompts (to induce refusal) or of
    harmless prompts (to remove it); ``v = 0`` is directional ablation.
    """
    _check(h, d)
    u = (d.float() if normalized else unit(d)).to(h.device)
    h32 = h.float()
    return (h32 + (float(value) - h32 @ u).unsqueeze(-1) * u).to(h.dtype)


def amplify(h: torch.Tensor, d: torch.Tensor, beta: float, *, normalized: bool = False) -> torch.Tensor:
    """Directional amplification: ``h' = h + β (h · d̂) d̂`` (the projection is scaled by ``1 + β``).

    ``β = −1`` is ablation. At an ``attn_out``/``mlp_out`` site it equals the weight edit
    ``W ← (I + β d̂ d̂ᵀ) W`` of that output projection.
    """
    _check(h, d)
    u = (d.float() if normalized else unit(d)).to(h.device)
    h32 = h.float()
    return (h32 + float(beta) * (h32 @ u).unsqueeze(-1) * u).to(h.dtype)


# ---- conditional steering (CAST-style gates) ------------------------------------------------

def gate_scores(h_rows: torch.Tensor, d: torch.Tensor, metric: str = "projection") -> torch.Tensor:
    """Per-row condition score of pooled prompt states ``h_rows`` ``[B, d]``.

    ``projection``: ``h · d̂``; ``cosine``: ``h · d / (‖h‖ ‖d‖)``; ``dot``: ``h · d`` with the raw
    (unnormalised) vector, so a logistic probe ``w·h + b > 0`` is ``dot`` with threshold ``−b``.
    """
    _check(h_rows, d)
    h32, d32 = h_rows.float(), d.detach().float().reshape(-1).to(h_rows.device)
    if metric == "projection":
        return h32 @ unit(d32)
    if metric == "dot":
        return h32 @ d32
    if metric == "cosine":
        return (h32 @ unit(d32)) / torch.linalg.vector_norm(h32, dim=-1).clamp_min(_EPS)
    raise R1ProbeError(f"unknown gate metric {metric!r}: choose projection, cosine or dot")


def gate(scores: torch.Tensor, threshold: float, above: bool = True) -> torch.Tensor:
    """Boolean gate per row: ``score > threshold`` (or ``<`` when ``above`` is False)."""
    return scores > threshold if above else scores < threshold


def pool(h: torch.Tensor, position: int | str = -1, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Pool ``h`` ``[B, T, d]`` to ``[B, d]`` for a gate.

    An int picks that token (negative offsets count from the end, which under left padding is the
    last real token of every row); ``"mean"`` averages the tokens where ``valid`` ``[B, T]`` is true.
    """
    if isinstance(position, int):
        return h[:, position]
    if position == "mean":
        if valid is None:
            return h.float().mean(dim=1)
        w = valid.to(torch.float32).unsqueeze(-1)
        return (h.float() * w).sum(1) / w.sum(1).clamp_min(1.0)
    raise R1ProbeError(f"gate position {position!r}: an int offset or 'mean'")


def where_rows(h_new: torch.Tensor, h: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Take ``h_new`` on rows where ``rows`` ``[B]`` is true and ``h`` elsewhere (a new tensor)."""
    return torch.where(rows.view(-1, *([1] * (h.dim() - 1))).to(h.device), h_new, h)


def scale_rows(h_new: torch.Tensor, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A graded gate: ``h + w_b (h_new − h)`` per row ``b`` (``weights`` ``[B]``; 0 keeps ``h``, 1 takes ``h_new``)."""
    w = weights.float().view(-1, *([1] * (h.dim() - 1))).to(h.device)
    h32 = h.float()
    return (h32 + w * (h_new.float() - h32)).to(h.dtype)


def where_tokens(h_new: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Take ``h_new`` at tokens where ``mask`` (``[B, T]`` or ``[1, T]``) is true and ``h`` elsewhere."""
    return torch.where(mask.unsqueeze(-1).to(h.device), h_new, h)


# ---- the registry of steering transforms ----------------------------------------------------

#: the parameters a plan step can carry, with what they mean (step field -> help)
PARAMS = {"alpha": "the strength", "value": "the target projection"}


@runtime_checkable
class Transform(Protocol):
    """A steering transform: a pure function of hidden states ``h`` ``[..., d]`` and a direction ``d``.

    ``apply(h, d, normalized=False, **params)`` returns a *new* tensor of ``h``'s shape and dtype;
    ``normalized=True`` says ``d`` is already the float32 unit vector (the runtime normalises once).
    ``params`` names the plan-step fields it takes (a subset of ``PARAMS``), passed as keywords.
    """

    name: str
    params: tuple[str, ...]
    summary: str

    def apply(self, h: torch.Tensor, d: torch.Tensor, *, normalized: bool = False, **params) -> torch.Tensor:
        ...


@dataclass(frozen=True)
class FunctionTransform:
    """A ``Transform`` from a pure function ``fn(h, d, *params, normalized=False)`` (params in order)."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: tuple[str, ...] = ()
    summary: str = ""

    def apply(self, h: torch.Tensor, d: torch.Tensor, *, normalized: bool = False, **params) -> torch.Tensor:
        return self.fn(h, d, *(params[p] for p in self.params), normalized=normalized)


TRANSFORMS: dict[str, Transform] = {}


def register_transform(t: Transform) -> Transform:
    """Add ``t`` to ``TRANSFORMS`` (its name must be new and its params fields of a plan step)."""
    for attr in ("name", "params", "summary", "apply"):
        if not hasattr(t, attr):
            raise R1ProbeError(f"steering transform {t!r} has no {attr}")
    if t.name in TRANSFORMS:
        raise R1ProbeError(f"steering transform {t.name!r} is already registered")
    bad = [p for p in t.params if p not in PARAMS]
    if bad:
        raise R1ProbeError(f"steering transform {t.name!r}: parameters {bad} are not step fields "
                           f"({', '.join(PARAMS)})")
    TRANSFORMS[t.name] = t
    return t


def get_transform(name: str) -> Transform:
    """The registered transform ``name``; an unknown name raises one line listing the choices."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):
        raise R1ProbeError(f"steering op {name!r}: choose one of {', '.join(TRANSFORMS)}") from None


register_transform(FunctionTransform("add", add, ("alpha",), "h + alpha d^ (activation addition)"))
register_transform(FunctionTransform("ablate", ablate, (), "h - (h.d^) d^ (directional ablation)"))
register_transform(FunctionTransform("clamp", clamp, ("value",), "h + (value - h.d^) d^ (projection set to value)"))
register_transform(FunctionTransform("amplify", amplify, ("alpha",),
                                     "h + alpha (h.d^) d^ (projection scaled by 1 + alpha)"))
