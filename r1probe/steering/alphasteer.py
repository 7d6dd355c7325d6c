"""AlphaSteer (Sheng et al. 2025, arXiv 2506.07022) as published: steering learned in the null space of benign
activations, a run-time plan.

At each steered layer ``L`` (residual stream ``x_L``, the input of block ``L``), with benign activations ``B``
``[n_b, d]`` (harmless and borderline prompts at their last prompt token), harmful activations ``H`` ``[n_h, d]``
and the refusal vector ``r = μ_harmful − μ_harmless`` (all at layer ``L``):

- ``P = Q Qᵀ``, ``Q`` the right singular vectors of ``Bᵀ B`` with the ``⌊ρ d⌋`` smallest singular values (the
  approximate null space of the benign activations; ``ρ`` the null-space ratio);
- ``Δ̃ = (Xᵀ X + γ Pᵀ P)⁺ Xᵀ R`` with ``X = H P`` and ``R = 1 rᵀ`` (every harmful row should map to ``r``; ``γ``
  the ridge);
- the steering matrix ``Δ = P Δ̃``: the published model adds ``s = λ x_last Δ`` to every prompt token at block
  ``L``'s input (``x_last``: the prompt's last token there) and adds nothing while decoding.

``R`` has rank one, so ``Δ̃ = w rᵀ`` with ``w = (Xᵀ X + γ P)⁺ Xᵀ 1`` and ``Δ = a rᵀ`` with the read vector
``a = P w``: ``s = λ (a·x_last) r``. That is a graded conditional addition
(``Condition(direction=a, metric="dot", scale=True)`` on a step ``add`` of ``r̂`` with ``α = λ ‖r‖`` on prompt
tokens), the plan :func:`alphasteer_plan` builds. It is a run-time plan only: ``s`` depends on the prompt's last
token and is written at every prompt position before it, which no causal layer of a stock checkpoint computes;
the per-token approximation in the weights is the ``rank1-gate`` edit.

Fit data (:func:`fit_states`): the train splits of the built-in harmful and harmless sets, the first ``N``
CValues borderline *contrast* prompts and, optionally, the whole dev part of other benches (``extra_benign``,
e.g. OR-Bench-Hard and XSTest-safe: prompts that look harmful and are not); all dev data, disjoint from every
report part. ``fit_seed=K`` keeps a seeded share (``fit_fraction``) of each part
(:func:`r1probe.steering.fit_data.subsample`): refits on such subsamples measure how much the plan varies with
its fit data. The ids read are returned for the run's tuning record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from typing import Annotated

from pydantic import BeforeValidator, Field

from r1probe.errors import R1ProbeError
from r1probe.settings import Settings, split_list

METHOD = "AlphaSteer (null-space-constrained learned steering, run time)"


class AlphaSteerSettings(Settings):
    """Settings of the AlphaSteer plan: its layers, null space, ridge, strength and fit data."""

    layers: str = Field("6-16", description="Steered layers (block inputs): 12, 8,10,12, 8-15 or all.")
    strength: float = Field(0.3, description="lambda of s = lambda (a.x_last) r at every steered layer.")
    null_ratio: float = Field(0.5, gt=0, lt=1, description="Share of the model width kept as the benign null space "
                                                           "(the smallest singular directions).")
    ridge: float = Field(10.0, ge=0, description="gamma of the regularised fit (X^T X + gamma P)^+ X^T 1.")
    harmful_set: str = Field("builtin:zh-harmful", description="Harmful prompts (their train split).")
    harmless_set: str = Field("builtin:zh-harmless", description="Harmless prompts (their train split).")
    borderline: int = Field(332, ge=0, description="Also keep silent on the first N CValues borderline contrast "
                                                  "prompts (dev data).")
    extra_benign: Annotated[list[str], BeforeValidator(split_list)] = Field(
        [], description="Benches whose whole dev part also joins the benign null space (e.g. or-bench,xstest-safe: "
                        "prompts that look harmful and are not; never a report-only bench).")
    data_root: str | None = Field(None, description="Shared data folder for the borderline prompts (default "
                                                    "$R1PROBE_DATA or ../shared/data).")
    seed: int = Field(0, description="Seed of the prompt sets' train split.")
    fit_seed: int | None = Field(None, description="Fit on a seeded subsample (fit_fraction of each part) of the "
                                                   "fit data (r1probe.steering.fit_data.subsample).")
    fit_fraction: float = Field(0.8, gt=0, le=1, description="Share of each fit-data part kept with fit_seed.")
    batch_size: int = Field(16, ge=1, description="Batch size of the fitting forwards.")


def null_space_projector(benign: torch.Tensor, ratio: float) -> torch.Tensor:
    """``P = Q Qᵀ``: ``Q`` the ``⌊ratio · d⌋`` right singular vectors of ``Bᵀ B`` with the smallest singular
    values (``benign`` ``B`` ``[n, d]``); float64 ``[d, d]``."""
    d = benign.shape[-1]
    k = int(d * ratio)
    if not 0 < k <= d:
        raise R1ProbeError(f"AlphaSteer: null-space ratio {ratio} keeps {k} of {d} dimensions")
    b = benign.double()
    _, _, vh = torch.linalg.svd(b.T @ b)
    q = vh[-k:].T
    return q @ q.T


def read_vector(harmful: torch.Tensor, proj: torch.Tensor, ridge: float) -> torch.Tensor:
    """``a = P (Xᵀ X + γ P)⁺ Xᵀ 1`` with ``X = H P`` (``harmful`` ``H`` ``[n, d]``, ``proj`` ``P``): the read vector
    of the steering matrix ``Δ = a rᵀ`` (float64 ``[d]``)."""
    p = proj.double()
    x = harmful.double() @ p
    w = torch.linalg.pinv(x.T @ x + float(ridge) * (p.T @ p)) @ x.sum(0)
    return p @ w


@dataclass
class FitStates:
    """Last-prompt-token states ``[n, len(layers), d]`` of the fit data and the ids read."""

    layers: list[int]
    harmful: torch.Tensor
    harmless: torch.Tensor
    borderline: torch.Tensor  # the borderline prompts, then any extra benign ones
    description: str
    ids: dict = field(default_factory=dict)


def fit_states(lm, settings: AlphaSteerSettings, layers: list[int]) -> FitStates:
    """Read the fit data's residual streams at the inputs of ``layers`` (last prompt token)."""
    from r1probe.data.partitions import merge_reads, prompt_reads
    from r1probe.data.prompts import load_prompt_set
    from r1probe.extract.read import last_prompt_states
    from r1probe.steering.fit_data import extra_benign_prompts, seeded_keep

    s = settings
    keep = seeded_keep(s.fit_seed, s.fit_fraction)
    harm = keep(load_prompt_set(s.harmful_set, split="train", seed=s.seed).prompts, lambda p: p.id)
    safe = keep(load_prompt_set(s.harmless_set, split="train", seed=s.seed).prompts, lambda p: p.id)
    border = []
    if s.borderline:
        from r1probe.data.borderline import borderline_splits

        border = keep(borderline_splits(s.data_root, english_contrast=False)["contrast"][:s.borderline],
                      lambda it: it.id)

    extra, extra_ids = extra_benign_prompts(s.extra_benign, s.data_root, s.seed, keep=keep)

    def states(texts):
        return last_prompt_states(lm, texts, layers, s.batch_size)

    ids = merge_reads(prompt_reads(s.harmful_set, [p.id for p in harm]),
                      prompt_reads(s.harmless_set, [p.id for p in safe]),
                      {"cvalues": [it.id for it in border]} if border else {}, extra_ids)
    desc = (f"harmful: {s.harmful_set} train split ({len(harm)}); benign: {s.harmless_set} train split "
            f"({len(safe)})" + (f" + CValues borderline contrast split 1-{len(border)}" if border else "")
            + (f" + the dev parts of {', '.join(s.extra_benign)} ({len(extra)})" if extra else "")
            + f"; split seed {s.seed}"
            + ("" if s.fit_seed is None else f"; fit subsample: {s.fit_fraction:g} of each part, seed {s.fit_seed}"))
    return FitStates(list(layers), states([p.text for p in harm]), states([p.text for p in safe]),
                     states([it.text for it in border] + extra), desc, ids)


