"""The study preset of ``r1probe run``: extract -> probe and select -> separability -> edits and plans -> token
budgets (for a model that thinks) -> evaluate every variant -> compare (base vs orthogonalised export) -> report.

Each step is a stage function of :mod:`r1probe.pipeline.stages` (cached: a rerun after a crash or a
settings change redoes only what changed); this module only lists them in order.
"""

from __future__ import annotations

from r1probe.pipeline import stages as S
from r1probe.pipeline.stages import Context


def extract(ctx: Context) -> None:
    S.extract(ctx)


def probe(ctx: Context) -> None:
    # the rank1-gate edit writes the difference-in-means direction of its layer: always probe that layer
    S.probe(ctx, include_layers=lambda n: (S.rank1_gate_layer(ctx.settings, n),))


def separability(ctx: Context) -> None:
    if ctx.settings.separability.n:
        S.separability(ctx)


def edits(ctx: Context) -> None:
    ctx.variants["base"] = S.Variant(ctx.settings.model.spec, None, ctx.base_key)
    for variant in ctx.settings.edit.edits:
        S.edit(ctx, variant)
        if variant.startswith("rank1-gate"):  # refits on seeded subsamples: the spread across fits
            for k in ctx.settings.edit.fit_seeds:
                S.edit(ctx, variant, fit_seed=k)


def plans(ctx: Context) -> None:
    for kind in ctx.settings.plan.plans:
        S.plan(ctx, kind)
        if kind == "alphasteer":  # refits on seeded subsamples: the spread across fits
            for k in ctx.settings.plan.alphasteer_fit_seeds:
                S.plan(ctx, kind, fit_seed=k)


def budget(ctx: Context) -> None:
    # a model that thinks gets token budgets its reasoning closes within (one that does not keeps the configured)
    S.budget(ctx, ctx.settings.model.spec, ctx.base_key)


def evaluate(ctx: Context) -> None:
    # refuses (naming the items) before any generation when a tuning step read a reported item
    ctx.values["tuning_overlap"] = S.tuning_overlap(ctx)
    ctx.log(ctx.values["tuning_overlap"][0])
    for variant in list(ctx.variants):
        S.evaluate(ctx, variant)


def compare(ctx: Context) -> None:
    name = ctx.settings.compare.edit
    if name not in ctx.variants or f"edit-{name}" not in ctx.results:
        return
    spec = ctx.variants[name].spec
    S.extract(ctx, f"extract-{name}", spec=spec, key=ctx.results[f"edit-{name}"].key)
    S.compare(ctx, "extract", f"extract-{name}", names=("base", "orthogonalized" if name == "orthogonalize" else name),
              spec_b=spec)


def report(ctx: Context) -> None:
    from r1probe.pipeline.report import write_study_report

    ctx.stage("report", "report", {k: v.key for k, v in ctx.results.items()},
              lambda path: write_study_report(ctx, path))


STAGES = (extract, probe, separability, edits, plans, budget, evaluate, compare, report)
