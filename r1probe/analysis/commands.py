"""``r1probe compare`` and ``r1probe run``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from r1probe.cli_options import stderr_progress
from r1probe.errors import R1ProbeError


@click.command()
@click.option("--base", required=True, help="Model spec of the base model (A).")
@click.option("--distilled", required=True, help="Model spec of the distilled / edited model (B).")
@click.option("--harmful", default="builtin:zh-harmful", show_default=True, help="Harmful prompt set (train split used).")
@click.option("--harmless", default="builtin:zh-harmless", show_default=True, help="Harmless prompt set (train split used).")
@click.option("--n", "n_train", type=click.IntRange(4), default=96, show_default=True, help="Prompts per class.")
@click.option("--position", default="-1", show_default=True, help="Token offset to compare at (post-instruction).")
@click.option("--directions", default=None, type=click.Path(exists=True),
              help="The base model's probe folder (r1probe probe); default: mean-diff at the base's best layer.")
@click.option("--eval-base", default=None, type=click.Path(exists=True), help="Eval folder/summary.json of A.")
@click.option("--eval-distilled", default=None, type=click.Path(exists=True), help="Eval folder/summary.json of B.")
@click.option("--transfer-n", type=click.IntRange(0), default=16, show_default=True,
              help="Prompts per side for the refusal change when A's direction is ablated/added in B (0: skip).")
@click.option("--dtype", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False))
def compare(base, distilled, harmful, harmless, n_train, position, directions, eval_base, eval_distilled,
            transfer_n, dtype, seed, out):
    """Compare the refusal representation of two models (probe curves, cosine, CKA, transfer)."""
    from r1probe.analysis.compare_models import compare_models

    res = compare_models(base, distilled, out=out, harmful=harmful, harmless=harmless, n_train=n_train,
                         position=int(position) if position.lstrip("-").isdigit() else position,
                         directions=directions, eval_base=eval_base, eval_distilled=eval_distilled,
                         transfer_n=transfer_n, dtype=dtype, seed=seed, log=stderr_progress)
    click.echo(json.dumps(res["headline"], indent=2, ensure_ascii=False))
    click.echo(f"wrote {Path(out) / 'compare.json'} and figures in {out}")


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--model", default=None, help="Model spec (default: the embedded model).")
@click.option("--out", default=None, help="Output folder (default runs/study).")
@click.option("--full", is_flag=True, default=None, help="Full benchmark sizes (for a GPU and a real R1-Distill model).")
@click.option("--n-train", type=int, default=None)
@click.option("--n-val", type=int, default=None)
@click.option("--benches", default=None, help="Comma-separated benchmarks.")
@click.option("--limits", default=None, help="Per-bench limits, e.g. gsm8k=50,cvalues=100 (none = all).")
@click.option("--edits", default=None, help="Exported edits to evaluate: orthogonalize,enhance,enhance-borderline,amplify")
@click.option("--plans", default=None, help="conditional,add")
@click.option("--seed", type=int, default=None)
@click.option("--dtype", default=None)
@click.option("--device", default=None)
@click.option("--data-root", default=None, help="Folder with the benchmark data (default ../shared/data).")
@click.option("--chisafety-root", default=None, help="CHiSafetyBench folder (never shipped: no licence).")
@click.option("--preset", default=None, type=click.Choice(["mini-distill"]),
              help="mini-distill: distil the model on R1-format GSM8K traces, measure the safety loss, restore it.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Torch CPU threads (also R1PROBE_THREADS; default: torch's choice).")
@click.option("--force", is_flag=True, help="Redo every stage.")
def run(config, force, preset, threads, **flags):
    """Run the whole study (extract, probe, edit, eval, compare, report); cached and resumable.

    With no CONFIG it runs on the embedded model with limits that finish in under an hour on
    2 CPU cores. Settings come from CONFIG (TOML), R1PROBE_* environment variables and flags.
    --preset mini-distill runs the distillation experiment instead (runs/mini-distill).
    """
    import os

    threads = threads or (int(os.environ["R1PROBE_THREADS"]) if os.environ.get("R1PROBE_THREADS", "").isdigit() else None)
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
    flags = {k: v for k, v in flags.items() if v is not None}
    if preset:
        from r1probe.analysis.distill_config import load_distill_config
        from r1probe.analysis.distill_study import run_distill_study

        if config:
            raise R1ProbeError("--preset and a CONFIG file do not combine; pass settings as flags")
        cfg = load_distill_config({**flags, "threads": threads})
        res = run_distill_study(cfg, force=force, log=stderr_progress)
        click.echo(f"report: {res['report']}  ({res['seconds']:.0f}s)")
        return
    from r1probe.analysis.config import load_config
    from r1probe.analysis.study import run_study

    cfg = load_config(config, overrides=flags)
    res = run_study(cfg, force=force, log=stderr_progress)
    click.echo(f"report: {res['report']}  ({res['seconds']:.0f}s)")
