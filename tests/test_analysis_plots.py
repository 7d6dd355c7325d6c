import json

import numpy as np

from r1probe.analysis import plots


def test_every_plot_writes_png_pdf_and_sidecar_with_its_data(tmp_path):
    src = tmp_path / "probe.json"
    src.write_text("{}")
    outs = [
        plots.layer_curves({"base": {"auroc": [0.5, 0.9, 1.0]}}, tmp_path / "a", title="探针", sources=[src]),
        plots.per_layer({"cos": [1.0, 0.5, None]}, tmp_path / "b", ylabel="cosine"),
        plots.projection_hists({"m": {"harmful": np.ones(5), "harmless": np.zeros(5)}}, tmp_path / "c"),
        plots.metric_bars({"m": {"RR-1": (0.4, 0.3, 0.5)}}, tmp_path / "d"),
        plots.tradeoff([{"kind": "edit", "x": 0.1, "y": 0.5}], tmp_path / "e", x="x", y="y", xlabel="x", ylabel="y"),
        plots.heatmap([[1.0, float("nan")]], tmp_path / "f", xlabels=[0, 1], ylabels=[-1], xlabel="l", ylabel="p", cbar="s"),
        plots.tradeoff_paired([{"kind": "export", "name": "e", "y": (0.2, 0.1, 0.3),
                                "x": {"CValues": (0.05, -0.01, 0.1), "XSTest": (None, None, None)}},
                               {"kind": "run-time plan", "name": "p", "y": (0.1, 0.0, 0.2),
                                "x": {"CValues": (0.0, -0.05, 0.05), "XSTest": (0.3, 0.2, 0.4)}}],
                              tmp_path / "g", panels=["CValues", "XSTest"], ylabel="gain"),
    ]
    for o in outs:
        for k in ("png", "pdf", "sidecar"):
            assert (tmp_path / o[k]).stat().st_size > 0
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["data"]["curves"]["base"]["auroc"] == [0.5, 0.9, 1.0]
    assert side["sources"][0]["path"].endswith("probe.json") and len(side["sources"][0]["sha256"]) == 64


def test_metric_bars_take_an_interval_end_a_rounding_error_past_the_value(tmp_path):
    from r1probe.analysis.plots import metric_bars

    out = metric_bars({"base": {"rate": (0.0, 2.7e-17, 0.14)}, "edit": {"rate": (1.0, 0.86, 1.0 - 1e-16)}},
                      tmp_path / "bars")
    assert (tmp_path / "bars.png").exists() and out
