"""Paper figures drawn from plain data (lists and dicts), each saved as PNG + PDF + sidecar JSON."""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from r1probe.analysis.figures import new_figure, save_figure
from r1probe.analysis.style import color_for


def _finite(v):
    return [float("nan") if v is None else float(v) for v in v]


def layer_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], out_base: str | os.PathLike, *,
                 metrics: Sequence[str] = ("auroc", "accuracy"), title: str = "",
                 sources: Iterable = (), ylim=(0.4, 1.02)) -> dict:
    """One line per (model, metric) against layer index: e.g. probe AUROC of base vs distilled."""
    names = list(curves)
    fig, ax = new_figure(figsize=(6.4, 3.8))
    styles = ["-", "--", ":", "-."]
    for i, name in enumerate(names):
        for j, m in enumerate(metrics):
            ys = _finite(curves[name].get(m, []))
            if ys:
                ax.plot(range(len(ys)), ys, styles[j % 4], color=color_for(i), marker="o", ms=3,
                        label=f"{name} · {m}")
    ax.set_xlabel("layer (block output index)")
    ax.set_ylabel("probe score (held-out, 0–1)")
    ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, out_base, sources, data={"curves": curves}, caption=title)


def per_layer(values: Mapping[str, Sequence[float]], out_base: str | os.PathLike, *, ylabel: str,
              title: str = "", sources: Iterable = (), hline: float | None = None, ylim=None,
              bands: Mapping[str, Sequence] | None = None) -> dict:
    """Per-layer series (direction cosine, CKA, refusal score, ...) for one or more named series;
    ``bands[name]``: per-layer ``[lo, hi]`` intervals drawn as a shaded band around that series."""
    fig, ax = new_figure(figsize=(6.4, 3.6))
    bands = bands or {}
    for i, (name, ys) in enumerate(values.items()):
        ys = _finite(ys)
        ax.plot(range(len(ys)), ys, "-o", ms=3, color=color_for(i), label=name)
        if name in bands:
            lo = _finite([b[0] if b else None for b in bands[name]])
            hi = _finite([b[1] if b else None for b in bands[name]])
            ax.fill_between(range(len(lo)), lo, hi, color=color_for(i), alpha=0.2, lw=0)
    if hline is not None:
        ax.axhline(hline, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer (block output index)")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    if len(values) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, out_base, sources, data={"values": values, **({"bands": bands} if bands else {})},
                       caption=title)


def projection_hists(proj: Mapping[str, Mapping[str, Sequence[float]]], out_base: str | os.PathLike, *,
                     title: str = "", sources: Iterable = (), xlabel: str = "projection on refusal direction (a.u.)") -> dict:
    """Histograms of the projection of harmful / harmless activations, one panel per model."""
    names = list(proj)
    fig, axes = new_figure(1, len(names), figsize=(3.6 * len(names), 3.2), sharey=True, squeeze=False)
    lo = min(np.min(v) for p in proj.values() for v in p.values() if len(v))
    hi = max(np.max(v) for p in proj.values() for v in p.values() if len(v))
    bins = np.linspace(lo, hi, 40)
    for ax, name in zip(axes[0], names):
        for label, vals in proj[name].items():
            ax.hist(np.asarray(vals, float), bins=bins, alpha=0.55, color=color_for(label), label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel("prompts (count)")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 0.93))  # keep the suptitle clear of the panel titles
    data = {m: {k: [float(x) for x in v] for k, v in d.items()} for m, d in proj.items()}
    return save_figure(fig, out_base, sources, data={"projections": data}, caption=title)


def metric_bars(table: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]],
                out_base: str | os.PathLike, *, title: str = "", ylabel: str = "rate (0–1)",
                sources: Iterable = ()) -> dict:
    """Grouped bars with 95% CI whiskers: ``table[model][metric] = (value, lo, hi)``."""
    models = list(table)
    metrics = list(dict.fromkeys(m for t in table.values() for m in t))  # first-seen order
    fig, ax = new_figure(figsize=(max(5.0, 1.3 * len(metrics) * max(1, len(models)) / 1.6), 3.6))
    w = 0.8 / max(1, len(models))
    x = np.arange(len(metrics))
    for i, m in enumerate(models):
        vals = [table[m].get(k, (np.nan, None, None)) for k in metrics]
        v = np.array([t[0] if t[0] is not None else np.nan for t in vals], float)
        err = np.array([[v[j] - (t[1] if t[1] is not None else v[j]) for j, t in enumerate(vals)],
                        [(t[2] if t[2] is not None else v[j]) - v[j] for j, t in enumerate(vals)]])
        # an interval end a rounding error past the value (a Wilson bound at 0 or 1) is no whisker at all
        ax.bar(x + (i - (len(models) - 1) / 2) * w, v, w, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=3,
               color=color_for(i), label=m)
    ax.set_xticks(x, metrics, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, out_base, sources, data={"table": {m: {k: list(v) for k, v in t.items()} for m, t in table.items()}},
                       caption=title)


