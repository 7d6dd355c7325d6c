"""``r1probe probe``: train probes on an activation store and select the refusal direction; ``probe report``."""

from __future__ import annotations

import click

from r1probe.cli_options import (ProgressBars, model_options, pop_model_options, quiet_option, settings_from_flags,
                                 settings_options)
from r1probe.probes.select import SelectConfig


def _ints(text: str | None, flag: str = "--layers"):
    if text in (None, "", "all"):
        return None
    out = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if part == "embed":
                out.append(-1)
            elif "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, None)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except (TypeError, ValueError):
        from r1probe.errors import R1ProbeError

        raise R1ProbeError(f"{flag} {text!r}: expected all, N, A-B or a comma list of them") from None
    return out


def _check_selection(store_path: str, layers, positions, site: str, estimators: list[str]) -> None:
    """One-line errors, before any work, for a selection the store cannot serve (nothing would be fitted)."""
    from r1probe.errors import R1ProbeError
    from r1probe.extract.store import ActivationStore

    store = ActivationStore(store_path)
    if not estimators:
        raise R1ProbeError("--estimators: give at least one estimator")
    if site not in store.sites:
        raise R1ProbeError(f"--site {site}: the store holds {', '.join(store.sites)}")

    def span(xs):
        return ", ".join(map(str, xs)) if len(xs) <= 8 else f"{xs[0]}..{xs[-1]} ({len(xs)})"

    missing = [x for x in (layers or []) if x not in store.layers]
    if missing:
        raise R1ProbeError(f"--layers: the store has no layer {span(missing)} (it holds layers {span(store.layers)})")
    have = [p for p in store.positions if isinstance(p, int)]
    missing = [x for x in (positions or []) if x not in have]
    if missing:
        raise R1ProbeError(f"--positions: the store has no position {span(missing)} (it holds {span(have)})")
    if not have and positions is None:
        raise R1ProbeError(f"{store_path}: the store has no offset positions to probe (it holds {span(store.positions)})")


@click.group(invoke_without_command=True)
@click.option("--store", "store", type=click.Path(exists=True, file_okay=False), help="Activation store (r1probe extract --out).")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Output folder (directions.safetensors + probe.json).")
@model_options()
@click.option("--harmful-val", default="builtin:zh-harmful", show_default=True, help="Harmful validation prompts (spec).")
@click.option("--harmless-val", default="builtin:zh-harmless", show_default=True, help="Harmless validation prompts (spec).")
@click.option("--val-split", default="val", show_default=True, help="Split of the validation specs (train/val/test, or 'none').")
@settings_options(SelectConfig)
@click.option("--layers", default="all", show_default=True, help="Layers to probe: all, 8-16, 4,8,12, embed.")
@click.option("--positions", default="all", show_default=True, help="Positions to probe: all or offsets like -1,-3.")
@click.option("--estimators", default="mean_diff,logistic,pca,lda", show_default=True, help="Estimators to fit.")
@click.option("--candidates", default="mean_diff", show_default=True, type=click.Choice(["mean_diff", "lda", "pca"]),
              help="Whose directions the causal search scores (lda: the mean difference whitened by a shrunk covariance).")
