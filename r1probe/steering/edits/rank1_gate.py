"""The rank-one read/write edit (AlphaSteer-style): ``W_L ← W_L + λ r̂ aᵀ`` with a fitted read vector ``a``.

``a`` is fitted (``edit.fit_read_vector``) so that ``a·z ≈ 1`` at the post-instruction tokens of
harmful prompts and ``a·z ≈ 0`` on every token of benign texts (harmless prompts, maths solutions,
optionally borderline prompts), with ``z`` the input of layer ``L``'s output projection. The block
then writes ``λ (a·z) r̂``: about ``λ r̂`` where the model reads a harmful request, about nothing on
benign text, a linear per-token gate approximating the conditional plan "add ``λ r̂`` at this layer
on harmful prompts" (CAST). Fit data: ``steering.fit_data`` (built-in splits by default, or files).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from r1probe.steering import edit as E
from r1probe.steering.directions import check_size
from r1probe.steering.edits.base import Fitted, ReadFitSettings
from r1probe.steering.fit_data import FitData

METHOD = "rank-1 read/write (AlphaSteer-style, null space of benign tokens)"


class Rank1GateSettings(ReadFitSettings):
    """Settings of the rank1-gate edit."""

    layer: int = Field(12, description="The one layer whose output projection is edited "
                                       "(negative counts from the end).")
    lam: float = Field(20.0, description="Strength of the rank-one write (lambda).")
    writer: Literal["attn", "mlp"] = Field("mlp", description="Which output projection of the layer to edit.")
    fit_seed: int | None = Field(None, description="Fit on a seeded subsample (fit_fraction of each part) of the "
                                                   "built-in fit data; unset: all of it.")
    fit_fraction: float = Field(0.8, gt=0, le=1, description="Share of each fit-data part kept with fit_seed.")
    post_tokens: int | None = Field(None, ge=1, description="Harmful rows per prompt: its last N tokens "
                                                            "(default: the template's post-instruction tokens).")
    batch_size: int = Field(16, ge=1, description="Batch size of the fitting forwards.")

    @model_validator(mode="after")
    def _fit_seed_files(self):
        if self.harmful and self.fit_seed is not None:
            raise ValueError("--fit-seed subsamples the default fit data; subsample your --harmful/--benign files "
                             "instead")
        return self


class Rank1Gate:
    """``W_L ← W_L + λ r̂ aᵀ`` on one output projection, ``a`` fitted on harmful vs benign activations."""

    name = "rank1-gate"
    summary = "W_L <- W_L + lam r a^T, a read vector a fitted to fire on harmful prompts and stay silent on benign text"

    Settings = Rank1GateSettings

    def fit(self, lm, directions, settings, *, log=print) -> Fitted:
        s = settings
        d = directions.get(s.direction_key, lm.layout.d_model)
        fit = s.fit_data(lm, fit_seed=s.fit_seed, fit_fraction=s.fit_fraction)
        log(f"fitting the read vector on {len(fit.harmful)} harmful prompts and {len(fit.benign)} benign texts")
        return fit_read(lm, d, fit, s)

    def apply(self, lm, fitted: Fitted) -> dict:
        s, f = fitted.settings, fitted.data
        rec = E.rank1(lm, fitted.direction, s.layer, f["read"], s.lam, writer=s.writer)
        rec.update({"op": self.name, "method": METHOD, "n_harmful": f["n_harmful"], "post_tokens": f["post_tokens"],
                    "n_benign_tokens": f["n_benign_tokens"], "ridge": s.ridge, "null_energy": s.null_energy,
                    "fit_harmful_mean": f["fit_harmful_mean"], "fit_benign_rms": f["fit_benign_rms"]})
        rec["fit_data"] = f["fit_data"]
        rec["tuning_reads"] = f.get("fit_ids") or {}  # the export moves it to its manifest's tuning_reads
        return rec


@torch.no_grad()
def fit_read(lm, direction: torch.Tensor, fit: FitData, settings) -> Fitted:
    """Fit the read vector ``a`` on ``fit`` (harmful prompts vs benign token lists) at ``settings.layer``.

    Harmful rows: the writer's inputs at each harmful prompt's last ``post_tokens`` tokens; benign:
    the Gram matrix ``G = Σ z zᵀ`` over every benign token. Also returns the fit's diagnostics:
    ``mean(a·z)`` on the harmful rows and ``sqrt(aᵀ G a / n)`` on the benign tokens.
    """
    s = settings
    check_size(direction, lm.layout.d_model)
    post_tokens = s.post_tokens
    if post_tokens is None:
        post_tokens = max(1, len(lm.chat.post_instruction_positions(lm.chat.format("x"), "x")))
    pos = E.writer_inputs(lm, s.layer, [lm.chat.encode(lm.chat.format(p)) for p in fit.harmful], writer=s.writer,
                          last=post_tokens, batch_size=s.batch_size)
    G, n = E.writer_inputs(lm, s.layer, fit.benign, writer=s.writer, gram=True, batch_size=s.batch_size)
    a = E.fit_read_vector(pos, neg_gram=G, ridge=s.ridge, null_energy=s.null_energy)
    gn = max(0.0, float((a.double() @ G @ a.double()) / max(n, 1))) ** 0.5  # G is PSD up to rounding
    return Fitted(s, direction, {"read": a, "n_harmful": len(fit.harmful), "post_tokens": post_tokens,
                                 "n_benign_tokens": n, "fit_harmful_mean": float((pos @ a).mean()),
                                 "fit_benign_rms": gn, "fit_data": fit.description, "fit_ids": fit.ids})
