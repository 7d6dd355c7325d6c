"""``r1probe edit-search``: the multi-objective search for a refusal-enhancing weight edit (``r1probe.tuning``).

``r1probe enhance`` is its deprecated alias (one deprecation line on stderr, then the same run).
"""

from __future__ import annotations

from pathlib import Path

import click

from r1probe.cli_options import load_from_options, model_options, settings_options
from r1probe.tuning.settings import EditSearchSettings

DEPRECATION = "r1probe: 'enhance' is deprecated, use 'edit-search'"


def _run(directions, direction_key, out, work, threads, data_root, overwrite, kw) -> None:
    from r1probe.tuning.run import edit_search as run
    from r1probe.tuning.settings import search_settings

    values = {k: kw.pop(k) for k in EditSearchSettings.model_fields if k in kw}
    settings = search_settings(**{k: v for k, v in values.items() if v is not None})
    from r1probe.provenance import check_writable_dir

    check_writable_dir(out)
    if work:
        check_writable_dir(work, "--work")
    if threads:
        import torch

        torch.set_num_threads(threads)
    lm = load_from_options(kw)
    res = run(lm, settings, out=out, work=work or f"{Path(out)}.enhance", directions=directions,
              direction_key=direction_key, data_root=data_root, overwrite=overwrite,
              log_fn=lambda m: click.echo(m, err=True))
    for k, v in res.report.items():
        if not k.startswith("_"):
            click.echo(f"{k}: harmful {v['harm_refusal']:.3f}  CValues {v['border_refusal']:.3f}  "
                       f"NLL x{v['nll_ratio']:.4f}  meets {v['meets']}")
    click.echo(f"export: {res.export}\nwork: {res.work}")


def _options(f):
    for o in reversed([
        model_options(),
        settings_options(EditSearchSettings),
        click.option("--directions", "directions", default=None,
                     help="Directions file/folder of `r1probe probe` (its chosen direction joins the search as kind "
                          "'probe'); difference-in-means directions are always computed too."),
        click.option("--direction-key", default=None, help="Which direction of --directions (default: the chosen one)."),
        click.option("--out", "out", required=True, type=click.Path(), help="Folder of the exported checkpoint."),
        click.option("--work", default=None, type=click.Path(),
                     help="Search folder (study.db, directions, front table, figure, report); default OUT.enhance. "
                          "Rerun the same command to resume after an interruption."),
        click.option("--threads", default=None, type=int,
                     help="torch CPU threads (1 is much faster than 2 on a CPU shared with other jobs)."),
        click.option("--data-root", default=None, help="Shared data folder (default ../shared/data or $R1PROBE_DATA)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing export folder."),
    ]):
        f = o(f)
    return f


@click.command("edit-search")
@_options
def edit_search(directions, direction_key, out, work, threads, data_root, overwrite, **kw):
    """Search layers, strengths and directions of a refusal-enhancing weight edit under an over-refusal
    budget, export the chosen one and write the Pareto front and the trade-off figure."""
    _run(directions, direction_key, out, work, threads, data_root, overwrite, kw)


@click.command("enhance")
@_options
def enhance_deprecated(directions, direction_key, out, work, threads, data_root, overwrite, **kw):
    """Deprecated name of `edit-search` (same options, same run)."""
    click.echo(DEPRECATION, err=True)
    _run(directions, direction_key, out, work, threads, data_root, overwrite, kw)
