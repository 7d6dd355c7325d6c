"""Saving figures as PNG + PDF with a sidecar JSON naming the artifacts they were drawn from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import matplotlib.pyplot as plt

from r1probe.analysis.style import setup_style
from r1probe.provenance import atomic_write_json, base_manifest, sha256_file


def artifact_record(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """``[{path, sha256}]`` for each input file (folders: their manifest/summary JSON files)."""
    out = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(
            f for f in p.glob("*.json") if f.is_file()) if p.is_dir() else []
        for f in files:
            out.append({"path": str(f), "sha256": sha256_file(f)})
        if not files:
            out.append({"path": str(p), "sha256": None})
    return out


def new_figure(*args, **kw):
    setup_style()
    return plt.subplots(*args, **kw)


def save_figure(fig, out_base: str | os.PathLike, sources: Iterable[str | os.PathLike] = (),
                data: dict | None = None, caption: str = "") -> dict:
    """Write ``out_base.png``, ``out_base.pdf`` and ``out_base.json`` (sources with hashes, plotted data)."""
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out_base.with_suffix(".png"), out_base.with_suffix(".pdf")
    fig.savefig(png)
    fig.savefig(pdf)
    plt.close(fig)
    side = base_manifest(figure=[str(png), str(pdf)], caption=caption, sources=artifact_record(sources),
                         data=data or {})
    atomic_write_json(out_base.with_suffix(".json"), side)
    return {"png": str(png), "pdf": str(pdf), "sidecar": str(out_base.with_suffix(".json"))}
