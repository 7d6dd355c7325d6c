"""The searched weight edit: a depth kernel of amplifications on the matrices that write to the residual stream.

On ``o_proj`` / ``down_proj`` (``W`` ``[d, k]``) of the layers the kernel touches::

    W_i ← (I + β_i r̂ r̂ᵀ − λ b̂ b̂ᵀ) W_i,     β_i = β · exp(−(i − c)² / (2 w²))

- ``r̂``: the unit direction to amplify (``kind`` at ``dir_layer``, :mod:`r1probe.tuning.directions`);
- ``b̂``: the borderline direction orthogonalised against ``r̂``, removed with strength ``λ ∈ [0, 1]``
  (``λ = 1``: nothing those layers write has a component along ``b̂``);
- a Gaussian kernel over depth (centre ``c``, width ``w``, peak ``β``); layers with ``β_i < 0.05 β``
  are left alone. ``writers``: both projections, or only attention / only MLP.

Because ``r̂ ⟂ b̂`` the two rank-one terms commute, so the edit is ``steering.edit.amplify_rows`` with
``β_i`` on ``r̂`` then with ``−λ`` on ``b̂``; the permanent edit makes exactly those ``steering.edit.amplify``
calls. A trial rewrites the touched matrices in place from a saved copy of the originals and restores them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from r1probe.errors import R1ProbeError
from r1probe.steering.edit import amplify, amplify_rows
from r1probe.tuning.directions import direction_for

#: writer sets a trial may edit
WRITER_SETS = {"both": ("attn", "mlp"), "attn": ("attn",), "mlp": ("mlp",)}


@dataclass
class EditParams:
    """One point of the search space (see the module doc)."""

    kind: str = "harm"
    dir_layer: int = 12
    center: float = 13.0
    width: float = 4.0
    beta: float = 0.0
    ablate_border: float = 0.0
    writers: str = "both"

    def per_layer(self, n_layers: int, floor: float = 0.05) -> dict[int, float]:
        """``{layer: β_i}`` for the layers the kernel touches (``exp(−(i − c)² / (2 w²)) ≥ floor``)."""
        if self.beta <= 0 and self.ablate_border <= 0:
            return {}
        out = {}
        for i in range(n_layers):
            k = math.exp(-((i - self.center) ** 2) / (2 * max(self.width, 1e-6) ** 2))
            if k >= floor:
                out[i] = float(self.beta * k)
        return out


class TrialEditor:
    """Applies ``EditParams`` in place to the output projections and restores the originals after.

    ``with editor.applied(params) as records:`` the model carries the edit inside the block.
    """

    def __init__(self, lm, dirs: dict):
        self.lm, self.dirs = lm, dirs
        self.model, self.layout = lm.model, lm.layout
        self._orig: dict[tuple[int, str], torch.Tensor] = {}
        self._touched: list[tuple[int, str]] = []

    def _module(self, i: int, w: str):
        return self.layout.attn_out(self.model, i) if w == "attn" else self.layout.mlp_out(self.model, i)

    @torch.no_grad()
    def apply(self, p: EditParams) -> list[dict]:
        """Write ``p`` into the model (restoring any previous trial first); returns the edit records."""
        if self._touched:
            self.restore()
        r, b = direction_for(self.dirs, p.kind, p.dir_layer)
        dev = next(self.model.parameters()).device
        r, b = r.to(dev), b.to(dev)
        ws = WRITER_SETS[p.writers]
        per = p.per_layer(self.layout.n_layers)
        for i, beta_i in per.items():
            for w in ws:
                mod = self._module(i, w)
                if getattr(mod, "bias", None) is not None:
                    raise R1ProbeError("edit-search: output projections with a bias are not supported")
                key = (i, w)
                if key not in self._orig:
                    self._orig[key] = mod.weight.detach().clone()
                W = self._orig[key]
                if beta_i:
                    W = amplify_rows(W, r, beta_i)
                if p.ablate_border:
                    W = amplify_rows(W, b, -p.ablate_border)
                mod.weight.copy_(W)
                self._touched.append(key)
        recs = []
        if per and p.beta > 0:
            recs += [{"op": "amplify", "layers": [i], "writers": list(ws), "beta": round(bi, 6),
                      "direction": "enhance_r"} for i, bi in per.items()]
        if per and p.ablate_border > 0:
            recs.append({"op": "amplify", "layers": sorted(per), "writers": list(ws), "beta": -float(p.ablate_border),
                         "direction": "enhance_b"})
        return recs

    @torch.no_grad()
    def restore(self) -> None:
        for key in self._touched:
            self._module(*key).weight.copy_(self._orig[key])
        self._touched = []

    @contextmanager
    def applied(self, p: EditParams):
        try:
            yield self.apply(p)
        finally:
            self.restore()


def apply_edit_permanently(lm, dirs: dict, p: EditParams) -> list[dict]:
    """Write ``p`` into ``lm`` with the public ``steering.edit.amplify`` calls (the export path); returns
    the records."""
    r, b = direction_for(dirs, p.kind, p.dir_layer)
    ws = WRITER_SETS[p.writers]
    per = p.per_layer(lm.layout.n_layers)
    recs = []
    for i, bi in per.items():
        if p.beta > 0:
            recs.append({**amplify(lm, r, [i], bi, which=ws), "direction": "enhance_r"})
    if per and p.ablate_border > 0:
        recs.append({**amplify(lm, b, sorted(per), -float(p.ablate_border), which=ws), "direction": "enhance_b"})
    return recs


__all__ = ["WRITER_SETS", "EditParams", "TrialEditor", "apply_edit_permanently"]
