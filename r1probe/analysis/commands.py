"""``r1probe compare``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from r1probe.cli_options import stderr_progress


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
    from r1probe.provenance import check_writable_dir

    check_writable_dir(out)
    res = compare_models(base, distilled, out=out, harmful=harmful, harmless=harmless, n_train=n_train,
                         position=int(position) if position.lstrip("-").isdigit() else position,
                         directions=directions, eval_base=eval_base, eval_distilled=eval_distilled,
                         transfer_n=transfer_n, dtype=dtype, seed=seed, log=stderr_progress)
    click.echo(json.dumps(res["headline"], indent=2, ensure_ascii=False))
    click.echo(f"wrote {Path(out) / 'compare.json'} and figures in {out}")
