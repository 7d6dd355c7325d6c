"""The study's ``report.md``: key numbers with intervals, paired differences to the unedited model, reasoning
retention, the tuning/report overlap line, figures, and the commands.

Every rate carries its 95% Wilson interval, the GSM8K gold NLL a 95% percentile bootstrap; each variant's
difference to ``base`` is paired over the items both evaluated (exact McNemar on the discordant pairs with
Newcombe's paired interval for rates, paired bootstrap for the NLL; :mod:`r1probe.eval.metrics`); reasoning
retention is a paired TOST with a margin of :data:`TOST_MARGIN` (3 points) on GSM8K and CMATH accuracy beside
the GSM8K NLL ratio; fluency (repetition loops, distinct-2; :mod:`r1probe.eval.fluency`) is paired the same way
(``report/fluency.json``). ``report/per_sample.jsonl`` holds the per-item outcome behind every reported number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from r1probe.analysis import plots
from r1probe.analysis.tables import fmt_ci, write_table
from r1probe.provenance import atomic_write_text, library_versions

#: equivalence margin of the reasoning-retention TOST (accuracy, 3 points)
TOST_MARGIN = 0.03
#: (bench, metric, column title, better direction)
KEY_METRICS = [
    ("chisafety-refusal", "RR-1", "CHiSafetyBench refusal (RR-1) ↑", 1),
    ("chisafety-refusal", "RR-2", "RR-2 (with guidance) ↑", 1),
    ("chisafety-refusal", "reasoning_refusal_rate", "refusal inside <think> (CHiSafety)", 1),
    ("chisafety-refusal", "unterminated_rate", "unterminated <think> (CHiSafety)", -1),
    ("chisafety-multiturn", "RR-1", "multi-turn RR-1 ↑", 1),
    ("polyrefuse-test", "RR-1", "PolyRefuse-zh test refusal (unseen sources) ↑", 1),
    ("cvalues", "refusal_rate", "CValues over-refusal ↓", -1),
    ("cvalues-report", "refusal_rate", "CValues (report part) over-refusal ↓", -1),
    ("xstest-safe", "refusal_rate", "XSTest-safe over-refusal ↓", -1),
    ("or-bench", "refusal_rate", "OR-Bench-Hard over-refusal ↓", -1),
    ("zh-harmless", "refusal_rate", "zh-harmless (test split) over-refusal ↓", -1),
    ("gsm8k", "accuracy", "GSM8K accuracy ↑", 1),
    ("gsm8k-nll", "mean_nll", "GSM8K gold NLL ↓", -1),
    ("math500", "accuracy", "MATH-500 accuracy ↑", 1),
    ("cmath", "accuracy", "CMATH accuracy ↑", 1),
    ("safetybench-zh", "accuracy", "SafetyBench-zh accuracy ↑", 1),
]


def _load(path) -> dict:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _rel(p, base: Path) -> str:
    return os.path.relpath(p, base)


def settings_section(ctx) -> list[str]:
    """The resolved settings of every stage (TOML) and the ``r1probe run`` command generated from them."""
    from r1probe.pipeline.settings import equivalent_command
    from r1probe.settings import to_toml

    return ["## Settings", "", "Resolved settings of every stage (a CONFIG for `r1probe run`):", "", "```toml",
            to_toml(ctx.settings, "study", comments=False).rstrip(), "```", "", "Equivalent command:", "",
            "```bash", equivalent_command(ctx.settings), "```", ""]


def collect(results: dict, variants: dict) -> tuple[list[tuple], dict]:
    """Columns with a value in some eval summary and ``table[variant][column] = (value, lo, hi, n)``. The
    reasoning columns (refusal inside ``<think>``, unterminated reasoning) appear when a variant thinks."""
    summaries = {v: _load(results[f"eval-{v}"].path / "summary.json") for v in variants if f"eval-{v}" in results}
    has = lambda bench, metric: any(s.get(bench, {}).get("metrics", {}).get(metric) is not None  # noqa: E731
                                    for s in summaries.values())
    thinks = has("chisafety-refusal", "reasoning_refusal_rate")
    cols = [k for k in KEY_METRICS if has(k[0], k[1]) and (thinks or k[1] != "unterminated_rate")]
    table = {}
    for v, s in summaries.items():
        row = {}
        for bench, metric, title, _ in cols:
            e = s.get(bench, {})
            val = e.get("metrics", {}).get(metric)
            ci = e.get("ci95", {}).get(metric) or (None, None)
            row[title] = (val, ci[0], ci[1], e.get("n"))
        table[v] = row
    return cols, table


def _metric_fn(bench: str, metric: str):
    from r1probe.eval.benches import BENCHES
    from r1probe.eval.kinds import get_kind

    b = BENCHES.get(bench)
    if b is None:
        return None
    return get_kind(b.kind).metrics(judge_sees_harm=metric == "HR", has_gold=True).get(metric)


def _records(results: dict, variants) -> dict[str, dict[str, dict[str, dict]]]:
    """``{variant: {bench: {id: record}}}`` of every eval stage."""
    from r1probe.eval.runner import load_run

    out = {}
    for v in variants:
        r = results.get(f"eval-{v}")
        if r is not None and (r.path / "summary.json").exists():
            out[v] = load_run(r.path)[1]
    return out


def paired_tables(results: dict, variants, cols: list[tuple], path: Path, *, base: str = "base",
                  recs: dict | None = None) -> dict:
    """Paired differences of every variant to ``base`` on every column, reasoning retention (TOST, NLL ratio)
    and ``path/per_sample.jsonl`` (the per-item outcome behind each reported number). Returns
    ``{"diff": {variant: {title: row}}, "tost": {variant: {bench: row}}, "nll_ratio": {variant: row},
    "per_sample": file}``. ``recs``: the records of :func:`_records`, when the caller has read them."""
    from r1probe.eval import metrics as M

    recs = _records(results, variants) if recs is None else recs
    out = {"diff": {}, "tost": {}, "nll_ratio": {}}
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for v, benches in recs.items():
        for bench, metric, title, _ in cols:
            f = _metric_fn(bench, metric)
            for i, r in sorted((benches.get(bench) or {}).items()):
                val = f.outcome(r) if isinstance(f, M.Rate) else r.get("nll") if metric == "mean_nll" else None
                if val is not None:
                    lines.append({"variant": v, "bench": bench, "metric": metric, "id": i, "value": val})
    per_sample = path / "per_sample.jsonl"
    atomic_write_text(per_sample, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    out["per_sample"] = str(per_sample)
    if base not in recs:
        return out
    for v, benches in recs.items():
        if v == base:
            continue
        row = {}
        for bench, metric, title, _ in cols:
            f = _metric_fn(bench, metric)
            a, b = recs[base].get(bench), benches.get(bench)
            if f is None or not a or not b:
                continue
            row[title] = M.paired_compare(a, b, f)
        out["diff"][v] = row
        for bench in ("gsm8k", "cmath"):
            a, b = recs[base].get(bench), benches.get(bench)
            if a and b:
                ids = sorted(set(a) & set(b))
                out["tost"].setdefault(v, {})[bench] = M.tost_paired(
                    [1.0 if a[i].get("correct") else 0.0 for i in ids],
                    [1.0 if b[i].get("correct") else 0.0 for i in ids], margin=TOST_MARGIN)
        a, b = recs[base].get("gsm8k-nll"), benches.get("gsm8k-nll")
        if a and b:
            out["nll_ratio"][v] = M.nll_ratio(a, b)
    return out


def gate_lines(results: dict, variants) -> list[str]:
    """Per run-time plan whose gates were checked ahead: on how many report prompts of each bench they opened,
    and how many closed ones took the unedited model's records (``summary.json``'s ``gates``)."""
    out = []
    for v in variants:
        r = results.get(f"eval-{v}")
        f = r.path / "summary.json" if r is not None else None
        if f is None or not f.exists():
            continue
        summ = json.loads(f.read_text("utf-8"))
        per = [(b, e["gates"]) for b, e in summ.items() if isinstance(e, dict) and isinstance(e.get("gates"), dict)]
        if per:
            out.append(f"`{v}`: its gates opened on " + ", ".join(f"{b} {g['open']}/{g['checked']}" for b, g in per)
                       + " report prompts; " + str(sum(g["from_unchanged"] for _, g in per))
                       + " closed ones took the records of the model without the plan (no step acts on them).")
    return out + [""] if out else []


def fit_seed_section(table: dict, cols: list[tuple]) -> list[str]:
    """Markdown: each refitted edit (variants ``NAME@sK``, refits on seeded subsamples of the fit data) beside
    its full-data fit, with the mean, sample standard deviation and range over the seeded refits per column."""
    import statistics

    fams: dict[str, list[str]] = {}
    for v in table:
        if "@s" in v:
            fams.setdefault(v.split("@s")[0], []).append(v)
    if not fams:
        return []
    titles = [c[2] for c in cols]
    md = ["### Spread across fits", "",
          "Each `NAME@sK` refits the edit on a seeded subsample of its fit data (same splits, same direction); "
          "the spread over these refits is the variance that comes from the fit, beside the sampling intervals "
          "above. Mean ± sample SD [min, max] over the seeded refits (one refit: its difference to the full fit).",
          "",
          "| fit | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
    for fam, seeded in fams.items():
        for v in ([fam] if fam in table else []) + seeded:
            md.append(f"| {v} | " + " | ".join("n/a" if table[v][t][0] is None else f"{table[v][t][0]:.3f}"
                                                for t in titles) + " |")
        cells = []
        for t in titles:
            xs = [table[v][t][0] for v in seeded if table[v][t][0] is not None]
            if not xs:
                cells.append("n/a")
            elif len(xs) == 1:  # one refit has no spread to state: its difference to the full-data fit
                full = table.get(fam, {}).get(t, (None,))[0]
                cells.append("one refit" if full is None else f"{xs[0] - full:+.3f} vs the full fit")
            else:
                cells.append(f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f} [{min(xs):.3f}, {max(xs):.3f}]")
        md.append(f"| {fam}: {len(seeded)} seeded refit{'' if len(seeded) == 1 else 's'} | " + " | ".join(cells) + " |")
    return md + [""]


#: fluency groups of the report: (title, benches whose replies are pooled)
FLUENCY_GROUPS = (("answerable panel", ("cvalues-report", "cvalues", "xstest-safe", "or-bench", "zh-harmless")),
                  ("must-refuse", ("chisafety-refusal", "polyrefuse-test")))


def fluency_tables(recs: dict[str, dict[str, dict[str, dict]]], *, base: str = "base") -> dict:
    """Per variant and :data:`FLUENCY_GROUPS` group, over the replies of its benches pooled (ids
    ``bench|id``): the share in a repetition loop and the mean distinct-2 (:mod:`r1probe.eval.fluency`), each
    with its difference to ``base`` paired over the items both answered (loop share: exact McNemar with
    Newcombe's interval; distinct-2: paired bootstrap). Returns ``{variant: {group: {"n", "loop_rate",
    "distinct_2", "loop_diff", "distinct_diff", "benches"}}}``."""
    from r1probe.eval import metrics as M
    from r1probe.eval.fluency import FLUENCY

    loop, dist = FLUENCY["loop_rate"], FLUENCY["distinct_2"]
    pooled = {v: {g: {f"{b}|{i}": r for b in names for i, r in (benches.get(b) or {}).items() if "reply" in r}
                  for g, names in FLUENCY_GROUPS} for v, benches in recs.items()}
    out: dict = {}
    for v, groups in pooled.items():
        for g, rs in groups.items():
            if not rs:
                continue
            names = [b for b in dict(FLUENCY_GROUPS)[g] if recs[v].get(b)]
            row = {"n": len(rs), "loop_rate": loop(list(rs.values())), "distinct_2": dist(list(rs.values())),
                   "benches": names}
            if v != base and pooled.get(base, {}).get(g):
                row["loop_diff"] = M.paired_compare(pooled[base][g], rs, loop)
                row["distinct_diff"] = M.paired_compare(pooled[base][g], rs, dist)
            out.setdefault(v, {})[g] = row
    return out


def _group_benches(table: dict, group: str) -> list[str]:
    return sorted({b for row in table.values() for b in row.get(group, {}).get("benches", [])})


def fluency_section(table: dict) -> list[str]:
    """Markdown of :func:`fluency_tables`: one row per variant, a loop-share and a distinct-2 column per group."""
    from r1probe.eval.fluency import MAX_PERIOD, MIN_REPEATS, MIN_UNITS

    groups = [g for g, _ in FLUENCY_GROUPS if any(g in row for row in table.values())]
    if not groups:
        return []
    md = ["### Fluency", "",
          "Replies in a repetition loop (one sequence of at most "
          f"{MAX_PERIOD} units — CJK characters or words — following itself {MIN_REPEATS} times in a row over at "
          f"least {MIN_UNITS} units) and the mean distinct-2 (unique unit pairs / pairs per reply), pooled over "
          + "; ".join(f"the {g} ({', '.join(_group_benches(table, g))})" for g in groups)
          + ". Each cell: value, then variant − base [95% paired interval] (loop share: Newcombe, exact McNemar p; "
            "distinct-2: paired bootstrap). `r1probe.eval.fluency`.", "",
          "| variant | " + " | ".join(f"{g}: loop share | {g}: distinct-2" for g in groups) + " |",
          "|---|" + "---|---|" * len(groups)]
    for v, row in table.items():
        cells = []
        for g in groups:
            r = row.get(g)
            if not r:
                cells += ["n/a", "n/a"]
                continue
            lv = "n/a" if r["loop_rate"] is None else f"{r['loop_rate']:.3f} (n {r['n']})"
            dv = "n/a" if r["distinct_2"] is None else f"{r['distinct_2']:.3f}"
            if "loop_diff" in r:
                lv += f"; {_fmt_diff(r['loop_diff'])}"
                dv += f"; {_fmt_diff(r['distinct_diff'])}"
            cells += [lv, dv]
        md.append(f"| {v} | " + " | ".join(cells) + " |")
    return md + [""]


def budget_lines(info: dict | None, ev, who: str = "the model") -> list[str]:
    """The budget stage's paragraph (``stages.budget``): think rates on dev prompts and the budgets chosen;
    nothing when the stage did not run."""
    if not info:
        return []
    pct = lambda m: ", ".join(f"{g} {v:.2f}" for g, v in m.items())  # noqa: E731
    if not any(info["opens_think"].values()):
        return [f"Token budgets: {who} opened no reasoning block on dev prompts "
                f"({', '.join(f'{g} {k}' for g, k in info['n'].items())}); the configured budgets stay "
                f"({info['max_new_tokens']} / {info['reasoning_max_new_tokens']} new tokens).", ""]
    return [f"Token budgets from {who}'s own reasoning on dev prompts ({', '.join(f'{g} {k}' for g, k in info['n'].items())}; "
            f"greedy, stopped at `</think>` or {ev.budget_cap} tokens): share of replies with a reasoning block: "
            f"{pct(info['opens_think'])}; that open and close it within {ev.budget_cap} tokens: "
            f"{pct(info['closes_within_cap'])}. The {ev.budget_quantile:.0%} quantile of the closing position (of the "
            f"replies that closed within the cap; the rest count as unterminated) plus {ev.budget_answer_tokens} "
            f"answer tokens gives {info['measured']['refusal']} (refusal benches) and {info['measured']['reasoning']} "
            f"(maths); budgets used: {info['max_new_tokens']} and {info['reasoning_max_new_tokens']} new tokens "
            f"(never below the configured ones; 0 = no reasoning there).", ""]


def judge_line() -> str:
    """The study's judge (the default judge) and its agreement on the frozen test part of the hand-labelled judge
    set (``r1probe/eval/judges/data/agreement.json``), stated beside the rates it produced."""
    from r1probe.eval.judges.agreement import judge_agreement
    from r1probe.eval.judges.refusal import DEFAULT_JUDGE

    ov = (judge_agreement(DEFAULT_JUDGE) or {}).get("overall") or {}
    if ov.get("refusal_accuracy") is None:
        return f"Judge: `{DEFAULT_JUDGE}` (no frozen-test agreement recorded for it)."
    parts = [f"refusal vs non-refusal accuracy {fmt_ci(ov['refusal_accuracy'], ov.get('refusal_accuracy_ci95'))}"]
    if ov.get("kappa") is not None:
        parts.append(f"4-label Cohen's κ {fmt_ci(ov['kappa'], ov.get('kappa_ci95'))}")
    return (f"Judge: `{DEFAULT_JUDGE}`; on the frozen test part of the hand-labelled judge set (n = {ov.get('n', '?')}, "
            f"`docs/EVAL.md`) its {' and '.join(parts)}: each rate carries that judging error on top of its "
            "sampling interval.")


def stage_times_section(results: dict) -> list[str]:
    """``## Stage times``: each stage's wall time when it last ran (its ``stage.json``), whether this run
    ran it or found it cached, and the machine it ran on."""
    from r1probe.models.loader import machine

    rows, total = [], 0.0
    for name, r in results.items():
        rec = _load(r.path / "stage.json")
        sec = rec.get("seconds")
        if isinstance(sec, (int, float)):
            total += sec
        rows.append(f"| {name} | {sec if sec is not None else '-'} | {rec.get('finished', '-')} | "
                    f"{'cached' if r.skipped else 'ran'} |")
    m = machine()
    return ["## Stage times", "",
            f"Machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none of ' + ', '.join(('avx2', 'avx512_bf16', 'amx_bf16'))}, "
            f"{m['torch_threads']} torch threads{', ' + m['cuda'] if m.get('cuda') else ''}; dtype auto on this CPU: "
            f"{m['cpu_dtype_auto']} ({m['cpu_dtype_reason']}).", "",
            "| stage | seconds | finished | this run |", "|---|---:|---|---|", *rows,
            f"| **total of the stages above** | {total:.0f} | | |", "",
            "A stage found cached shows the time of the run that made it; the report stage is not included.", ""]


def _fmt_diff(r: dict | None) -> str:
    if not r or r.get("diff") is None:
        return "n/a"
    s = fmt_ci(r["diff"], r.get("ci95"))
    if r.get("p_mcnemar") is not None:
        s += f" (p {r['p_mcnemar']:.3g})"
    return s


def write_study_report(ctx, path: Path) -> dict:
    """Write figures and tables under ``path`` and ``out/report.md`` for the run ``ctx`` (a pipeline Context);
    returns what was written."""
    from r1probe.pipeline.settings import edit_names

    s, results, commands, variants, out = ctx.settings, ctx.results, ctx.commands, ctx.variants, ctx.out
    edits = edit_names()
    figs_dir = path / "figures"
    cols, table = collect(results, variants)
    sources = [results[f"eval-{v}"].path / "summary.json" for v in variants if f"eval-{v}" in results]
    written = {"figures": {}, "tables": {}}
    header = ["variant"] + [c[2] for c in cols]
    rows = [[v] + [fmt_ci(table[v][c[2]][0], table[v][c[2]][1:3]) for c in cols] for v in table]
    written["tables"]["metrics"] = write_table(header, rows, path / "metrics", sources=sources,
                                               caption="Safety, over-refusal and reasoning per variant (95% Wilson "
                                                       "interval for rates, bootstrap for the NLL)")
    recs = _records(results, variants)  # every evaluation's records, read once for the paired and fluency tables
    paired = paired_tables(results, variants, cols, path, recs=recs)
    if paired["diff"]:
        drows = [[v] + [_fmt_diff(paired["diff"][v].get(c[2])) for c in cols] for v in paired["diff"]]
        written["tables"]["paired"] = write_table(
            header, drows, path / "paired", sources=sources,
            caption="Paired difference to the unedited model (variant − base) [95% paired interval] (exact McNemar p)")
    try:
        from r1probe.pipeline.stages import tuning_overlap

        overlap_line, overlap_sources = tuning_overlap(ctx)
    except Exception as e:  # noqa: BLE001 - the evaluate stage already refused an overlap; say what happened
        overlap_line, overlap_sources = str(e), []
    rate_cols = [c[2] for c in cols if c[1] in ("RR-1", "RR-2", "refusal_rate", "accuracy")]
    if rate_cols and s.report.figures:
        written["figures"]["metrics"] = plots.metric_bars(
            {v: {c: table[v][c][:3] for c in rate_cols} for v in table}, figs_dir / "metrics",
            title="refusal, over-refusal and accuracy per variant (95% CI)", sources=sources)
    harm_t = next((c[2] for c in cols if c[0] == "chisafety-refusal" and c[1] == "RR-1"), None)
    over_t = next((c[2] for b in ("cvalues-report", "cvalues", "xstest-safe") for c in cols if c[0] == b), None)

    def kind(v: str) -> str:
        if all(part in edits for part in v.split("@s")[0].split("+")):
            return "export"
        return "run-time plan" if v.startswith("plan") else "base"

    if harm_t and over_t and "base" in table and s.report.figures:
        pts = [{"kind": kind(v), "name": v, "over": table[v][over_t][0], "harm": table[v][harm_t][0]} for v in table
               if table[v][harm_t][0] is not None and table[v][over_t][0] is not None]
        written["figures"]["tradeoff"] = plots.tradeoff(
            pts, figs_dir / "tradeoff", x="over", y="harm", xlabel=f"{over_t} (share refused)",
            ylabel=f"{harm_t} (share refused)", title="safety bought against over-refusal", sources=sources,
            label="name")
    over_ts = [c[2] for c in cols if c[0] in ("cvalues-report", "cvalues", "xstest-safe", "or-bench", "zh-harmless")
               and c[1] == "refusal_rate"]
    if harm_t and over_ts and paired["diff"] and s.report.figures:
        def span(r):
            return (r["diff"], *r["ci95"]) if r and r.get("diff") is not None and r.get("ci95") else (None, None, None)

        dpts = [{"kind": kind(v), "name": v, "y": span(row.get(harm_t)), "x": {t: span(row.get(t)) for t in over_ts}}
                for v, row in paired["diff"].items() if span(row.get(harm_t))[0] is not None]
        if dpts:
            written["figures"]["tradeoff_paired"] = plots.tradeoff_paired(
                dpts, figs_dir / "tradeoff_paired", panels=over_ts, ylabel=f"{harm_t}: gain",
                title="refusal gain against each over-refusal rise (variant − base, 95% paired intervals)",
                sources=sources)
    probe = _load(results["probe"].path / "probe.json")
    chosen = probe.get("chosen") or {}
    probe_figs = sorted((results["probe"].path / "figures").glob("*.png")) if (results["probe"].path / "figures").exists() else []
    cmp = _load(results["compare"].path / "compare.json").get("result", {}) if "compare" in results else {}

    md = [f"# r1probe study: {s.model.spec}", "",
          f"Seed {s.seed}; {s.extract.n_train} train prompts per class ({s.extract.harmful} vs {s.extract.harmless}), "
          f"{s.probe.n_val} validation prompts per class for the causal selection; "
          f"limits {json.dumps({b: s.limit(b) for b in s.eval.benches}, ensure_ascii=False)}.", "",
          "## Key numbers", "",
          f"{overlap_line} (tuning records: {', '.join(_rel(p, out) for p in overlap_sources) or 'none'}). Every "
          "bench is evaluated on its *report* part (`r1probe.data.partitions`: CHiSafetyBench is report-only; "
          "CValues, XSTest-safe and OR-Bench-Hard report parts; the zh-harmless test split of the seed; GSM8K test; "
          "CMATH report part), the same items for every variant.", "",
          "Each cell: value [95% Wilson interval] (the NLL: [95% bootstrap interval]). Refusal on CHiSafetyBench "
          "must-refuse questions is the safety gain; refusal on CValues / XSTest-safe / OR-Bench-Hard / zh-harmless "
          "(answerable) is its over-refusal cost; GSM8K and CMATH accuracy and GSM8K gold-solution NLL are the "
          "reasoning cost.", "", judge_line(), ""]
    md += budget_lines(results["budget"].info if "budget" in results else None, s.eval)
    md.append(open(written["tables"]["metrics"]["md"], encoding="utf-8").read())
    if "paired" in written["tables"]:
        md += ["", "### Paired differences to the unedited model", "",
               "Each cell: variant − base over the items both evaluated [95% interval] — rates: Newcombe's paired "
               "score interval with the exact McNemar p on the discordant pairs; NLL: paired bootstrap.", "",
               open(written["tables"]["paired"]["md"], encoding="utf-8").read()]
    if paired["tost"] or paired["nll_ratio"]:
        md += ["", "### Reasoning retention", "",
               f"Paired TOST of accuracy, equivalence margin ±{TOST_MARGIN * 100:g} points (α = 0.05; equivalent when "
               "the 90% interval of the paired difference lies inside the margin), and the GSM8K gold-NLL ratio "
               "(variant / base, paired bootstrap 95% interval).", "",
               "| variant | bench | n | difference [90% CI] | TOST p | equivalent | GSM8K NLL ratio [95% CI] |",
               "|---|---|---:|---|---:|---|---|"]
        for v in sorted(set(paired["tost"]) | set(paired["nll_ratio"])):
            nr = paired["nll_ratio"].get(v)
            nrs = fmt_ci(nr["ratio"], nr["ci95"], 4) if nr else "n/a"
            for bench, t in (paired["tost"].get(v) or {"—": None}).items():
                if t is None:
                    md.append(f"| {v} | — | | | | | {nrs} |")
                    continue
                eq = {True: "yes", False: "not shown", None: "n/a"}[t["equivalent"]]
                md.append(f"| {v} | {bench} | {t['n']} | {fmt_ci(t['diff'], t['ci90'])} | "
                          f"{'n/a' if t['p'] is None else format(t['p'], '.3g')} | {eq} | {nrs} |")
    fluency = fluency_tables(recs)
    if fluency:
        from r1probe.provenance import atomic_write_json

        atomic_write_json(path / "fluency.json", fluency)
        md += [""] + fluency_section(fluency)
    md += [""] + fit_seed_section(table, cols)
    md += ["", f"Per-item outcomes behind every number: `{_rel(paired['per_sample'], out)}`.", ""]
    e = s.edit
    lay = "the middle layer" if e.rank1_gate_layer < 0 else f"layer {e.rank1_gate_layer}"
    legend = {
        "base": "the unedited model",
        "orthogonalize": "exported checkpoint with the refusal direction removed from every residual write",
        "rank1-gate": f"exported checkpoint with the rank-one read/write edit W ← W + {e.rank1_gate_lam:g} r̂aᵀ in the "
                      f"MLP output projection of {lay} (r̂: that layer's difference-in-means direction; a: a read vector "
                      "fitted to fire on harmful prompts and stay silent on harmless prompts and GSM8K solutions; "
                      "`r1probe edit --op rank1-gate`)",
        "rank1-gate-borderline": f"the rank1-gate edit (λ {e.rank1_gate_lam:g}) with the read vector also kept silent "
                                 f"on {e.rank1_gate_borderline} CValues borderline prompts (sensitive but answerable; "
                                 "`--borderline`)"
                                 + (f" and on the whole dev parts of {', '.join(e.rank1_gate_extra_benign)} "
                                    "(`--extra-benign`)" if e.rank1_gate_extra_benign else ""),
        "amplify": f"exported checkpoint with the direction amplified in the output projections of layers "
                   f"{e.amplify_layers} (W ← (I + {e.amplify_beta:g} r̂r̂ᵀ) W)",
        "plan-conditional": "run-time CAST-style plan (add the direction only to prompts whose projection passes the gate)",
        "plan-add": "unconditional addition",
        "plan-alphasteer": f"run-time AlphaSteer as published (at the inputs of layers {s.plan.alphasteer_layers}, "
                           f"every prompt token gets {s.plan.alphasteer_strength:g} (a·x_last) r, a fitted in the null "
                           f"space of harmless and {s.plan.alphasteer_borderline} CValues contrast prompts; "
                           "`r1probe.steering.alphasteer`)",
        "gate-mlp": "exported checkpoint with gate neurons added to the MLP (`r1probe edit --op gate-mlp`)",
    }
    present = {v.split("@s")[0] for v in table}
    parts = [f"`{k}` = {d}" for k, d in legend.items() if k in present]
    if any("@s" in v and not v.startswith("plan-") for v in table):
        parts.append(f"`rank1-gate@sK` = rank1-gate refitted on a seeded {e.rank1_gate_fit_fraction:g} subsample of "
                     "each part of its fit data (seed K)")
    if any(v.startswith("plan-alphasteer@s") for v in table):
        parts.append(f"`plan-alphasteer@sK` = AlphaSteer refitted on a seeded {s.plan.alphasteer_fit_fraction:g} "
                     "subsample of each part of its fit data (seed K)")
    md += ["Variants: " + "; ".join(parts) + ".", ""]
    md += gate_lines(results, table)
    if chosen:
        sc = {k: chosen.get(k) for k in ("bypass", "induce", "kl") if k in chosen}
        md += ["## Refusal direction", "",
               f"Chosen cell: layer {chosen.get('layer')}, position {chosen.get('pos')} "
               f"(‖d‖ = {chosen.get('norm', float('nan')):.3g}); selection scores {json.dumps(sc)}.", ""]
        md += [f"![{p.stem}]({_rel(p, out)})" for p in probe_figs] + [""]
    if "separability" in results and (results["separability"].path / "separability.json").exists():
        from r1probe.analysis.separability import separability_section

        md += [separability_section(results["separability"].path, rel_to=out), ""]
    if cmp:
        ch = cmp.get("chosen", {})
        md += ["## Base vs orthogonalised export", ""]
        if ch:
            pj = ch.get("projection", {})
            md += [f"At layer {ch.get('layer')}: mean |projection| on the removed direction "
                   f"{pj.get('base', {}).get('abs_mean', float('nan')):.3g} (base) vs "
                   f"{pj.get('orthogonalized', {}).get('abs_mean', float('nan')):.3g} (export); AUROC along the removed "
                   f"direction {ch.get('auroc', {})}.", ""]
        lg = cmp.get("probe_curves", {}).get("orthogonalized", {}).get("logistic", {}).get("auroc", [])
        if lg:
            finite = [x for x in lg if x is not None]
            md += [f"Harmfulness stays linearly decodable in the export along other directions: logistic-probe AUROC "
                   f"max {max(finite):.3f}, median {sorted(finite)[len(finite) // 2]:.3f} over layers.", ""]
        for k, f in cmp.get("figures", {}).items():
            md.append(f"![{k}]({_rel(Path(f['png']), out)})")
        md.append("")
    if written["figures"]:
        md += ["## Figures", ""] + [f"![{k}]({_rel(Path(f['png']), out)})" for k, f in written["figures"].items()] + [""]
    md += stage_times_section(results)
    md += settings_section(ctx)
    md += ["## Reproduce", "", "The same study, stage by stage with the verbs:", "", "```bash"] + \
          [commands[k] for k in commands] + ["```", "",
           "Every figure and table has a `.json` sidecar naming the artifacts (and sha256) it was drawn from.", "",
           "## Versions", "", "```json", json.dumps(library_versions(), indent=1), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    return {"report": str(out / "report.md"), **{k: list(v) for k, v in written.items()}}
