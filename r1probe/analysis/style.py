"""Publication style for figures: one palette, readable CJK glyphs, vector PDF + PNG."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402

#: Okabe-Ito colours (colour-blind safe), assigned in a fixed order per model and per label
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
LABEL_COLORS = {"harmful": "#D55E00", "harmless": "#0072B2", "borderline": "#009E73"}
CJK_FAMILY = "Noto Sans CJK SC"


@functools.lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    """Path of a CJK font: Noto Sans CJK SC from the ``mplfonts`` package, else a system font."""
    try:
        import mplfonts

        p = Path(mplfonts.__file__).parent / "fonts" / "NotoSansCJKsc-Regular.otf"
        if p.exists():
            return str(p)
    except ImportError:
        pass
    for f in font_manager.findSystemFonts():
        name = os.path.basename(f).lower()
        if any(k in name for k in ("notosanscjk", "sourcehansans", "wqy", "simhei", "droidsansfallback")):
            return f
    return None


@functools.lru_cache(maxsize=1)
def setup_style() -> str | None:
    """Register the CJK font and set rcParams; returns the CJK family name in use (or None)."""
    path = cjk_font_path()
    family = None
    if path:
        font_manager.fontManager.addfont(path)
        family = font_manager.FontProperties(fname=path).get_name()
    plt.rcParams.update({
        # Latin text in DejaVu Sans, CJK glyphs from the CJK font (matplotlib's per-glyph fallback): a figure
        # without Chinese text embeds only the small font in its PDF
        "font.family": ["DejaVu Sans"] + ([family] if family else []),
        "font.sans-serif": ["DejaVu Sans"] + ([family] if family else []),
        "axes.unicode_minus": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 110,
        "savefig.dpi": 200,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,  # embed TrueType: selectable text in the PDF
        "legend.frameon": False,
        "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    })
    return family


def color_for(i_or_name: int | str, names: list[str] | None = None) -> str:
    """Stable colour: by label name, or by index (or position of the name in ``names``)."""
    if isinstance(i_or_name, str):
        if i_or_name in LABEL_COLORS:
            return LABEL_COLORS[i_or_name]
        i_or_name = names.index(i_or_name) if names and i_or_name in names else sum(map(ord, i_or_name))
    return PALETTE[i_or_name % len(PALETTE)]