@click.option("--site", default="resid_post", show_default=True, help="Store site to read.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2), help="Cross-validation folds.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-select", is_flag=True, help="Only fit and cross-validate probes (no model needed).")
@click.option("--report/--no-report", default=False, show_default=True, help="Also draw the figures.")
@quiet_option
@click.pass_context
def probe(ctx, **kw):
    """Find the refusal direction: probes per (layer, position), then causal selection.

    \b
    Example:
      r1probe extract --harmful builtin:zh-harmful:train --harmless builtin:zh-harmless:train --out acts/
      r1probe probe --store acts/ --out probe/
      r1probe probe report probe/
    """
    if ctx.invoked_subcommand is not None:
        return
    import time

    from r1probe.cli_options import load_from_options
    from r1probe.errors import R1ProbeError
    from r1probe.probes.api import run_probe
    from r1probe.provenance import check_writable_dir

    if not kw.get("store") or not kw.get("out"):
        raise R1ProbeError("r1probe probe needs --store DIR and --out DIR (or: r1probe probe report DIR)")
    t0 = time.time()
    mopts = pop_model_options(kw)
    cfg = SelectConfig(**settings_from_flags(kw, SelectConfig))
    positions = None if kw["positions"] in ("all", "", None) else _ints(kw["positions"], "--positions")
    estimators = [e.strip() for e in kw["estimators"].split(",") if e.strip()]
    _check_selection(kw["store"], _ints(kw["layers"]), positions, kw["site"], estimators)
    check_writable_dir(kw["out"])
    lm = None if kw["no_select"] else load_from_options(dict(mopts))
    bars = ProgressBars(quiet=kw["quiet"], unit="cand")
    split = None if kw["val_split"] in ("none", "") else kw["val_split"]
    meta = run_probe(kw["store"], lm, kw["out"], harmful_val=kw["harmful_val"], harmless_val=kw["harmless_val"],
                     val_split=split, cfg=cfg, estimators=estimators,
                     layers=_ints(kw["layers"]), positions=positions, site=kw["site"], folds=kw["folds"],
                     seed=kw["seed"], select=not kw["no_select"], progress=bars,
                     candidates=kw["candidates"])
    bars.close()
    if kw["report"]:
        from r1probe.analysis.probe_report import draw_report

        draw_report(kw["out"])
    cells = meta["cells"]
    best = max((c for c in cells.values() if c.get("ok")),
               key=lambda c: c["estimators"]["mean_diff"].get("auroc") or 0, default=None)
    if best:
        click.echo(f"best probe AUROC (difference-in-means, {kw['folds']}-fold CV): "
                   f"{best['estimators']['mean_diff']['auroc']:.3f} at layer {best['layer']} position {best['pos']}")
    ch = meta.get("chosen")
    if ch:
        v = ch.get("verify") or {}
        base = meta["selection"]["baseline"]
        click.echo(f"chosen: {ch['key']} (layer {ch['layer']}, position {ch['pos']}): bypass score {ch['bypass']:.3f} "
                   f"(baseline {base.get('bypass', float('nan')):.3f}), induce {ch['induce']:.3f}, KL {ch['kl']:.4f}")
        if v:
            click.echo(f"  generated refusal on harmful val: {base.get('bypass_rate', float('nan')):.0%} -> "
                       f"{v['bypass_rate']:.0%} with ablation; harmless val with addition: {v['induce_rate']:.0%}")
    click.echo(f"wrote {kw['out']} in {time.time() - t0:.0f}s "
               f"(search {meta['selection']['seconds'] if meta.get('selection') else 0:.0f}s)")


@probe.command("report")
@click.argument("probe_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default=None, help="Figure folder (default: PROBE_DIR/figures).")
def report(probe_dir, out):
    """Figures (PNG + PDF) of probe accuracy/AUROC per layer and bypass/induce/KL heatmaps."""
    from r1probe.analysis.probe_report import draw_report

    paths = draw_report(probe_dir, out)
    for p in paths:
        click.echo(p)


@probe.command("separability")
@model_options()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder (separability.json, tuning_reads.json, separability_auroc.png/.pdf).")
@click.option("--n", "n", default=96, show_default=True, type=int, help="Prompts per class (dev parts only).")
@click.option("--layers", default="all", show_default=True, help="Layers: all, 8-16, 4,8,12.")
@click.option("--positions", default="-1,-3", show_default=True, help="Post-instruction offsets (-1 = last prompt token).")
@click.option("--site", default="resid_pre", show_default=True, help="Residual site (resid_pre: input of block L; resid_post).")
@click.option("--folds", default=5, show_default=True, type=int, help="Cross-fitting folds.")
@click.option("--C", "C", default=0.1, show_default=True, type=float, help="Inverse L2 strength of the logistic probe (standardised features).")
@click.option("--bootstrap", default=1000, show_default=True, type=int, help="Bootstrap resamples of each AUROC interval (0: none).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=None, type=int, help="Prompts per forward pass (default: a token budget).")
@click.option("--threads", default=None, type=int, help="torch CPU threads.")
@click.option("--data-root", default=None, help="Shared data folder (default ../shared/data or $R1PROBE_DATA).")
@quiet_option
def separability(out, n, layers, positions, site, folds, C, bootstrap, seed, batch_size, threads, data_root, quiet,
                 **kw):
    """Linear separability of must-refuse vs borderline vs ordinary prompts per layer and position, beside the
    refusal direction (held-out AUROC with bootstrap intervals; dev parts only).

    \b
    Example:
      r1probe probe separability --n 96 --positions -1,-3 --out runs/sep
    """
    from r1probe.analysis.separability import check_settings, run_separability
    from r1probe.cli_options import load_from_options
    from r1probe.errors import R1ProbeError
    from r1probe.provenance import check_writable_dir

    lay = _ints(layers)
    pos = _ints(positions, "--positions")
    if pos is None or any(p >= 0 for p in pos):
        raise R1ProbeError(f"--positions {positions!r}: give negative offsets such as -1,-3")
    check_settings(n=n, folds=folds, positions=pos, bootstrap=bootstrap, C=C, level=0.95)
    from r1probe.extract.read import READ_SITES

    if site not in READ_SITES:
        raise R1ProbeError(f"--site {site!r}: choose from {', '.join(READ_SITES)}")
    if lay is not None and any(L < 0 for L in lay):
        raise R1ProbeError(f"--layers {layers!r}: give block indices 0..n-1 (the embedding output is layer 0 of resid_pre)")
    check_writable_dir(out)
    if threads:
        import torch

        torch.set_num_threads(threads)
    lm = load_from_options(kw)
    bars = ProgressBars(quiet=quiet, unit="cell")
    res = run_separability(lm, out, n=n, layers=lay, positions=pos, site=site, folds=folds, seed=seed, C=C,
                           bootstrap=bootstrap, batch_size=batch_size, data_root=data_root, progress=bars)
    bars.close()
    for name, v in res["summary"].items():
        if not v.get("ok"):
            click.echo(f"{name}: no separable cell (degenerate)")
            continue
        ci = "" if v["probe_ci"][0] is None else f" [{v['probe_ci'][0]:.3f}, {v['probe_ci'][1]:.3f}]"
        click.echo(f"{name}: probe AUROC {v['probe_auroc']:.3f}{ci} at layer {v['best_layer']} "
                   f"pos {v['best_position']}; refusal direction there {v['refusal_auroc_same_cell']:.3f}")
    click.echo(f"wrote {out}/separability.json")
