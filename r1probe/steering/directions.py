"""Reading steering directions from a directions file (the one place that does).

A directions file is a safetensors dict of 1-D float tensors, written by ``r1probe probe``:
``chosen`` (the selected refusal direction) and/or ``layer{L}_pos{P}`` per layer and
post-instruction position. It may sit in a folder next to ``probe.json`` (which names the
chosen layer/position); pass either the folder or the ``.safetensors`` file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from r1probe.errors import R1ProbeError

DIRECTIONS_FILE = "directions.safetensors"
PROBE_META = "probe.json"


def directions_path(path_or_dir: str | os.PathLike) -> Path:
    """The ``.safetensors`` file behind ``path_or_dir`` (a file, or a folder holding directions.safetensors)."""
    p = Path(path_or_dir)
    if p.is_dir():
        f = p / DIRECTIONS_FILE
        if not f.exists():
            cands = sorted(p.glob("*.safetensors"))
            if len(cands) != 1:
                raise R1ProbeError(f"{p}: no {DIRECTIONS_FILE} in this folder (pass the directions file itself)")
            f = cands[0]
        return f
    if not p.exists():
        raise R1ProbeError(f"directions file not found: {p}")
    return p


def probe_meta(path_or_dir: str | os.PathLike) -> dict:
    """The ``probe.json`` beside a directions file, or ``{}`` when there is none."""
    f = directions_path(path_or_dir).parent / PROBE_META
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise R1ProbeError(f"{f}: unreadable probe metadata ({e})") from e


def load_directions(path_or_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a directions file (float32, CPU)."""
    from safetensors.torch import load_file

    f = directions_path(path_or_dir)
    try:
        return {k: v.float() for k, v in load_file(str(f)).items()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise R1ProbeError(f"{f}: not a readable safetensors directions file ({str(e).splitlines()[0]})") from e


def chosen_key(tensors: dict, meta: dict) -> str:
    """Which key ``chosen`` means: the ``chosen`` tensor, else probe.json's layer/position, else the only key."""
    if "chosen" in tensors:
        return "chosen"
    ch = meta.get("chosen") if isinstance(meta.get("chosen"), dict) else meta
    if "layer" in ch and ("pos" in ch or "position" in ch):
        k = f"layer{int(ch['layer'])}_pos{int(ch.get('pos', ch.get('position')))}"
        if k in tensors:
            return k
    if len(tensors) == 1:
        return next(iter(tensors))
    raise R1ProbeError("the directions file has no 'chosen' direction; name one with --direction-key "
                       f"(e.g. {', '.join(sorted(tensors)[:3])})")


@dataclass
class DirectionSet:
    """The directions of one probe folder: the file's tensors, its ``probe.json`` and which key is chosen.

    Weight edits and steering plans take their direction from here: ``get(None)`` / ``get("chosen")``
    is the selected direction (``chosen_key``), ``get("layer12_pos-1")`` a named one.
    """

    path: Path                        # the .safetensors file
    tensors: dict[str, torch.Tensor]  # float32, CPU
    meta: dict                        # probe.json beside the file ({} when there is none)

    @classmethod
    def load(cls, path_or_dir: str | os.PathLike) -> "DirectionSet":
        """Read a directions file or a folder holding ``directions.safetensors`` (and ``probe.json``)."""
        f = directions_path(path_or_dir)
        tensors = load_directions(f)
        if not tensors:
            raise R1ProbeError(f"{f}: the directions file is empty")
        return cls(f, tensors, probe_meta(f))

    @property
    def chosen(self) -> str:
        """The key that ``"chosen"`` means in this file."""
        return chosen_key(self.tensors, self.meta)

    def get(self, key: str | None = None, d_model: int | None = None) -> torch.Tensor:
        """One direction ``[d]``: ``None``/``"chosen"`` for the selected one, else the named key.

        ``d_model``: the model's hidden size; a mismatch raises one clear line.
        """
        f = self.path
        k = self.chosen if key in (None, "chosen") else key
        if k not in self.tensors:
            raise R1ProbeError(f"{f}: no direction {k!r} (has {', '.join(sorted(self.tensors)[:6])}"
                               f"{', ...' if len(self.tensors) > 6 else ''})")
        t = self.tensors[k]
        d = t.reshape(-1) if t.dim() == 2 and 1 in t.shape else t
        if d.dim() != 1:
            raise R1ProbeError(f"{f}: direction {k!r} has shape {tuple(d.shape)}, expected one vector [d]")
        check_size(d, d_model, f"{f.name}:{k}")
        return d


def load_direction(path_or_dir: str | os.PathLike, key: str | None = None,
                   d_model: int | None = None) -> torch.Tensor:
    """One direction ``[d]`` (float32) from a directions file or folder (``DirectionSet.get``).

    ``key``: ``None``/``"chosen"`` for the selected direction, or e.g. ``"layer12_pos-1"``.
    ``d_model``: the model's hidden size; a mismatch raises one clear line.
    """
    return DirectionSet.load(path_or_dir).get(key, d_model)


def check_size(d: torch.Tensor, d_model: int | None, what: str = "direction") -> None:
    """Raise one clear line when a direction's size is not the model's hidden size."""
    if d_model is not None and d.numel() != d_model:
        raise R1ProbeError(f"{what} has size {d.numel()} but the model's hidden size is {d_model} "
                           "(was it computed on a different model?)")


def save_directions(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Write a directions file atomically (used by tests and the measurement scripts)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    save_file({k: v.detach().float().cpu().clone().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.replace(tmp, p)
