"""Click options shared by the verbs: the model options, and options generated from a settings model."""

from __future__ import annotations

import click

from r1probe.models.builtin import DEFAULT_MODEL
from r1probe.settings import flag_names, flag_value, is_flag_field, settings_fields


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


# --- options generated from a settings model (flag names: ``r1probe.settings.flag_names``) ---------------------
# Values reach pydantic as strings, so validation and its messages are the model's.


def settings_options(model, *, skip: tuple[str, ...] = ()):
    """Decorator adding one option per leaf field of ``model`` (help: the field's description and default)."""

    def deco(fn):
        names = flag_names(model)
        for path, f in reversed(settings_fields(model)):
            if ".".join(path) in skip:
                continue
            decls, dest = names[path], "__".join(path)
            default = f.get_default(call_default_factory=True)
            help_ = (f.description or "").rstrip(".") + (f" [default: {flag_value(default)}]." if default is not None else ".")
            if is_flag_field(f):
                on = decls[0]
                opt = click.option(f"{on}/--no-{on[2:]}", dest, default=None, help=help_)
            else:
                opt = click.option(*decls, dest, default=None, metavar=_metavar(f), help=help_)
            fn = opt(fn)
        return fn

    return deco


def _metavar(f) -> str:
    import typing

    origin = typing.get_origin(f.annotation)
    if origin is list:
        return "A,B"
    if origin is dict:
        return "NAME=N,.."
    if origin is typing.Literal:
        return "[" + "|".join(map(str, typing.get_args(f.annotation))) + "]"
    ann = f.annotation
    for t, mv in ((int, "INTEGER"), (float, "FLOAT")):
        if ann is t or t in typing.get_args(ann):
            return mv
    return "TEXT"


def settings_from_flags(kw: dict, model) -> dict:
    """Pop the options generated for ``model`` out of ``kw`` as a nested dict, leaving unset ones out."""
    out: dict = {}
    for path, _ in settings_fields(model):
        v = kw.pop("__".join(path), None)
        if v is None:
            continue
        d = out
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = v
    return out
