"""Figures of a probe folder: probe accuracy/AUROC per layer, bypass/induce/KL heatmaps (PNG + PDF).

Drawn with the project's publication style (:mod:`r1probe.analysis.style`), which ships a CJK font
(Noto Sans CJK SC via ``mplfonts``) so Chinese labels render.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from r1probe.errors import R1ProbeError

METRIC_LABELS = {"auroc": "AUROC", "accuracy": "准确率 accuracy", "f1": "F1"}


def _grid(cells: dict):
    layers = sorted({int(c["layer"]) for c in cells.values()})
    positions = sorted({c["pos"] for c in cells.values()}, key=lambda p: (isinstance(p, str), p))
    return layers, positions


def _num(x):
    return float("nan") if x is None else float(x)


def draw_report(probe_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> list[str]:
    """Draw every figure of ``probe_dir`` into ``out`` (default ``probe_dir/figures``); returns the paths."""
    from r1probe.analysis.figures import new_figure, save_figure
    from r1probe.analysis.plots import heatmap
    from r1probe.analysis.style import color_for
    from r1probe.probes.api import load_probe

    probe_dir = Path(probe_dir)
    meta, _ = load_probe(probe_dir)
    cells = meta.get("cells") or {}
    if not cells:
        raise R1ProbeError(f"{probe_dir}: probe.json has no cells")
    out = Path(out) if out else probe_dir / "figures"
    src = [probe_dir / "probe.json"]
    layers, positions = _grid(cells)
    by = {(int(c["layer"]), c["pos"]): c for c in cells.values()}
    chosen = meta.get("chosen") or {}
    paths: list[str] = []

    # 1. accuracy / AUROC per layer, one panel per estimator (best position per layer, and the chosen position)
    ests = list(meta.get("estimators") or ["mean_diff", "logistic", "pca"])
    fig, axes = new_figure(1, len(ests), figsize=(4.2 * len(ests), 3.6), sharey=True, squeeze=False)
    data = {}
    for ax, e in zip(axes[0], ests):
        data[e] = {}
        for j, m in enumerate(("auroc", "accuracy")):
            ys = []
            for li in layers:
                vals = [_num(by.get((li, p), {}).get("estimators", {}).get(e, {}).get(m)) for p in positions]
                vals = [v for v in vals if math.isfinite(v)]
                ys.append(max(vals) if vals else float("nan"))
            data[e][m] = ys
            ax.plot(layers, ys, "-" if m == "auroc" else "--", marker="o", ms=3, color=color_for(j),
                    label=METRIC_LABELS[m] + "（各位置最大 max over positions）")
        if chosen:
            ax.axvline(int(chosen["layer"]), color="grey", lw=0.8, ls=":", label="所选层 chosen layer")
        ax.set_title({"mean_diff": "均值差 difference-in-means", "logistic": "逻辑回归 logistic",
                      "pca": "成对差 PCA paired differences"}.get(e, e), fontsize=9)
        ax.set_xlabel("层 layer (-1 = embedding)")
        ax.set_ylim(0.4, 1.02)
    axes[0][0].set_ylabel("留出集得分 held-out score")
    axes[0][0].legend(fontsize=7, loc="lower right")
    r = save_figure(fig, out / "probe_metrics", src, data={"layers": layers, "metrics": data},
                    caption="拒答探针：逐层准确率与 AUROC（交叉验证） / refusal probes: held-out accuracy and AUROC per layer")
    paths += [r["png"], r["pdf"]]

    # 2. heatmaps of the causal scores (rows: positions, columns: layers)
    sel = meta.get("selection") or {}
    scores = sel.get("scores") or {}
    if scores:
        titles = {"bypass": "消融后有害提示的拒答分数 bypass score (harmful, ablated)",
                  "induce": "加入方向后无害提示的拒答分数 induce score (harmless, added)",
                  "kl": "消融后无害提示的 KL 散度 KL (harmless, ablated)"}
        for metric, title in titles.items():
            mat = []
            for p in positions:
                row = []
                for li in layers:
                    s = scores.get(f"layer{li}_pos{p}", {})
                    row.append(_num(s.get(metric)))
                mat.append(row)
            if all(not math.isfinite(v) for row in mat for v in row):
                continue
            r = heatmap(mat, out / f"selection_{metric}", xlabels=layers, ylabels=positions,
                        xlabel="层 layer", ylabel="位置 position", cbar=metric, title=title, sources=src,
                        cmap="viridis_r" if metric in ("bypass", "kl") else "viridis")
            paths += [r["png"], r["pdf"]]
    return paths
