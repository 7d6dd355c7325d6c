"""Click options shared by the verbs: the model options, and options generated from a settings model."""

from __future__ import annotations

from typing import Any

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


# --- flags generated from a settings model -------------------------------------------------------------------
#
# Every leaf field of a (nested) pydantic settings model becomes one option: a top-level field ``n_val`` is
# ``--n-val``, a nested field ``eval.max_new_tokens`` is ``--eval.max-new-tokens`` and, when its leaf name is
# unique in the schema (or the field names a short flag in ``json_schema_extra={"flag": ...}``), also
# ``--max-new-tokens``. Values reach pydantic as strings, so validation and its messages are the model's.


def _is_model(ann) -> bool:
    import pydantic

    return isinstance(ann, type) and issubclass(ann, pydantic.BaseModel)


def settings_fields(model, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """``[(path, FieldInfo)]`` of every leaf field of ``model`` (nested models walked depth first)."""
    out = []
    for name, f in model.model_fields.items():
        if _is_model(f.annotation):
            out += settings_fields(f.annotation, prefix + (name,))
        else:
            out.append((prefix + (name,), f))
    return out


def _flag(path: tuple[str, ...]) -> str:
    return "--" + ".".join(p.replace("_", "-") for p in path)


def _is_bool(f) -> bool:
    return f.annotation is bool


def _show(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, dict):
        return ",".join(f"{k}={'none' if x is None else x}" for k, x in v.items())
    return str(v)


def flag_names(model) -> dict[tuple[str, ...], list[str]]:
    """The option names of every leaf field of ``model``: the full dotted flag first, then a short one."""
    leaves = settings_fields(model)
    counts: dict[str, int] = {}
    for path, _ in leaves:
        counts[path[-1]] = counts.get(path[-1], 0) + 1
    top = {p[0] for p, _ in leaves if len(p) == 1}
    names = {}
    for path, f in leaves:
        decls = [_flag(path)]
        short = (f.json_schema_extra or {}).get("flag") if isinstance(f.json_schema_extra, dict) else None
        if short:
            decls.append("--" + short)
        elif len(path) > 1 and counts[path[-1]] == 1 and path[-1] not in top:
            decls.append(_flag(path[-1:]))
        names[path] = decls
    return names


def settings_options(model, *, skip: tuple[str, ...] = ()):
    """Decorator adding one option per leaf field of ``model`` (help: the field's description and default)."""

    def deco(fn):
        names = flag_names(model)
        for path, f in reversed(settings_fields(model)):
            if ".".join(path) in skip:
                continue
            decls, dest = names[path], "__".join(path)
            default = f.get_default(call_default_factory=True)
            help_ = (f.description or "").rstrip(".") + (f" [default: {_show(default)}]." if default is not None else ".")
            if _is_bool(f):
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


def settings_argv(settings, baseline=None) -> list[str]:
    """Flags that set every leaf of ``settings`` that differs from ``baseline`` (default: the model's defaults)."""
    names = flag_names(type(settings))
    argv: list[str] = []
    for path, f in settings_fields(type(settings)):
        v = _get(settings, path)
        base = _get(baseline, path) if baseline is not None else f.get_default(call_default_factory=True)
        if v == base or v is None:
            continue
        if _is_bool(f):
            argv.append(names[path][0] if v else "--no-" + names[path][0][2:])
        else:
            argv += [names[path][0], _show(v)]
    return argv


def _get(obj, path):
    for p in path:
        obj = getattr(obj, p)
    return obj
