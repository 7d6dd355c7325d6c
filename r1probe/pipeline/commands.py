"""``r1probe run``: every setting of :class:`~r1probe.pipeline.settings.StudySettings` is a flag."""

from __future__ import annotations

import click

from r1probe.cli_options import ProgressBars, settings_from_flags, settings_options
from r1probe.pipeline.settings import StudySettings


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@settings_options(StudySettings)
@click.option("--print-config", is_flag=True, help="Print the resolved settings as TOML (a CONFIG for r1probe run) and exit.")
@click.option("--force", is_flag=True, help="Redo every stage.")
def run(config, print_config, force, **kw):
    """Run a study preset (extract, probe, edit, eval, compare, report); cached and resumable.

    \b
    Settings, lowest first: defaults < --preset's defaults < CONFIG (TOML, [study] table)
    < R1PROBE_* environment variables (R1PROBE_EVAL__BENCHES=gsm8k) < flags. A nested setting
    has a dotted flag (--eval.benches) and, when its name is unique, a short one (--benches).
    Lists are comma-separated; limits are NAME=N pairs (none = all items).
    With no CONFIG it runs on the embedded model with limits that finish in under an hour on
    2 CPU cores; --preset mini-distill runs the distillation experiment (runs/mini-distill).
    """
    import os

    from r1probe.pipeline.settings import load_settings

    settings = load_settings(config, settings_from_flags(kw, StudySettings))
    if print_config:
        from r1probe.settings import to_toml

        click.echo(to_toml(settings, "study"), nl=False)
        return
    from r1probe.provenance import check_writable_dir

    check_writable_dir(settings.out)
    if settings.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    from r1probe.pipeline.presets import run_preset

    bars = ProgressBars(unit="step")  # "NAME: N/TOTAL" messages become bars with rate and ETA
    try:
        res = run_preset(settings, force=force, log=bars)
    finally:
        bars.close()
    click.echo(f"report: {res['report']}  ({res['seconds']:.0f}s)")
