"""``r1probe enhance``: the multi-objective search for a refusal-enhancing weight edit (see ``steering.enhance``)."""

from __future__ import annotations

from pathlib import Path

import click

from r1probe.cli_options import load_from_options, model_options


@click.command("enhance")
@model_options()
@click.option("--directions", "directions", default=None,
              help="Directions file/folder of `r1probe probe` (its chosen direction joins the search as kind 'probe'); "
                   "difference-in-means directions are always computed too.")
@click.option("--direction-key", default=None, help="Which direction of --directions (default: the chosen one).")
@click.option("--out", "out", required=True, type=click.Path(), help="Folder of the exported checkpoint.")
@click.option("--work", default=None, type=click.Path(),
              help="Search folder (study.db, directions, front table, figure, report); default OUT.enhance. "
                   "Rerun the same command to resume after an interruption.")
@click.option("--trials", default=40, show_default=True, help="Total trials in the study.")
@click.option("--budget-min", default=40.0, show_default=True, help="Wall-clock budget of this run's search (minutes).")
@click.option("--sampler", type=click.Choice(["tpe", "nsga2"]), default="tpe", show_default=True)
@click.option("--n-harmful", default=24, show_default=True, help="Harmful search prompts.")
@click.option("--n-borderline", default=24, show_default=True, help="CValues search prompts.")
@click.option("--n-nll", default=16, show_default=True, help="GSM8K train gold solutions (NLL objective).")
@click.option("--max-new-tokens", default=32, show_default=True, help="Reply length judged in the search.")
@click.option("--report-max-new-tokens", default=40, show_default=True, help="Reply length judged on report splits.")
@click.option("--report-borderline", default=100, show_default=True, help="CValues report prompts.")
@click.option("--report-harmful", default=100, show_default=True,
              help="CHiSafetyBench report prompts (a prefix of the fixed report part of 100).")
@click.option("--report-nll", default=60, show_default=True, help="GSM8K test solutions for the report NLL.")
@click.option("--dir-layers", default="8,10,12,14,16", show_default=True, help="Layers where directions are read.")
@click.option("--n-direction", default=260, show_default=True, help="Prompts per class for the directions.")
@click.option("--dir-kinds", default="harm,hb,orth", show_default=True, help="Direction kinds searched over.")
@click.option("--border-margin", default=0.10, show_default=True, help="Allowed rise of CValues refusal.")
@click.option("--nll-tol", default=0.02, show_default=True, help="Allowed relative rise of gold NLL.")
@click.option("--batch-size", default=48, show_default=True)
@click.option("--plan-strengths", default="1,2", show_default=True,
              help="Run-time plan strengths k (α = k · diff-in-means gap).")
@click.option("--no-plans", is_flag=True, help="Skip the run-time plan comparison.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=None, type=int,
              help="torch CPU threads (1 is much faster than 2 on a CPU shared with other jobs).")
@click.option("--data-root", default=None, help="Shared data folder (default ../shared/data or $R1PROBE_DATA).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
def enhance(directions, direction_key, out, work, trials, budget_min, sampler, n_harmful, n_borderline, n_nll,
            max_new_tokens, report_max_new_tokens, report_borderline, report_harmful, report_nll, dir_layers, n_direction, dir_kinds,
            border_margin, nll_tol, batch_size, plan_strengths, no_plans, seed, threads, data_root, overwrite, **kw):
    """Search layers, strengths and directions of a refusal-enhancing edit under an over-refusal budget,
    export the chosen one and write the Pareto front and the trade-off figure."""
    from r1probe.steering.enhance import EnhanceConfig, enhance as run

    cfg = EnhanceConfig(n_harmful=n_harmful, n_borderline=n_borderline, n_nll=n_nll, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, trials=trials, budget_s=budget_min * 60, seed=seed, sampler=sampler,
                        border_margin=border_margin, nll_tol=nll_tol,
                        dir_layers=tuple(int(x) for x in dir_layers.split(",") if x.strip()),
                        dir_kinds=tuple(x.strip() for x in dir_kinds.split(",") if x.strip()),
                        report_borderline=report_borderline, report_harmful=report_harmful, report_nll=report_nll,
                        report_max_new_tokens=report_max_new_tokens, plans=not no_plans,
                        plan_strengths=tuple(float(x) for x in plan_strengths.split(",") if x.strip()),
                        n_direction=n_direction)
    if threads:
        import torch

        torch.set_num_threads(threads)
    lm = load_from_options(kw)
    res = run(lm, cfg, out=out, work=work or f"{Path(out)}.enhance", directions=directions,
              direction_key=direction_key, data_root=data_root, overwrite=overwrite,
              log_fn=lambda m: click.echo(m, err=True))
    for k, v in res.report.items():
        if not k.startswith("_"):
            click.echo(f"{k}: harmful {v['harm_refusal']:.3f}  CValues {v['border_refusal']:.3f}  "
                       f"NLL x{v['nll_ratio']:.4f}  meets {v['meets']}")
    click.echo(f"export: {res.export}\nwork: {res.work}")
