"""Orthogonalisation (abliteration): ``W ← (I − r̂ r̂ᵀ) W`` on every write to the residual stream."""

from __future__ import annotations

from pydantic import Field

from r1probe.steering import edit as E
from r1probe.steering.edits.base import EditSettings, Fitted


class OrthogonalizeSettings(EditSettings):
    """Settings of the orthogonalize edit."""

    untie: bool = Field(True, description="With tied embeddings, give lm_head its own unedited copy first "
                                          "(as run-time ablation leaves the unembedding alone).")


class Orthogonalize:
    """Remove the direction from the embeddings and every attention/MLP output projection (``edit.orthogonalize``)."""

    name = "orthogonalize"
    summary = "remove the direction from every write to the residual stream (abliteration)"

    Settings = OrthogonalizeSettings

    def fit(self, lm, directions, settings, *, log=print) -> Fitted:
        return Fitted(settings, directions.get(settings.direction_key, lm.layout.d_model))

    def apply(self, lm, fitted: Fitted) -> dict:
        return E.orthogonalize(lm, fitted.direction, untie=fitted.settings.untie)
