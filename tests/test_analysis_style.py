import json
import warnings

import pytest

from r1probe.analysis.figures import new_figure, save_figure
from r1probe.analysis.style import cjk_font_path, setup_style


def test_a_chinese_label_renders_without_missing_glyphs(tmp_path):
    assert cjk_font_path() is not None, "no CJK font found (mplfonts should ship Noto Sans CJK SC)"
    family = setup_style()
    assert family and "CJK" in family
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = new_figure()
        ax.plot([0, 1], [0, 1], label="有害 (harmful)")
        ax.set_title("拒绝方向的投影")
        ax.set_xlabel("层 (layer)")
        ax.legend()
        paths = save_figure(fig, tmp_path / "cjk", sources=[], caption="测试")
    missing = [str(w.message) for w in caught if "missing from" in str(w.message).lower() or "glyph" in str(w.message).lower()]
    assert missing == []
    assert (tmp_path / "cjk.png").stat().st_size > 1000 and (tmp_path / "cjk.pdf").exists()
    side = json.loads((tmp_path / "cjk.json").read_text())
    assert side["caption"] == "测试" and side["figure"] == [paths["png"], paths["pdf"]]


def test_a_font_without_cjk_would_be_caught(tmp_path):
    # the check above can fail: DejaVu Sans alone has no CJK glyphs and matplotlib warns
    import matplotlib.pyplot as plt

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with plt.rc_context({"font.sans-serif": ["DejaVu Sans"], "font.family": "sans-serif"}):
            fig, ax = plt.subplots()
            ax.set_title("拒绝")
            fig.savefig(tmp_path / "x.png")
            plt.close(fig)
    assert any("missing from" in str(w.message).lower() for w in caught)
