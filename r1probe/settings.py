"""The base of every settings model, and the helpers that read, check and write settings.

Every settings model of r1probe derives from :class:`Settings`: unknown keys are errors at any depth,
assignments are validated, and every field carries a description (it becomes the ``--help`` text of
its generated flag). :func:`one_line` turns a pydantic ``ValidationError`` into the one line the user
sees (the dotted key and what is allowed); :func:`to_toml` writes settings as TOML that loads back to
the same values.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import ConfigDict

from r1probe.errors import R1ProbeError


class Settings(pydantic.BaseModel):
    """Base of every settings model: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kw):
        super().__pydantic_init_subclass__(**kw)
        register_model(cls)


class SettingsError(R1ProbeError):
    """A setting has a wrong type, an unknown key or a value outside the allowed ones."""


def one_line(err: pydantic.ValidationError, prefix: str = "") -> str:
    """The first error of ``err`` as one line: ``key.path: message``."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ()) if not str(p).startswith("function-"))
    loc = ".".join(p for p in (prefix, loc) if p)
    msg = e.get("msg", "invalid value")
    if e.get("type") == "extra_forbidden":
        msg = "unknown setting"
        allowed = _allowed_keys(err, e)
        if allowed:
            msg += f" (allowed: {', '.join(allowed)})"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    inp = e.get("input")
    shown = "" if e.get("type") == "extra_forbidden" or isinstance(inp, dict) else f" (got {inp!r})"
    extra = f" and {len(err.errors()) - 1} more" if len(err.errors()) > 1 else ""
    return f"{loc or 'settings'}: {msg}{shown}{extra}"


def _allowed_keys(err: pydantic.ValidationError, e: dict) -> list[str]:
    """Field names of the model that holds the unknown key of ``e`` (empty when it cannot be found)."""
    model = _MODELS.get(err.title)
    for part in e.get("loc", ())[:-1]:
        if model is None:
            return []
        f = model.model_fields.get(str(part))
        ann = getattr(f, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel) else None
    return list(model.model_fields) if model is not None else []


_MODELS: dict[str, type[pydantic.BaseModel]] = {}


def register_model(cls: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    """Let :func:`one_line` name the allowed keys of ``cls`` (and its nested models) on an unknown key."""
    _MODELS[cls.__name__] = cls
    return cls


def validate(cls: type[pydantic.BaseModel], data: dict, prefix: str = "") -> Any:
    """``cls.model_validate(data)``, with a :class:`SettingsError` of one line on failure."""
    try:
        return cls.model_validate(data)
    except pydantic.ValidationError as e:
        register_model(cls)
        raise SettingsError(one_line(e, prefix)) from None


def split_list(value: Any) -> Any:
    """A comma-separated string (flag or environment variable) as a list of stripped names."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def split_limits(value: Any) -> Any:
    """``"gsm8k=50,cvalues=none"`` as ``{"gsm8k": 50, "cvalues": None}`` (none/all/empty: no limit)."""
    if not isinstance(value, str):
        return value
    out: dict[str, Any] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        k, eq, v = part.partition("=")
        if not eq:
            raise ValueError(f"{part.strip()!r}: expected NAME=N")
        v = v.strip()
        out[k.strip()] = None if v.lower() in ("", "none", "all") else v
    return out


def _toml_clean(value: Any) -> Any:
    """TOML has no null: drop None values (the field's default None is then used on reload)."""
    if isinstance(value, dict):
        return {k: _toml_clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_clean(v) for v in value]
    return value


def to_toml(settings: pydantic.BaseModel, table: str | None = None, *, comments: bool = True) -> str:
    """``settings`` as TOML (under ``[table]`` when given), each field preceded by its description.

    ``None`` values are written as comments (TOML has no null); a mapping field whose values may be
    None (per-bench limits) writes ``"none"`` for them, which the field's validator reads back as None.
    """
    lines: list[str] = []
    _write_table(settings, [table] if table else [], lines, comments)
    return "\n".join(lines).strip() + "\n"


def _fmt(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _write_table(m: pydantic.BaseModel, path: list[str], lines: list[str], comments: bool, blank: bool = True) -> None:
    scalars, tables = [], []
    for name, f in type(m).model_fields.items():
        v = getattr(m, name)
        (tables if isinstance(v, (pydantic.BaseModel, dict)) else scalars).append((name, f, v))
    if path:
        if lines and blank:
            lines.append("")
        lines.append(f"[{'.'.join(path)}]")
    for name, f, v in scalars:
        if comments and f.description:
            lines.append(f"# {f.description}")
        lines.append(f"# {name} = (unset)" if v is None else f"{name} = {_fmt(v)}")
    for name, f, v in tables:
        if isinstance(v, dict):
            if lines:
                lines.append("")
            if comments and f.description:
                lines.append(f"# {f.description}")
            lines.append(f"[{'.'.join(path + [name])}]")
            for k, x in v.items():
                key = k if k.replace("-", "").replace("_", "").isalnum() else _fmt(k)
                lines.append(f"{key} = {_fmt('none' if x is None else x)}")
        else:
            lines.append("")
            if comments and f.description:
                lines.append(f"# {f.description}")
            _write_table(v, path + [name], lines, comments, blank=False)


# --- flag names of the fields ---------------------------------------------------------------------------------
#
# Every leaf field of a (nested) settings model has one flag: a top-level field ``n_val`` is ``--n-val``,
# a nested field ``eval.max_new_tokens`` is ``--eval.max-new-tokens`` and, when its leaf name is unique in
# the schema (or the field names a short flag in ``json_schema_extra={"flag": ...}``), also
# ``--max-new-tokens``. ``r1probe.cli_options.settings_options`` turns them into click options.


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


def is_flag_field(f) -> bool:
    return f.annotation is bool


def flag_value(v) -> str:
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


def settings_argv(settings, baseline=None) -> list[str]:
    """Flags that set every leaf of ``settings`` that differs from ``baseline`` (default: the model's defaults)."""
    names = flag_names(type(settings))
    argv: list[str] = []
    for path, f in settings_fields(type(settings)):
        v = _get(settings, path)
        base = _get(baseline, path) if baseline is not None else f.get_default(call_default_factory=True)
        if v == base or v is None:
            continue
        if is_flag_field(f):
            argv.append(names[path][0] if v else "--no-" + names[path][0][2:])
        else:
            argv += [names[path][0], flag_value(v)]
    return argv


def _get(obj, path):
    for p in path:
        obj = getattr(obj, p)
    return obj
