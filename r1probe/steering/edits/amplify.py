"""Directional amplification: ``W ← (I + β r̂ r̂ᵀ) W`` on the output projections of chosen layers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from r1probe.steering import edit as E
from r1probe.steering.edits.base import EditSettings, Fitted
from r1probe.settings import split_list
from r1probe.steering.plan import parse_layers


class AmplifySettings(EditSettings):
    """Settings of the amplify edit."""

    layers: str | list[int] = Field(description="Layers whose output projections are edited: 12, 8,10,12, "
                                                "8-15 or all (negative counts from the end).")
    beta: float = Field(description="Amplification strength: the written projection is scaled by 1 + beta.")
    writers: Annotated[list[Literal["attn", "mlp"]], BeforeValidator(split_list)] = Field(
        ["attn", "mlp"], description="Which output projections to edit.")


class Amplify:
    """Scale what the chosen layers write along the direction by ``1 + β`` (``edit.amplify``)."""

    name = "amplify"
    summary = "W <- (I + beta r r^T) W on the output projections of the chosen layers"

    Settings = AmplifySettings

    def fit(self, lm, directions, settings, *, log=print) -> Fitted:
        d = directions.get(settings.direction_key, lm.layout.d_model)
        layers = settings.layers
        return Fitted(settings, d, {"layers": parse_layers(layers, lm.layout.n_layers) if isinstance(layers, str)
                                    else list(layers)})

    def apply(self, lm, fitted: Fitted) -> dict:
        s = fitted.settings
        return E.amplify(lm, fitted.direction, fitted.data["layers"], s.beta, which=list(s.writers))
