"""Click options shared by every verb that loads a model."""

from __future__ import annotations

import functools

import click

from r1probe.models.builtin import DEFAULT_MODEL


def model_options(default_model: str | None = DEFAULT_MODEL, name: str = "model"):
    """Decorator adding --model/--revision/--dtype/--device/--device-map/--trust-remote-code/--chat-template."""

    def deco(f):
        opts = [
            click.option(f"--{name}", f"{name}", default=default_model, show_default=True,
                         help="Model spec: hub id (org/name), local checkpoint folder, .gguf file, or builtin:NAME."),
            click.option("--revision", default=None, help="Hub revision (branch, tag or commit)."),
            click.option("--dtype", default="auto", show_default=True,
                         help="auto (bfloat16 on GPUs and CPUs with native bf16 matmul, amx_bf16 or avx512_bf16; else float32), bfloat16, float16 or float32."),
            click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... (auto: cuda if available)."),
            click.option("--device-map", default=None, help="Pass 'auto' to spread a large model over GPUs (accelerate)."),
            click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off unless asked)."),
            click.option("--chat-template", default=None, help="auto (the model's), r1 (DeepSeek-R1-Distill), or a .jinja file."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def load_from_options(kw: dict, name: str = "model"):
    """Pop the model options from ``kw`` and load the model."""
    from r1probe.models import load_model

    spec = kw.pop(name)
    return load_model(spec, revision=kw.pop("revision", None), dtype=kw.pop("dtype", None),
                      device=kw.pop("device", None), device_map=kw.pop("device_map", None),
                      trust_remote_code=kw.pop("trust_remote_code", False),
                      chat_template=kw.pop("chat_template", None))


def pop_model_options(kw: dict, name: str = "model") -> dict:
    """Remove the model options from ``kw`` and return them (for deferred loading)."""
    keys = (name, "revision", "dtype", "device", "device_map", "trust_remote_code", "chat_template")
    return {k: kw.pop(k) for k in keys if k in kw}


def stderr_progress(msg: str) -> None:
    click.echo(msg, err=True)


def with_model(f):
    @functools.wraps(f)
    def wrapper(**kw):
        lm = load_from_options(kw)
        return f(lm, **kw)

    return wrapper
