"""False-refusal direction ablation (Wang et al. 2024, arXiv 2410.03415) in the weights.

The false-refusal direction at the input of block ``L`` (last prompt token) is ``b = μ_borderline − μ_harmless``:
borderline prompts are the first ``N`` CValues contrast prompts (sensitive but answerable; dev data), harmless
ones the harmless set's train split. It is orthogonalised against the refusal direction ``r̂`` of the probe folder,
``b' = b − (b·r̂) r̂``, so removing it leaves what the model writes along ``r̂`` alone, and then removed from every
write to the residual stream: ``W ← (I − b̂' b̂'ᵀ) W`` on the embeddings and every attention / MLP output projection
(``edit.orthogonalize`` with ``b̂'``). This equals the run-time plan ``SteeringPlan.ablate_everywhere(b̂')``.

Combined with a refusal-adding edit (the study's variant ``fr-ablate+rank1-gate``) it is the paper's recipe of
"add refusal where it belongs, remove the over-refusal feature".
"""

from __future__ import annotations

import torch
from pydantic import Field

from r1probe.errors import R1ProbeError
from r1probe.steering import edit as E
from r1probe.steering.edits.base import EditSettings, Fitted

METHOD = "false-refusal direction ablation (borderline - harmless, orthogonal to the refusal direction)"


class FrAblateSettings(EditSettings):
    """Settings of the fr-ablate edit."""

    layer: int = Field(12, description="Layer (block input) where the false-refusal direction is read "
                                       "(negative counts from the end).")
    borderline: int = Field(332, ge=1, description="The first N CValues borderline contrast prompts (dev data).")
    harmless_set: str = Field("builtin:zh-harmless", description="Harmless prompts (their train split).")
    data_root: str | None = Field(None, description="Shared data folder for the borderline prompts (default "
                                                    "$R1PROBE_DATA or ../shared/data).")
    seed: int = Field(0, description="Seed of the harmless set's train split.")
    untie: bool = Field(True, description="With tied embeddings, give lm_head its own unedited copy first.")
    batch_size: int = Field(16, ge=1, description="Batch size of the reading forwards.")


def false_refusal_direction(borderline: torch.Tensor, harmless: torch.Tensor, refusal: torch.Tensor) -> torch.Tensor:
    """``b' = b − (b·r̂) r̂`` with ``b = mean(borderline) − mean(harmless)`` (rows ``[n, d]``); float32 ``[d]``."""
    b = borderline.double().mean(0) - harmless.double().mean(0)
    r = refusal.double() / refusal.double().norm()
    return (b - (b @ r) * r).float()


class FrAblate:
    """Remove the false-refusal direction (orthogonal to the refusal one) from every residual write."""

    name = "fr-ablate"
    summary = ("remove the false-refusal direction (borderline - harmless, orthogonalised to the refusal direction) "
               "from every write to the residual stream")

    Settings = FrAblateSettings

    def fit(self, lm, directions, settings, *, log=print) -> Fitted:
        from r1probe.data.borderline import borderline_splits
        from r1probe.data.partitions import merge_reads, prompt_reads
        from r1probe.data.prompts import load_prompt_set
        from r1probe.extract.read import last_prompt_states

        s = settings
        n = lm.layout.n_layers
        layer = s.layer + n if s.layer < 0 else s.layer
        if not 0 <= layer < n:
            raise R1ProbeError(f"fr-ablate: layer {s.layer} is out of range for a model with {n} layers")
        r = directions.get(s.direction_key, lm.layout.d_model)
        safe = load_prompt_set(s.harmless_set, split="train", seed=s.seed).prompts
        border = borderline_splits(s.data_root, english_contrast=False)["contrast"][:s.borderline]
        log(f"reading {len(border)} borderline and {len(safe)} harmless prompts at layer {layer}")

        def states(texts):
            return last_prompt_states(lm, texts, [layer], s.batch_size)[:, 0]

        hb, hz = states([it.text for it in border]), states([p.text for p in safe])
        b = hb.double().mean(0) - hz.double().mean(0)
        fr = false_refusal_direction(hb, hz, r)
        cos = float(b @ r.double() / (b.norm() * r.double().norm()))
        ids = merge_reads(prompt_reads(s.harmless_set, [p.id for p in safe]), {"cvalues": [it.id for it in border]})
        return Fitted(s, fr, {"layer": layer, "cos_refusal": cos, "norm": float(fr.norm()),
                              "fit_data": f"borderline: CValues contrast split 1-{len(border)}; harmless: "
                                          f"{s.harmless_set} train split ({len(safe)}, seed {s.seed})",
                              "fit_ids": ids})

    def apply(self, lm, fitted: Fitted) -> dict:
        f = fitted.data
        rec = E.orthogonalize(lm, fitted.direction, untie=fitted.settings.untie)
        rec.update({"op": self.name, "method": METHOD, "direction_layer": f["layer"],
                    "cos_borderline_refusal": f["cos_refusal"], "norm": f["norm"], "fit_data": f["fit_data"],
                    "tuning_reads": f["fit_ids"]})
        return rec
