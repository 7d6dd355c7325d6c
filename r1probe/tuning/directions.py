"""Directions of the edit search: difference-in-means at the last prompt token, read by the activation reader.

For each layer ``L`` (the residual stream at the input of block ``L``), with class means ``μ``
(float64) over the training / contrast splits:

- ``harm_L`` = μ_harmful − μ_harmless (the refusal direction);
- ``border_L`` = μ_borderline − μ_harmless (the false-refusal direction, arXiv 2410.03415);
- ``hb_L`` = μ_harmful − μ_borderline (harm rather than topic sensitivity);
- ``orth_L`` = harm − (harm·b̂) b̂ with b̂ = unit(border);
- ``mean_<class>_L`` the class means (for plan strengths and CAST thresholds);
- ``probe``: a chosen direction of ``r1probe probe``, when given.
"""

from __future__ import annotations

from typing import Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.steering.transforms import unit
from r1probe.tuning.data import SearchData


def last_token_states(lm, items, layers: Sequence[int], batch_size: int = 16) -> torch.Tensor:
    """Residual stream ``x_L`` (input of block ``L``, HF ``hidden_states[L]``) at the last prompt token
    (the last post-instruction token) of each item: ``[N, len(layers), d]`` float32
    (:func:`r1probe.extract.read.last_prompt_states` on the items' texts)."""
    from r1probe.extract.read import last_prompt_states

    return last_prompt_states(lm, [it.text if hasattr(it, "text") else str(it) for it in items], layers, batch_size)


def diff_directions(states: dict[str, torch.Tensor], layers: Sequence[int]) -> dict[str, torch.Tensor]:
    """Difference-in-means directions per layer (see the module doc) from ``states[class]`` ``[N, L, d]``
    for the classes ``harmful``, ``harmless`` and ``borderline``."""
    mu = {k: v.double().mean(0) for k, v in states.items()}
    out = {}
    for j, L in enumerate(layers):
        h, z, b = mu["harmful"][j], mu["harmless"][j], mu["borderline"][j]
        harm, border = h - z, b - z
        bh = border / border.norm().clamp_min(1e-12)
        out[f"harm_L{L}"] = harm.float()
        out[f"border_L{L}"] = border.float()
        out[f"hb_L{L}"] = (h - b).float()
        out[f"orth_L{L}"] = (harm - (harm @ bh) * bh).float()
        for k in mu:
            out[f"mean_{k}_L{L}"] = mu[k][j].float()
    for k, v in out.items():
        if not torch.isfinite(v).all() or float(v.norm()) == 0.0:
            raise R1ProbeError(f"edit-search: direction {k} is zero or not finite (degenerate prompts or layer?)")
    return out


def compute_directions(lm, data: SearchData, layers: Sequence[int], *, batch_size: int = 16,
                       probe_direction: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Directions of :func:`diff_directions` from the training/contrast splits (plus ``probe`` if given)."""
    layers = [int(x) for x in layers]
    n = lm.layout.n_layers
    bad = [x for x in layers if not 0 <= x < n]
    if bad:
        raise R1ProbeError(f"edit-search: direction layers {bad} out of range 0..{n - 1}")
    states = {"harmful": last_token_states(lm, data.harmful_train, layers, batch_size),
              "harmless": last_token_states(lm, data.harmless_train, layers, batch_size),
              "borderline": last_token_states(lm, data.border_contrast, layers, batch_size)}
    out = diff_directions(states, layers)
    if probe_direction is not None:
        out["probe"] = probe_direction.float().reshape(-1)
    return out


def direction_for(dirs: dict, kind: str, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r̂, b̂)``: the unit direction to amplify and the borderline direction orthogonalised against it."""
    key = "probe" if kind == "probe" else f"{kind}_L{layer}"
    if key not in dirs:
        raise R1ProbeError(f"edit-search: no direction {key!r}")
    r = unit(dirs[key].float())
    b = dirs[f"border_L{layer}"].float()
    b = b - (b @ r) * r
    return r, unit(b)


__all__ = ["last_token_states", "diff_directions", "compute_directions", "direction_for"]
