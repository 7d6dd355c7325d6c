"""Tables as Markdown, CSV and LaTeX (booktabs), with confidence intervals, plus a sidecar JSON."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from r1probe.analysis.figures import artifact_record
from r1probe.provenance import atomic_write_json, atomic_write_text, base_manifest


def fmt_ci(value: float | None, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """``0.420 [0.330, 0.520]``; ``n/a`` for missing or NaN values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    s = f"{value:.{digits}f}"
    if ci and len(ci) == 2 and all(c is not None and not math.isnan(c) for c in ci):
        s += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return s


def to_markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(s))


def to_latex(header: Sequence[str], rows: Sequence[Sequence], caption: str = "", label: str = "") -> str:
    """A booktabs table (``\\toprule``/``\\midrule``/``\\bottomrule``)."""
    cols = "l" + "r" * (len(header) - 1)
    out = ["\\begin{table}[t]", "\\centering", f"\\begin{{tabular}}{{{cols}}}", "\\toprule",
           " & ".join(tex_escape(h) for h in header) + " \\\\", "\\midrule"]
    out += [" & ".join(tex_escape(c) for c in r) + " \\\\" for r in rows]
    out += ["\\bottomrule", "\\end{tabular}"]
    if caption:
        out.append(f"\\caption{{{tex_escape(caption)}}}")
    if label:
        out.append(f"\\label{{{label}}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def write_table(header: Sequence[str], rows: Sequence[Sequence], out_base: str | os.PathLike,
                sources: Iterable[str | os.PathLike] = (), caption: str = "") -> dict:
    """Write ``out_base.md``, ``.csv``, ``.tex`` and a ``.json`` sidecar; returns the paths."""
    out_base = Path(out_base)
    paths = {}
    for ext, text in (("md", to_markdown(header, rows)), ("csv", to_csv(header, rows)),
                      ("tex", to_latex(header, rows, caption, f"tab:{out_base.name}"))):
        p = out_base.with_suffix(f".{ext}")
        atomic_write_text(p, text)
        paths[ext] = str(p)
    atomic_write_json(out_base.with_suffix(".json"), base_manifest(
        table=paths, caption=caption, header=list(header), rows=[list(map(str, r)) for r in rows],
        sources=artifact_record(sources)))
    paths["sidecar"] = str(out_base.with_suffix(".json"))
    return paths
