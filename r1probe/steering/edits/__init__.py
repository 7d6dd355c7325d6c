"""Weight edits: a registry of ``WeightEdit``s (fit -> apply -> a record), and ``run_edit``, the one path.

An edit gathers what it needs from the model and the probe folder's directions (``fit``), then
writes the weights in place (``apply``) and returns a JSON-serialisable record for the model card.
The maths lives in ``r1probe.steering.edit`` as pure functions; each edit module here only wires
settings, data and maths together. ``r1probe edit``, the pipeline and scripts all call ``run_edit``;
``--op`` choices, help and settings come from this registry.

Adding an edit is one module (a class with ``name``, ``summary``, a ``Settings`` model, ``fit`` and
``apply``) plus one ``register_edit`` line below.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from r1probe.errors import R1ProbeError
from r1probe.steering.edits.base import EditSettings, Fitted, settings_error


@runtime_checkable
class WeightEdit(Protocol):
    """One weight edit. ``Settings`` is its pydantic settings model (unknown keys rejected, every field described)."""

    name: str
    summary: str  # one line for --help
    Settings: type[BaseModel]

    def fit(self, lm, directions, settings, *, log: Callable[[str], Any] = print) -> Fitted:
        """Gather what the edit needs (the direction, fitted vectors, fit data); never touches the weights."""

    def apply(self, lm, fitted: Fitted) -> dict:
        """Edit ``lm``'s weights in place; return a JSON-serialisable record of what was done."""


EDITS: dict[str, WeightEdit] = {}
#: deprecated name -> (new name, message printed once per use)
ALIASES: dict[str, tuple[str, str]] = {}


def register_edit(edit: WeightEdit, *, aliases: dict[str, str] | None = None) -> WeightEdit:
    """Add ``edit`` to ``EDITS``; ``aliases`` maps deprecated names to the message printed when one is used."""
    for attr in ("name", "summary", "Settings", "fit", "apply"):
        if not hasattr(edit, attr):
            raise R1ProbeError(f"weight edit {edit!r} has no {attr}")
    if edit.name in EDITS or edit.name in ALIASES:
        raise R1ProbeError(f"weight edit {edit.name!r} is already registered")
    missing = [f for f, info in edit.Settings.model_fields.items() if not info.description]
    if missing:
        raise R1ProbeError(f"weight edit {edit.name!r}: settings without a description: {', '.join(missing)}")
    EDITS[edit.name] = edit
    for old, msg in (aliases or {}).items():
        ALIASES[old] = (edit.name, msg)
    return edit


def resolve_name(name: str) -> str:
    """The registered name behind ``name``; a deprecated alias prints its one-line message on stderr."""
    if name in EDITS:
        return name
    if name in ALIASES:
        new, msg = ALIASES[name]
        print(msg, file=sys.stderr)
        return new
    raise R1ProbeError(f"unknown weight edit {name!r}: choose one of {', '.join(EDITS)}")


def get_edit(name: str) -> WeightEdit:
    """The registered edit ``name`` (a deprecated alias prints one deprecation line on stderr)."""
    return EDITS[resolve_name(name)]


def make_settings(name: str, settings: BaseModel | dict | None = None) -> BaseModel:
    """``settings`` as the edit's own ``Settings`` model (a dict or None is validated; errors are one line)."""
    edit = get_edit(name)
    if isinstance(settings, edit.Settings):
        return settings
    if isinstance(settings, BaseModel):
        settings = settings.model_dump()
    try:
        return edit.Settings(**(settings or {}))
    except ValidationError as e:
        raise settings_error(e, edit.name) from None


def run_edit(name: str, lm, probe_dir: str | os.PathLike, settings: BaseModel | dict | None = None, *,
             log: Callable[[str], Any] = print) -> list[dict]:
    """Fit and apply edit ``name`` to ``lm`` (in place) with the directions of ``probe_dir``; returns the records.

    ``probe_dir``: a probe folder (``directions.safetensors`` + ``probe.json``) or a directions file.
    ``settings``: the edit's ``Settings`` (or a dict of them; None: the defaults).
    """
    from r1probe.steering.directions import DirectionSet

    edit = get_edit(name)
    s = make_settings(edit.name, settings)
    fitted = edit.fit(lm, DirectionSet.load(probe_dir), s, log=log)
    return [edit.apply(lm, fitted)]


from r1probe.steering.edits import amplify, fr_ablate, gate_mlp, orthogonalize, rank1_gate  # noqa: E402

register_edit(orthogonalize.Orthogonalize())
register_edit(amplify.Amplify())
register_edit(rank1_gate.Rank1Gate(), aliases={"enhance": "r1probe: 'enhance' is deprecated, use 'rank1-gate'"})
register_edit(gate_mlp.GateMlp())
register_edit(fr_ablate.FrAblate())

__all__ = ["WeightEdit", "EditSettings", "Fitted", "EDITS", "ALIASES", "register_edit", "get_edit", "resolve_name",
           "make_settings", "run_edit"]
