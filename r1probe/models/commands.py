"""``r1probe models list|show`` and ``r1probe chat``."""

from __future__ import annotations

import json

import click

from r1probe.cli_options import load_from_options, model_options, quiet_option


@click.group()
def models():
    """Built-in models and what a model spec resolves to."""


@models.command("list")
def list_models():
    """List built-in model names (use as builtin:NAME): shipped ones, and ones built from a recipe on first use."""
    from r1probe.models.builtin import BUILTINS, built_models

    for name, m in BUILTINS.items():
        click.echo(f"builtin:{name}\t{m.description}")
    for name, ep in built_models().items():
        click.echo(f"builtin:{name}\tbuilt from its recipe on first use ({ep.value})")


@models.command("show")
@click.argument("spec")
@model_options(default_model=None, name="spec_opt")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(spec, as_json, **kw):
    """Load SPEC and report architecture, layers, hidden size, dtype, tied embeddings, template."""
    kw["spec_opt"] = spec
    lm = load_from_options(kw, name="spec_opt")
    info = lm.describe()
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
    else:
        for k, v in info.items():
            click.echo(f"{k:22s} {v}")


@click.command()
@model_options()
@click.option("--prompt", "-p", multiple=True, required=True, help="User message (repeatable).")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-new-tokens", default=256, show_default=True, type=click.IntRange(1))
@click.option("--show-reasoning", is_flag=True, help="Print the reasoning of thinking models too.")
@quiet_option
def chat(prompt, system, max_new_tokens, show_reasoning, quiet, **kw):
    """Answer prompts with greedy decoding (the first thing to try on a new model)."""
    from r1probe.models.chat import split_reasoning
    from r1probe.models.generate import generate_texts

    lm = load_from_options(kw)
    from r1probe.models.limits import check_prompt_lengths

    texts = [lm.chat.format(p, system=system) for p in prompt]
    check_prompt_lengths(lm, texts, [f"--prompt {i + 1}" for i in range(len(texts))])
    outs = generate_texts(lm, texts, max_new_tokens=max_new_tokens, batch_size=len(texts), progress=not quiet,
                          desc="chat")
    for p, o in zip(prompt, outs):
        sp = split_reasoning(o, prompt_opened_think=lm.chat.thinks)
        click.echo(f"### {p}")
        if sp.thought and show_reasoning:
            click.echo(f"[reasoning{'' if sp.terminated else ', unterminated'}] {sp.reasoning}")
        click.echo(sp.answer if sp.thought else o.strip())
        click.echo("")
