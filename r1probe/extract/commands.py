"""``r1probe extract``: activations of a model on harmful / harmless prompts into a store."""

from __future__ import annotations

import click

from r1probe.cli_options import load_from_options, model_options


@click.command()
@model_options()
@click.option("--harmful", "harmful", multiple=True, metavar="SPEC",
              help="Harmful prompts (file or builtin:zh-harmful; optional :train/:val/:test). Label 'harmful'.")
@click.option("--harmless", "harmless", multiple=True, metavar="SPEC",
              help="Harmless prompts (file or builtin:zh-harmless). Label 'harmless'.")
@click.option("--prompts", "others", multiple=True, metavar="SPEC",
              help="Other prompts, labelled by their 'label' column (else 'unlabeled').")
@click.option("--field", default=None, help="Text column of prompt files (default: instruction/prompt/question/input).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Keep this seeded split of every prompt set.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the splits and of --limit.")
@click.option("--limit", default=None, type=click.IntRange(1), help="At most this many prompts per set (seeded sample).")
@click.option("--layers", default="all", show_default=True,
              help="Layers: all, 0-23, 8,12,16; add 'embed' for the embedding output (layer -1).")
@click.option("--positions", default="post", show_default=True,
              help="post (post-instruction template tokens), last, mean (instruction mean), gen, gen_mean, "
                   "or negative offsets like -1,-3; comma-separated.")
@click.option("--sites", default="resid_post", show_default=True,
              help="resid_post (block output), resid_pre (block input), attn_out, mlp_out, resid, all.")
@click.option("--backend", default="native", show_default=True,
              type=click.Choice(["native", "transformer-lens", "nnsight"]), help="Capture backend.")
@click.option("--batch-size", default="auto", show_default=True,
              help="Prompts per batch, or 'auto' (a token budget per batch, sized from free GPU memory).")
@click.option("--generate", default=0, show_default=True, type=click.IntRange(0),
              help="Also generate N tokens greedily and capture them (positions gen0.., gen_mean).")
@click.option("--system", default=None, help="System prompt for every prompt.")
@click.option("--close-think", is_flag=True, help="Close an empty <think> block after R1 prompts (first-token studies).")
@click.option("--think", type=click.Choice(["open", "closed"]), default=None,
              help="End each prompt inside a reasoning block ('open': <think>\\n) or after an empty closed one "
                   "('closed'), for any template: positions inside / after the think prefix.")
@click.option("--store-dtype", default="auto", show_default=True, help="auto (the model's), bfloat16, float16 or float32.")
@click.option("--shard-rows", default=256, show_default=True, type=click.IntRange(1), help="Prompts per shard.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Store folder (resumes if it exists).")
@click.option("--overwrite", is_flag=True, help="Replace a store made with a different configuration.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def extract(harmful, harmless, others, field, split, seed, limit, layers, positions, sites, backend, batch_size,
            generate, system, close_think, think, store_dtype, shard_rows, out, overwrite, quiet, **kw):
    """Capture residual-stream activations into an activation store (safetensors shards + manifest.json).

    \b
    Example:
      r1probe extract --harmful builtin:zh-harmful --harmless builtin:zh-harmless --positions post --out acts/
    Running the same command again resumes: finished shards are skipped.
    """
    from r1probe.data.prompts import load_prompt_set
    from r1probe.errors import DataError
    from r1probe.extract.api import extract_activations
    from r1probe.models.limits import check_prompt_lengths
    from r1probe.provenance import check_writable_dir

    specs = [(s, "harmful") for s in harmful] + [(s, "harmless") for s in harmless] + [(s, None) for s in others]
    if not specs:
        raise DataError("no prompts: pass --harmful, --harmless and/or --prompts")
    sets = [load_prompt_set(s, field=field, label=lab, split=split, seed=seed, limit=limit) for s, lab in specs]
    if batch_size != "auto":
        try:
            batch_size = int(batch_size)
        except ValueError:
            raise DataError(f"--batch-size {batch_size!r}: a positive integer or 'auto'") from None
    check_writable_dir(out)
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    lm = load_from_options(kw)
    for (spec, _), ps in zip(specs, sets):
        check_prompt_lengths(lm, [lm.chat.format(p.text, system=system, close_think=close_think, think=think)
                                  for p in ps.prompts],
                             [f"{spec}: prompt {p.id!r} (#{k + 1})" for k, p in enumerate(ps.prompts)])
    store = extract_activations(lm, sets, layers=layers, positions=positions, out_dir=out, backend=backend,
                                batch_size=batch_size, sites=sites, generate=generate, progress=not quiet,
                                system=system, close_think=close_think, think=think, store_dtype=store_dtype,
                                shard_rows=shard_rows, overwrite=overwrite)
    m = store.manifest
    run = m.get("run", {})
    click.echo(f"wrote {out}: {len(store)} prompts {m['label_counts']}, {m['n_layers']} layers, "
               f"positions {m['positions']}, sites {m['sites']}, backend {m['backend']}"
               + (f", {run.get('prompts_per_s')} prompts/s" if run.get("prompts_per_s") else "")
               + (f", {run['resumed_shards']} shard(s) already done" if run.get("resumed_shards") else ""))