def tradeoff(points: Sequence[Mapping], out_base: str | os.PathLike, *, x: str, y: str, xlabel: str, ylabel: str,
             group: str = "kind", front: Sequence[Mapping] = (), title: str = "", sources: Iterable = (),
             targets: Mapping[str, float] | None = None, label: str | None = "label") -> dict:
    """Scatter of candidate edits/plans on two objectives, the Pareto front as a line, optional target box.

    Points carrying a ``label`` key (e.g. "base", "orth", "CAST k=2") are annotated with it."""
    fig, ax = new_figure(figsize=(5.6, 4.2))
    groups = sorted({p.get(group, "") for p in points})
    for i, g in enumerate(groups):
        pts = [p for p in points if p.get(group, "") == g]
        ax.scatter([p[x] for p in pts], [p[y] for p in pts], s=22, color=color_for(i), label=g, alpha=0.8)
    placed: dict = {}
    for p in points:
        if label and p.get(label):
            k = (round(float(p[x]), 2), round(float(p[y]), 2))  # stack labels of coinciding points
            n = placed[k] = placed.get(k, -1) + 1
            ax.annotate(str(p[label]), (p[x], p[y]), textcoords="offset points", xytext=(4, 3 - 9 * n), fontsize=7)
    if front:
        f = sorted(front, key=lambda p: p[x])
        ax.plot([p[x] for p in f], [p[y] for p in f], "-", color="black", lw=1, label="Pareto front")
    if targets:
        if "x" in targets:
            ax.axvline(targets["x"], color="grey", ls="--", lw=0.8)
        if "y" in targets:
            ax.axhline(targets["y"], color="grey", ls="--", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, out_base, sources, data={"points": list(points), "front": list(front)}, caption=title)


def tradeoff_paired(points: Sequence[Mapping], out_base: str | os.PathLike, *, panels: Sequence[str], ylabel: str,
                    group: str = "kind", title: str = "", sources: Iterable = ()) -> dict:
    """One panel per over-refusal set: each variant's refusal gain (``y``: (difference, low, high)) against its
    over-refusal rise on that set (``x[panel]``: (difference, low, high)), paired differences to the unedited
    model with their intervals as error bars; the dashed lines mark no change."""
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.6), sharey=True, squeeze=False)
    groups = sorted({p.get(group, "") for p in points})
    for ax, panel in zip(axes[0], panels):
        for i, g in enumerate(groups):
            pts = [p for p in points if p.get(group, "") == g and (p["x"].get(panel) or (None,))[0] is not None]
            if not pts:
                continue
            xs = np.array([p["x"][panel] for p in pts], float)
            ys = np.array([p["y"] for p in pts], float)
            ax.errorbar(xs[:, 0], ys[:, 0], xerr=[xs[:, 0] - xs[:, 1], xs[:, 2] - xs[:, 0]],
                        yerr=[ys[:, 0] - ys[:, 1], ys[:, 2] - ys[:, 0]], fmt="o", ms=4, lw=0.8, capsize=2,
                        color=color_for(i), label=g, alpha=0.85)
            for p, xv, yv in zip(pts, xs, ys):
                ax.annotate(str(p["name"]), (xv[0], yv[0]), textcoords="offset points", xytext=(4, 3), fontsize=6)
        ax.axvline(0, color="grey", ls="--", lw=0.8)
        ax.axhline(0, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(f"{panel}: rise", fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_base, sources, data={"points": list(points), "panels": list(panels)}, caption=title)


def heatmap(matrix: Sequence[Sequence[float]], out_base: str | os.PathLike, *, xlabels: Sequence, ylabels: Sequence,
            xlabel: str, ylabel: str, cbar: str, title: str = "", sources: Iterable = (), cmap: str = "viridis") -> dict:
    fig, ax = new_figure(figsize=(max(4.0, 0.35 * len(xlabels) + 2), max(3.0, 0.3 * len(ylabels) + 1.5)))
    m = np.asarray(matrix, float)
    im = ax.imshow(m, aspect="auto", cmap=cmap)
    ax.set_xticks(range(len(xlabels)), [str(v) for v in xlabels], fontsize=7, rotation=90)
    ax.set_yticks(range(len(ylabels)), [str(v) for v in ylabels], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    fig.colorbar(im, ax=ax, label=cbar)
    ax.set_title(title)
    return save_figure(fig, out_base, sources, data={"matrix": np.where(np.isfinite(m), m, None).tolist(),
                                                     "x": list(map(str, xlabels)), "y": list(map(str, ylabels))},
                       caption=title)
