"""The refusal representation of one model at several prompt endings (before, inside and after ``<think>``).

Inputs are activation stores of the *same* model on the *same* prompts, each made with a different prompt
ending (``extract_activations(think=None | "open" | "closed")``: the reply's start, inside an opened reasoning
block, after an empty closed one). Per layer and store: held-out probe AUROC at the store's last position,
the cosine of its difference-in-means direction to the reference store's at the same layer, and the AUROC of
a fixed direction (e.g. the base model's chosen one) read out of it. Numbers go to ``positions.json``,
figures beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from r1probe.analysis import plots
from r1probe.analysis.compare import NEG, POS, _clean, _same_rows, layer_probe_curves
from r1probe.analysis.similarity import auroc_along, cosine
from r1probe.provenance import atomic_write_json, base_manifest


def compare_positions(stores: Mapping[str, Any], *, reference: str, reference_position: Any = -1,
                      position: Any = -1, direction: torch.Tensor | None = None, direction_layer: int | None = None,
                      out_dir: str | os.PathLike, sources: Sequence = (), seed: int = 0,
                      estimators: Sequence[str] = ("mean_diff", "logistic")) -> dict:
    """Per-layer probes of each store in ``stores`` (name -> store, same prompts) at ``position`` (the
    ``reference`` store at ``reference_position``).

    Per store: ``curves`` (held-out AUROC/accuracy per estimator and layer), ``cosine_to_reference`` (per layer,
    ``cos(d_s, d_ref)`` of the difference-in-means directions ``d = mean(x[harmful]) - mean(x[harmless])``),
    ``direction_auroc`` (AUROC of ``x · direction`` per layer) and, at ``direction_layer``, ``chosen`` (the
    AUROC of ``direction`` and the cosine of the store's mean difference to it there).
    """
    names = list(stores)
    ref = stores[reference]
    for n in names:
        _same_rows(ref, stores[n])
    layers = [l for l in ref.layers if l >= 0 and all(l in stores[n].layers for n in names)]
    y = np.array([1 if l == POS else 0 for l in ref.labels])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref_curves, ref_dirs = layer_probe_curves(ref, reference_position, layers, estimators, seed)
    res: dict = {"layers": layers, "reference": reference, "reference_position": str(reference_position),
                 "position": str(position), "n": {POS: int(y.sum()), NEG: int((1 - y).sum())}, "stores": {}}
    for n in names:
        pos = reference_position if n == reference else position
        curves, dirs = (ref_curves, ref_dirs) if n == reference else layer_probe_curves(stores[n], pos, layers,
                                                                                         estimators, seed)
        r = {"position": str(pos), "curves": curves,
             "cosine_to_reference": [cosine(dirs[l], ref_dirs[l]) if l in dirs and l in ref_dirs else float("nan")
                                     for l in layers]}
        if direction is not None:
            r["direction_auroc"] = [auroc_along(stores[n].get(l, pos), y, direction) for l in layers]
            if direction_layer in layers:
                r["chosen"] = {"layer": direction_layer,
                               "direction_auroc": r["direction_auroc"][layers.index(direction_layer)],
                               "cosine_to_direction": cosine(dirs[direction_layer], direction)
                               if direction_layer in dirs else float("nan")}
        res["stores"][n] = r
    figs = {"probe_auroc": plots.per_layer(
        {f"{n} · {e}": res["stores"][n]["curves"][e]["auroc"] for n in names for e in estimators},
        out / "positions_probe_auroc", ylabel="held-out AUROC", ylim=(0.4, 1.02), sources=sources,
        title="probe AUROC per layer at each prompt ending (harmful vs harmless)")}
    figs["cosine"] = plots.per_layer(
        {f"{n} vs {reference}": res["stores"][n]["cosine_to_reference"] for n in names if n != reference},
        out / "positions_cosine", ylabel="cosine", ylim=(-0.05, 1.05), sources=sources,
        title=f"difference-in-means direction: cosine to the one at '{reference}' per layer")
    res["figures"] = figs
    res = _clean(res)
    atomic_write_json(out / "positions.json", base_manifest(result=res, sources=[str(s) for s in sources]))
    return res
