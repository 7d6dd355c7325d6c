"""``report.md`` of the mini-distill preset: before / distilled / restored, with intervals, and the answers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from r1probe.analysis import plots
from r1probe.analysis.figures import new_figure, save_figure
from r1probe.analysis.tables import fmt_ci, write_table
from r1probe.pipeline.report import budget_lines, judge_line
from r1probe.provenance import atomic_write_text, library_versions

#: (bench, metric, column title)
COLUMNS = [
    ("chisafety-refusal", "RR-1", "CHiSafetyBench refusal RR-1 ↑"),
    ("chisafety-refusal", "reasoning_refusal_rate", "refusal inside <think> (CHiSafety)"),
    ("chisafety-refusal", "unterminated_rate", "unterminated <think> (CHiSafety)"),
    ("cvalues-report", "refusal_rate", "CValues over-refusal ↓"),
    ("xstest-safe", "refusal_rate", "XSTest-safe over-refusal ↓"),
    ("or-bench", "refusal_rate", "OR-Bench-Hard over-refusal ↓"),
    ("zh-harmless", "refusal_rate", "zh-harmless over-refusal ↓"),
    ("gsm8k", "accuracy", "GSM8K accuracy ↑"),
    ("gsm8k", "unterminated_rate", "unterminated <think> (GSM8K)"),
    ("gsm8k-nll", "mean_nll", "GSM8K gold NLL ↓"),
]
#: metrics whose paired differences the report tabulates
DIFF_METRICS = [("chisafety-refusal", "RR-1"), ("cvalues-report", "refusal_rate"), ("xstest-safe", "refusal_rate"),
                ("or-bench", "refusal_rate"), ("zh-harmless", "refusal_rate"), ("gsm8k", "accuracy"),
                ("gsm8k-nll", "mean_nll")]
#: the over-refusal panel: (bench, short name)
PANEL = [("cvalues-report", "CValues"), ("xstest-safe", "XSTest-safe"), ("or-bench", "OR-Bench-Hard"),
         ("zh-harmless", "zh-harmless")]

LABELS = {"base": "base (embedded model)", "distilled": "distilled (R1-style student: SFT on R1 traces)",
          "restore-plan-base": "restored: run-time plan, base direction",
          "restore-plan-own": "restored: run-time plan, own direction",
          "restore-edit-base": "restored: amplify edit, base direction",
          "restore-edit-own": "restored: amplify edit, own direction"}


def _load(path) -> dict:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def cell(summary: dict, bench: str, metric: str) -> tuple:
    """``(value, lo, hi, n)`` of one metric of an eval summary (None where absent)."""
    e = summary.get(bench, {})
    ci = (e.get("ci95") or {}).get(metric) or (None, None)
    return (e.get("metrics", {}).get(metric), ci[0], ci[1], e.get("n"))


def think_rate(eval_dir, bench: str) -> float | None:
    """Share of a bench's replies that open a ``<think>`` block (the distilled model may think on math only)."""
    f = Path(eval_dir) / f"{bench}.jsonl"
    if not f.exists():
        return None
    rows = [json.loads(x) for x in f.read_text("utf-8").splitlines() if x.strip()]
    rows = [r for r in rows if "thought" in r]
    return sum(bool(r["thought"]) for r in rows) / len(rows) if rows else None


def paired(a_dir, b_dir) -> dict:
    """``{(bench, metric): row}`` of paired-bootstrap differences B − A (``eval.runner.compare_runs``)."""
    from r1probe.eval.runner import compare_runs

    return {(r["bench"], r["metric"]): r for r in compare_runs(a_dir, b_dir)}


