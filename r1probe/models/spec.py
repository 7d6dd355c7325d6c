"""Model specs: one string names a hub id, a local folder, a ``.gguf`` file or ``builtin:NAME``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from r1probe.errors import SpecError

Kind = Literal["hub", "dir", "gguf", "builtin"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    ``kind`` is one of ``hub`` (a Hugging Face id, optionally at ``revision``),
    ``dir`` (a local checkpoint folder), ``gguf`` (a local GGUF file) and
    ``builtin`` (a model shipped through a registry package, see ``builtin.py``).
    """

    raw: str
    kind: Kind
    target: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.raw


def parse_spec(spec: str, revision: str | None = None) -> ModelSpec:
    """Resolve a spec string without loading anything.

    Order: ``builtin:`` prefix; an existing path (``.gguf`` file or folder); a
    path-looking string that does not exist (error); otherwise a hub id ``org/name``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty model spec")
    spec = spec.strip()
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        from r1probe.models.builtin import builtin_names

        if name not in (known := builtin_names()):
            raise SpecError(f"unknown builtin model {name!r}; known: {', '.join(known)}")
        return ModelSpec(spec, "builtin", name, revision)
    path = os.path.expanduser(spec)
    if os.path.exists(path):
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "config.json")):
                raise SpecError(f"{spec}: folder has no config.json (not a Hugging Face checkpoint)")
            return ModelSpec(spec, "dir", os.path.abspath(path), revision)
        if path.lower().endswith(".gguf"):
            return ModelSpec(spec, "gguf", os.path.abspath(path), revision)
        raise SpecError(f"{spec}: a file that is not a .gguf model")
    if path.lower().endswith(".gguf") or spec.startswith((".", "/", "~")) or os.sep in spec.rstrip("/").split("/", 1)[-1]:
        raise SpecError(f"{spec}: no such file or folder")
    if _HUB_ID.match(spec):
        return ModelSpec(spec, "hub", spec, revision)
    raise SpecError(f"{spec}: not a builtin:NAME, an existing path, or a hub id of the form org/name")