def fit(states: FitStates, settings: AlphaSteerSettings) -> dict:
    """Per layer: the refusal vector ``r``, the read vector ``a`` and the fit's diagnostics (``a·x`` on the
    harmful rows, which the fit drives towards 1, and on the benign rows, towards 0)."""
    out = {}
    benign = torch.cat([states.harmless, states.borderline])
    for j, L in enumerate(states.layers):
        h, z, b = states.harmful[:, j].double(), states.harmless[:, j].double(), benign[:, j].double()
        r = h.mean(0) - z.mean(0)
        a = read_vector(h, null_space_projector(b, settings.null_ratio), settings.ridge)
        out[L] = {"r": r.float(), "a": a.float(), "harmful_read": float((h @ a).mean()),
                  "benign_read_rms": float((b @ a).pow(2).mean().sqrt()),
                  "borderline_read_mean": float((states.borderline[:, j].double() @ a).mean())
                  if len(states.borderline) else None}
    return out


def plan_from_fit(fitted: dict, strength: float, **meta):
    """The AlphaSteer plan: at each layer ``L``, add ``λ (a_L·x_last) r_L`` to the prompt tokens at block ``L``'s
    input (a graded condition read at the same input, so earlier layers' steering is seen)."""
    from r1probe.steering.plan import Condition, SteeringPlan, SteeringStep

    steps = []
    for L, f in sorted(fitted.items()):
        cond = Condition(layer=L, direction=f["a"], threshold=None, position=-1, metric="dot", scale=True)
        steps.append(SteeringStep("add", (L,), f["r"], alpha=float(strength) * float(f["r"].double().norm()),
                                  tokens="prompt", site="resid_pre", condition=cond))
    return SteeringPlan(steps, name="alphasteer", meta={"method": METHOD, **meta})