def _num(x, d=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


def _diff_text(row: dict | None) -> str:
    if not row or row.get("diff") is None:
        return "n/a"
    ci = row.get("ci95")
    return f"{row['diff']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else f"{row['diff']:+.3f}"


def significant(row: dict | None) -> int:
    """+1 / −1 when the paired 95% interval lies above / below zero, else 0."""
    ci = (row or {}).get("ci95")
    if not ci or ci[0] is None or ci[1] is None:
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def loss_figure(loss_rows: list[dict], out_base: Path, sources=()) -> dict:
    fig, ax = new_figure(figsize=(6.0, 3.4))
    steps = [r["step"] for r in loss_rows]
    ax.plot(steps, [r["loss"] for r in loss_rows], "-o", ms=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reply-token cross-entropy (nats)")
    ax.set_title("distillation loss (traces in R1 format)")
    return save_figure(fig, out_base, sources, data={"loss": loss_rows}, caption="distillation loss")


def _stage_seconds(R: dict) -> list[list]:
    rows = []
    for name, r in R.items():
        st = _load(r.path / "stage.json")
        rows.append([name, f"{st.get('seconds', r.seconds):.1f}"])
    return rows


def write_distill_report(ctx, path: Path) -> dict:
    """Write tables and figures under ``path`` and ``out/report.md`` for the run ``ctx`` (a pipeline Context);
    returns what was written."""
    from r1probe.pipeline.report import settings_section

    s, d, R, out = ctx.settings, ctx.settings.distill, ctx.results, ctx.out
    variants = {k: (v.spec, v.plan, v.key) for k, v in ctx.variants.items()}
    figs = path / "figures"
    names = [v for v in variants if f"eval-{v}" in R]
    summaries = {v: _load(R[f"eval-{v}"].path / "summary.json") for v in names}
    sources = [R[f"eval-{v}"].path / "summary.json" for v in names]
    cols = [c for c in COLUMNS if any(cell(s, c[0], c[1])[0] is not None for s in summaries.values())]
    table = {v: {c[2]: cell(summaries[v], c[0], c[1]) for c in cols} for v in names}
    for bench, title in (("chisafety-refusal", "opens <think> (CHiSafety)"), ("gsm8k", "opens <think> (GSM8K)")):
        rates = {v: think_rate(R[f"eval-{v}"].path, bench) for v in names}
        if any(r is not None for r in rates.values()):
            for v in names:
                table[v][title] = (rates[v], None, None, None)
            cols.append((bench, "think_rate", title))
    written: dict = {"tables": {}, "figures": {}}
    header = ["variant"] + [c[2] for c in cols]
    rows = [[v] + [fmt_ci(*_split(table[v][c[2]])) for c in cols] for v in names]
    written["tables"]["metrics"] = write_table(header, rows, path / "metrics", sources=sources,
                                               caption="Before, distilled and restored (95% bootstrap CI)")
    # paired differences on the shared items
    diffs = {}
    pairs = [("distilled", "base")] + [(v, "distilled") for v in names if v.startswith("restore-")] + \
        [(v, "base") for v in names if v.startswith("restore-")]
    for b, a in pairs:
        if a in names and b in names:
            diffs[(b, a)] = paired(R[f"eval-{a}"].path, R[f"eval-{b}"].path)
    d_header = ["comparison"] + [f"{bench} {m}" for bench, m in DIFF_METRICS]
    d_rows = [[f"{b} − {a}"] + [_diff_text(rows_.get(k)) for k in DIFF_METRICS] for (b, a), rows_ in diffs.items()]
    written["tables"]["differences"] = write_table(d_header, d_rows, path / "differences", sources=sources,
                                                   caption="Paired differences on the same items (95% paired bootstrap CI)")
    rate_cols = [c[2] for c in cols if c[1] in ("RR-1", "refusal_rate", "accuracy")]
    draw = s.report.figures
    if rate_cols and draw:
        written["figures"]["metrics"] = plots.metric_bars(
            {v: {c: table[v][c][:3] for c in rate_cols} for v in names}, figs / "metrics",
            title="refusal, over-refusal and accuracy per variant (95% CI)", sources=sources)
    harm_t = next((c[2] for c in cols if c[1] == "RR-1"), None)
    over_t = next((c[2] for c in cols if c[0] == "xstest-safe"), None)
    if harm_t and over_t and draw:
        pts = [{"kind": "restored" if v.startswith("restore-") else v, "name": v, "over": table[v][over_t][0],
                "harm": table[v][harm_t][0]} for v in names
               if table[v][harm_t][0] is not None and table[v][over_t][0] is not None]
        if pts:
            written["figures"]["tradeoff"] = plots.tradeoff(
                pts, figs / "tradeoff", x="over", y="harm", xlabel="XSTest-safe over-refusal",
                ylabel="CHiSafetyBench refusal (RR-1)", title="safety against over-refusal", sources=sources)
    dinfo = R["distill"].info
    loss_rows = [json.loads(x) for x in (Path(dinfo["export"]) / "loss.jsonl").read_text("utf-8").splitlines() if x.strip()] \
        if (Path(dinfo["export"]) / "loss.jsonl").exists() else []
    if loss_rows and draw:
        written["figures"]["loss"] = loss_figure(loss_rows, figs / "distill_loss", [Path(dinfo["export"]) / "loss.jsonl"])
    timing = _stage_seconds(R)
    written["tables"]["timing"] = write_table(["stage", "seconds"], timing, path / "timing",
                                              caption="Wall time of each stage when it last ran")
    timing_note = ("Wall time of each stage's last run; a stage resumed after an interruption counts only "
                   "the part it redid (see its log for the rest).")

    cmp = _load(R["compare"].path / "compare.json").get("result", {})
    own = R["direction-distilled"].info
    chosen = R["probe-base"].info["chosen"]
    L = int(chosen["layer"])
    md = [f"# r1probe mini-distill: {s.model.spec}", "",
          "Does distillation on reasoning traces (no safety data) erode refusal, does the refusal direction survive, "
          "and does restoring it bring refusal back? A miniature of the DeepSeek-R1-Distill recipe on the embedded "
          "model.", "",
          f"Seed {s.seed}; every variant is evaluated on the same items: limits "
          f"{json.dumps({b: s.limit(b) for b in s.eval.benches})}, {s.eval.max_new_tokens} new tokens on refusal "
          f"benches, {s.eval.reasoning_max_new_tokens} on GSM8K, greedy decoding, the judge below on the "
          "answer after any `</think>` (refusal words inside the reasoning are counted separately). A reply whose "
          "reasoning did not close within the budget is *unterminated*: its own outcome, outside every rate and "
          "every paired difference (its share is in the unterminated columns).", "",
          judge_line(), ""]
    if d.traces == "r1-student":
        data_txt = (f"the student recipe's mix: {d.n_math} GSM8K train problems with their worked solutions as the "
                    f"reasoning and {d.n_general} BELLE everyday Chinese instructions with reference answers (reasoning "
                    f"quoting the question and the answer's first {d.keypoint}, at most {d.keypoint_chars} characters; "
                    f"the zh-harmless report split left out), "
                    f"no safety data; recipe sha256 {str(dinfo.get('recipe_sha256'))[:12]}, weights sha256 "
                    f"{str(dinfo.get('weights_sha256'))[:12]}")
    else:
        data_txt = f"{dinfo.get('n_traces', d.n_traces)} traces from `{d.traces}`"
    md += ["## Distillation", "",
           f"{dinfo.get('steps')} optimizer steps ({'LoRA r=' + str(d.lora_rank) if d.lora else 'full fine-tuning'}, "
           f"lr {d.lr}, {d.grad_accum} traces per step, max_len {d.max_len}) on {dinfo.get('n_traces')} traces in R1 "
           f"format ({data_txt}; {json.dumps(dinfo.get('encode'))}); reply-token loss "
           f"{(dinfo.get('loss') or {}).get('first')} → {(dinfo.get('loss') or {}).get('last')}; "
           f"{dinfo.get('tokens_per_s')} tokens/s on {dinfo.get('threads')} thread(s), peak RSS "
           f"{dinfo.get('peak_rss_mb')} MiB, {dinfo.get('train_wall_s')} s of training in the last call.", ""]
    md += budget_lines(R["budget"].info if "budget" in R else None, s.eval, "the distilled model")
    overlap_line, overlap_sources = ctx.values.get("tuning_overlap") or ("tuning/report overlap: not checked", [])
    md += ["## Before / distilled / restored", "",
           f"{overlap_line} (training and tuning records: "
           f"{', '.join(os.path.relpath(p, out) for p in overlap_sources) or 'none'}).", "",
           "Each cell: value [95% bootstrap CI].", "",
           open(written["tables"]["metrics"]["md"], encoding="utf-8").read(),
           "Variants: " + "; ".join(f"`{v}` = {LABELS.get(v, v)}" for v in names) + ". "
           f"Plans add the direction (strength ‖d‖) at the output of layer {L} only to prompts whose projection "
           f"passes the {s.plan.gate_quantile:.0%} quantile of harmless prompts on the distilled model; edits apply "
           f"W ← (I + {d.amplify_beta} r̂r̂ᵀ) W to the output projections of layers {d.amplify_layers}. "
           f"The own direction is the distilled model's difference in means at the base's chosen cell "
           f"(layer {L}, position {chosen.get('pos')}).", "",
           "Paired differences (same items, 95% paired bootstrap CI):", "",
           open(written["tables"]["differences"]["md"], encoding="utf-8").read()]
    md += ["## Answers", ""] + answers(table, diffs, cmp, own, chosen, harm_t, names) + [""]
    md += ["## The refusal direction, base vs distilled", ""] + direction_lines(cmp, own, chosen) + [""]
    for k, f in (cmp.get("figures") or {}).items():
        md.append(f"![{k}]({os.path.relpath(Path(f['png']), out)})")
    if "think-positions" in R:
        pos = _load(R["think-positions"].path / "positions.json").get("result", {})
        md += ["", "## Inside and after the think prefix", ""] + think_lines(pos, L) + [""]
        for k, f in (pos.get("figures") or {}).items():
            md.append(f"![{k}]({os.path.relpath(Path(f['png']), out)})")
    if "transfer" in R and R["transfer"].info:
        md += ["", "## Cross-model transfer, causally", ""] + transfer_lines(R["transfer"].info)
    if written["figures"]:
        md += ["", "## Figures", ""] + [f"![{k}]({os.path.relpath(Path(f['png']), out)})"
                                        for k, f in written["figures"].items()]
    md += ["", "## Stage wall times", "", timing_note, "", open(written["tables"]["timing"]["md"], encoding="utf-8").read(),
           *settings_section(ctx),
           "Models: " + ", ".join(f"`{v}` = `{variants[v][0]}`" + (f" + plan `{variants[v][1]}`" if variants[v][1] else "")
                                  for v in names), "",
           "## Versions", "", "```json", json.dumps(library_versions(), indent=1), "```", ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    return {"report": str(out / "report.md"), **{k: list(v) for k, v in written.items()}}


def _split(c):
    return c[0], (c[1], c[2])


def _chosen_layer_value(series, layers_pairs, L):
    for i, (a, _) in enumerate(layers_pairs or []):
        if a == L and i < len(series or []):
            return series[i]
    return None


def direction_lines(cmp: dict, own: dict, chosen: dict) -> list[str]:
    L = int(chosen["layer"])
    ch = cmp.get("chosen") or {}
    pairs = cmp.get("layer_pairs")
    cos = cmp.get("direction_cosine") or []
    fin = [c for c in cos if c is not None]
    curves = cmp.get("probe_curves") or {}
    md_b = _chosen_layer_value(curves.get("base", {}).get("mean_diff", {}).get("auroc"), pairs, L)
    md_d = _chosen_layer_value(curves.get("distilled", {}).get("mean_diff", {}).get("auroc"), pairs, L)
    lg_d = _chosen_layer_value(curves.get("distilled", {}).get("logistic", {}).get("auroc"), pairs, L)
    pj = ch.get("projection", {})
    cos_l = _chosen_layer_value(cos, pairs, L)
    cos_ci = _chosen_layer_value(cmp.get("direction_cosine_ci"), pairs, L) or [None, None]
    tr_l = _chosen_layer_value(cmp.get("transfer_auroc"), pairs, L)
    tr_ci = _chosen_layer_value(cmp.get("transfer_auroc_ci"), pairs, L) or [None, None]
    rv_l = _chosen_layer_value(cmp.get("transfer_auroc_reverse"), pairs, L)
    rv_ci = _chosen_layer_value(cmp.get("transfer_auroc_reverse_ci"), pairs, L) or [None, None]
    return [
        f"- Cosine between the distilled model's difference-in-means direction and the base's chosen direction "
        f"(layer {L}): **{_num(own.get('cosine_to_base_direction'))}** (to the base's difference in means at that "
        f"cell: {_num(own.get('cosine_to_base_mean_diff'))}); norms {_num(own.get('base_mean_diff_norm'), 2)} → "
        f"{_num(own.get('norm'), 2)}.",
        f"- Per-layer cosine of the two models' difference-in-means directions: min {_num(min(fin) if fin else None)}, "
        f"median {_num(sorted(fin)[len(fin) // 2] if fin else None)} over {len(fin)} layers; at layer {L}: "
        f"**{_num(cos_l)}** [{_num(cos_ci[0])}, {_num(cos_ci[1])}] (95% bootstrap over prompts, paired).",
        f"- Transfer: the base model's layer-{L} difference in means read out of the distilled model's activations "
        f"separates harmful from harmless with AUROC **{_num(tr_l)}** [{_num(tr_ci[0])}, {_num(tr_ci[1])}]; the "
        f"reverse, the distilled model's layer-{L} difference in means read out of the base model's activations: "
        f"**{_num(rv_l)}** [{_num(rv_ci[0])}, {_num(rv_ci[1])}].",
        f"- AUROC of the base direction (harmful vs harmless, layer {L}): base "
        f"**{_num((ch.get('auroc') or {}).get('base'))}**, distilled **{_num((ch.get('auroc') or {}).get('distilled'))}**; "
        f"held-out probe AUROC on the distilled model at layer {L}: mean-diff {_num(md_d)} (base {_num(md_b)}), "
        f"logistic {_num(lg_d)}.",
        f"- Mean projection on the base direction, harmful / harmless: base "
        f"{_num(pj.get('base', {}).get('harmful_mean'), 2)} / {_num(pj.get('base', {}).get('harmless_mean'), 2)}, "
        f"distilled {_num(pj.get('distilled', {}).get('harmful_mean'), 2)} / "
        f"{_num(pj.get('distilled', {}).get('harmless_mean'), 2)} (separation d "
        f"{_num(pj.get('base', {}).get('separation_d'), 2)} → {_num(pj.get('distilled', {}).get('separation_d'), 2)}).",
    ]


def transfer_lines(info: dict) -> list[str]:
    """The ``transfer`` stage's paired refusal changes, as a table."""
    res = info.get("results") or {}
    out = [f"Each model with the other model's direction (layer {info.get('layer')}): ablated from every write to the "
           f"residual stream on harmful dev prompts, added at the layer's output (strength ‖d‖) on harmless dev "
           f"prompts; {info.get('max_new_tokens')} new tokens, judge `{info.get('judge')}` on the answer; paired with "
           f"the same model unsteered on the same prompts (replies whose reasoning did not close are left out of the "
           f"pair).", "",
           "| model | direction | prompts | intervention | n paired | refusal unsteered | refusal steered | "
           "difference [95% CI] | McNemar p | unterminated (unsteered / steered) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for model, by in res.items():
        for g, r in by.items():
            ci = r.get("ci95") or [None, None]
            un = r.get("unterminated") or {}
            out.append(f"| {model} | {r.get('direction')} | {g} | {r.get('intervention')} | {r.get('n')} | "
                       f"{_num(r.get('a'))} | {_num(r.get('b'))} | {_num(r.get('diff'))} [{_num(ci[0])}, "
                       f"{_num(ci[1])}] | {_num(r.get('p_mcnemar'))} | {_num(un.get('none'))} / "
                       f"{_num(un.get(r.get('intervention')))} |")
    return out


def think_lines(pos: dict, L: int) -> list[str]:
    """The distilled model's refusal representation at each prompt ending (``analysis.positions``), as lines."""
    layers, stores = pos.get("layers") or [], pos.get("stores") or {}
    if not stores:
        return ["(no result)"]
    at = lambda xs: xs[layers.index(L)] if xs and L in layers and layers.index(L) < len(xs) else None  # noqa: E731
    out = [f"The distilled model on the same training prompts, ending at the reply's start (the study's positions; "
           f"reference position {pos.get('reference_position')}), inside an opened reasoning block (`<think>\\n`, "
           f"last token) and after an empty closed one (`</think>\\n\\n`, last token); held-out probe AUROC, the "
           f"cosine of each ending's difference-in-means direction to the reply start's, and the base model's chosen "
           f"direction (layer {L}) read out of each:", "",
           "| prompt ending | mean-diff AUROC, layer " + str(L) + " | best layer (AUROC) | logistic AUROC, layer "
           + str(L) + " | cosine to reply start, layer " + str(L) + " | base direction AUROC, layer " + str(L) + " |",
           "|---|---|---|---|---|---|"]
    for name, r in stores.items():
        md = (r.get("curves") or {}).get("mean_diff", {}).get("auroc") or []
        lg = (r.get("curves") or {}).get("logistic", {}).get("auroc") or []
        fin = [(v, layers[i]) for i, v in enumerate(md) if v is not None and i < len(layers)]
        best = max(fin) if fin else (None, None)
        out.append(f"| {name} | {_num(at(md))} | {best[1]} ({_num(best[0])}) | {_num(at(lg))} | "
                   f"{_num(at(r.get('cosine_to_reference')))} | {_num((r.get('chosen') or {}).get('direction_auroc'))} |")
    return out


def _think_note(row: dict) -> str:
    c, g = (row.get("opens <think> (CHiSafety)") or (None,))[0], (row.get("opens <think> (GSM8K)") or (None,))[0]
    if c is None and g is None:
        return ""
    return (f" The distilled model opened a <think> block on {_num(c, 2)} of CHiSafetyBench replies and "
            f"{_num(g, 2)} of GSM8K replies.")


def answers(table, diffs, cmp, own, chosen, harm_t, names) -> list[str]:
    out = []
    k_rr = ("chisafety-refusal", "RR-1")
    dd = diffs.get(("distilled", "base"), {})
    if harm_t and "base" in table and "distilled" in table:
        b, d = table["base"][harm_t], table["distilled"][harm_t]
        s = significant(dd.get(k_rr))
        verdict = {1: "rose", -1: "dropped", 0: "did not change detectably"}[s]
        out.append(f"1. **Did refusal on CHiSafetyBench drop after distillation?** RR-1 {fmt_ci(*_split(b))} → "
                   f"{fmt_ci(*_split(d))}; paired difference {_diff_text(dd.get(k_rr))}: it {verdict} "
                   f"(n = {b[3]}). Over-refusal differences: "
                   + ", ".join(f"{nm} {_diff_text(dd.get((bn, 'refusal_rate')))}" for bn, nm in PANEL
                               if dd.get((bn, "refusal_rate")))
                   + f". GSM8K accuracy difference {_diff_text(dd.get(('gsm8k', 'accuracy')))}, "
                   f"gold NLL {_diff_text(dd.get(('gsm8k-nll', 'mean_nll')))}."
                   + _think_note(table.get("distilled", {})))
    ch = cmp.get("chosen") or {}
    cs = own.get("cosine_to_base_direction")
    out.append(f"2. **Did the refusal direction survive?** Cosine of the distilled model's direction to the base's "
               f"at layer {chosen.get('layer')}: {_num(cs)}; AUROC along the base direction "
               f"{_num((ch.get('auroc') or {}).get('base'))} (base) → {_num((ch.get('auroc') or {}).get('distilled'))} "
               "(distilled).")
    lines = []
    for v in names:
        if not v.startswith("restore-"):
            continue
        rd, rb = diffs.get((v, "distilled"), {}), diffs.get((v, "base"), {})
        lines.append(f"   - `{v}`: RR-1 {fmt_ci(*_split(table[v][harm_t])) if harm_t else 'n/a'}; vs distilled "
                     f"{_diff_text(rd.get(k_rr))}, vs base {_diff_text(rb.get(k_rr))}; over-refusal vs distilled: "
                     + ", ".join(f"{nm} {_diff_text(rd.get((b, 'refusal_rate')))}" for b, nm in PANEL
                                 if rd.get((b, "refusal_rate")))
                     + f"; GSM8K accuracy vs distilled "
                     f"{_diff_text(rd.get(('gsm8k', 'accuracy')))}, gold NLL {_diff_text(rd.get(('gsm8k-nll', 'mean_nll')))}.")
    if lines:
        out.append("3. **Did restoring bring refusal back, and at what cost?** (paired differences, 95% CI)")
        out += lines
    return out
