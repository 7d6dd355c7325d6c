"""The Pareto front of the edit search, the choice of one edit, and the tables and figure that report them."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from r1probe.tuning.edit import EditParams
from r1probe.tuning.search import OBJECTIVES, constraints
from r1probe.tuning.settings import EditSearchSettings

#: columns of the front and trials tables
TRIAL_HEADER = ["trial", "kind", "dir_layer", "center", "width", "beta", "ablate_border", "writers",
                "harm_refusal", "border_refusal", "nll_ratio", "feasible", "pareto"]


def trial_rows(study) -> list[dict]:
    """Completed trials as flat rows (params, search-split objectives, feasibility)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        v = t.user_attrs.get("values")
        if not v:
            continue
        rows.append({"trial": t.number, **t.user_attrs.get("params", {}), **{k: v[k] for k in OBJECTIVES},
                     "feasible": max(t.user_attrs.get("constraints", [1])) <= 0})
    return rows


def pareto(rows: Sequence[dict]) -> list[dict]:
    """Non-dominated rows for (harm_refusal ↑, border_refusal ↓, nll_ratio ↓)."""
    def dominates(a, b):
        ge = (a["harm_refusal"] >= b["harm_refusal"] and a["border_refusal"] <= b["border_refusal"]
              and a["nll_ratio"] <= b["nll_ratio"])
        gt = (a["harm_refusal"] > b["harm_refusal"] or a["border_refusal"] < b["border_refusal"]
              or a["nll_ratio"] < b["nll_ratio"])
        return ge and gt
    return [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]


def choose(rows: Sequence[dict], base: dict, settings: EditSearchSettings) -> dict | None:
    """The feasible row with the most harmful refusal (ties: least over-refusal, then NLL); when none is
    feasible, the row with the smallest total violation ``Σ max(0, constraint) + max(0, harm_target − harm)``."""
    if not rows:
        return None
    feas = [r for r in rows if r["feasible"]]
    if feas:
        return max(feas, key=lambda r: (r["harm_refusal"], -r["border_refusal"], -r["nll_ratio"]))

    def viol(r):
        c = constraints(r, base, settings)
        return sum(max(0.0, x) for x in c) + max(0.0, settings.harm_target - r["harm_refusal"])
    return min(rows, key=viol)


def params_of(row: dict) -> EditParams:
    """The :class:`EditParams` of a trial row."""
    return EditParams(**{k: row[k] for k in EditParams.__dataclass_fields__ if k in row})


def write_trial_tables(rows: Sequence[dict], front: Sequence[dict], work: Path) -> dict:
    """``front`` and ``trials`` tables (Markdown, CSV, LaTeX) of the search splits; returns their files."""
    from r1probe.analysis.tables import write_table

    fids = {r["trial"] for r in front}
    table = [[r["trial"], r["kind"], r["dir_layer"], f"{r['center']:.1f}", f"{r['width']:.2f}", f"{r['beta']:.2f}",
              f"{r['ablate_border']:.2f}", r["writers"], f"{r['harm_refusal']:.3f}", f"{r['border_refusal']:.3f}",
              f"{r['nll_ratio']:.4f}", r["feasible"], r["trial"] in fids] for r in sorted(rows, key=lambda r: r["trial"])]
    return {"front": write_table(TRIAL_HEADER, [t for t in table if t[-1]], work / "front",
                                 caption="Pareto front of the edit search (search splits)"),
            "trials": write_table(TRIAL_HEADER, table, work / "trials", caption="All trials (search splits)")}


def write_report_table(report: dict, sizes: tuple[int, int, int], work: Path):
    """The report-split table: one row per system (unedited, chosen edit, plans)."""
    from r1probe.analysis.tables import write_table

    header = ["system", "harmful refusal", "CValues refusal", "GSM8K gold NLL", "NLL ratio", "meets all"]
    rows = [[k, f"{v['harm_refusal']:.3f}", f"{v['border_refusal']:.3f}", f"{v['nll']:.4f}", f"{v['nll_ratio']:.4f}",
             all(v["meets"].values())] for k, v in report.items() if not k.startswith("_")]
    nh, nb, nn = sizes
    return write_table(header, rows, work / "report",
                       caption=f"Report splits: CHiSafetyBench {nh} must-refuse, CValues {nb}, GSM8K test {nn} gold NLL")


def tradeoff_figure(points: Sequence[dict], front_points: Sequence[dict], work: Path, border_margin: float):
    """Refusal gain against over-refusal rise: every trial, the plans and the report-split systems, with
    the front and the over-refusal budget."""
    from r1probe.analysis.plots import tradeoff

    return tradeoff(list(points), work / "tradeoff", x="x", y="y",
                    xlabel="over-refusal rise on CValues (share of prompts)",
                    ylabel="refusal gain on harmful prompts (share of prompts)", front=list(front_points),
                    title="Refusal gain vs over-refusal: weight edits and run-time plans",
                    targets={"x": border_margin}, sources=[work / "study.db"])


__all__ = ["TRIAL_HEADER", "trial_rows", "pareto", "choose", "params_of", "write_trial_tables",
           "write_report_table", "tradeoff_figure"]