def steered_layers(lm, settings: AlphaSteerSettings) -> list[int]:
    """The settings' layers as sorted block indices of ``lm`` (negative ones count from the end)."""
    from r1probe.steering.plan import parse_layers

    n = lm.layout.n_layers
    layers = sorted({L + n if L < 0 else L for L in parse_layers(settings.layers, n)})
    bad = [L for L in layers if not 0 <= L < n]
    if bad:
        raise R1ProbeError(f"AlphaSteer: layers {bad} out of range 0..{n - 1}")
    return layers


def alphasteer_plan(lm, settings: AlphaSteerSettings | dict | None = None, *, states: FitStates | None = None,
                    log=print):
    """Fit AlphaSteer on ``lm`` and return ``(plan, record)``; ``record`` holds the settings, the fit data, the
    ids it read (``tuning_reads``) and per-layer diagnostics. ``states``: the fit data's activations read
    before (:func:`fit_states` at :func:`steered_layers`), for several fits on the same data."""
    s = settings if isinstance(settings, AlphaSteerSettings) else AlphaSteerSettings(**(settings or {}))
    if states is None:
        layers = steered_layers(lm, s)
        log(f"AlphaSteer: reading the fit data at layers {layers[0]}-{layers[-1]}")
        states = fit_states(lm, s, layers)
    st = states
    log(f"AlphaSteer: fitting {len(st.layers)} layers on {len(st.harmful)} harmful and "
        f"{len(st.harmless) + len(st.borderline)} benign prompts")
    fitted = fit(st, s)
    diag = {str(L): {k: v for k, v in f.items() if k not in ("r", "a")} for L, f in fitted.items()}
    record = {"method": METHOD, "settings": s.model_dump(), "fit_data": st.description, "layers": diag,
              "tuning_reads": st.ids}
    plan = plan_from_fit(fitted, s.strength, settings=s.model_dump(), fit_data=st.description)
    return plan, record


__all__ = ["AlphaSteerSettings", "null_space_projector", "read_vector", "fit_states", "fit", "plan_from_fit",
           "steered_layers", "alphasteer_plan", "METHOD"]
