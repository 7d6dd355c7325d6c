"""Provenance helpers: hashes, library versions and the command line, for manifests."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from r1probe.errors import R1ProbeError

_LIBS = ("r1probe", "torch", "transformers", "safetensors", "gguf", "scikit-learn",
         "numpy", "transformer-lens", "nnsight", "optuna")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no spaces)."""
    return sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")))


def library_versions(names: Iterable[str] = _LIBS) -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def base_manifest(**extra: Any) -> dict[str, Any]:
    """Fields every artifact manifest carries: versions, command line, time."""
    m = {
        "versions": library_versions(),
        "command": " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    m.update(extra)
    return m


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give a file made by ``mkstemp``/``mkdtemp`` (private: 0600/0700) the mode an ordinary ``open``/``mkdir``
    would have: 0666 / 0777 less the umask (0644 / 0755 under the usual umask 022)."""
    mode = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, mode & ~current_umask())


def publish_tree(folder: str | os.PathLike) -> None:
    """:func:`publish_mode` on ``folder`` and everything below it."""
    folder = Path(folder)
    publish_mode(folder)
    for p in folder.rglob("*"):
        if not p.is_symlink():
            publish_mode(p)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written); the file gets
    the ordinary mode (0666 less the umask), not the private one of the temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        publish_mode(tmp)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def _nearest_existing(p: Path) -> Path:
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_writable_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail early, in one line, when folder ``path`` cannot be created or written (before any work starts).

    Creates nothing: the nearest existing ancestor must be a writable folder. Raises ``R1ProbeError``.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise R1ProbeError(f"{flag} {path}: exists and is not a folder")
    _check_creatable(p, path, flag)
    return p


def check_writable_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Like :func:`check_writable_dir` for a file to be written: not a folder, writable if it exists, and its
    folder creatable and writable."""
    p = Path(path)
    if p.is_dir():
        raise R1ProbeError(f"{flag} {path}: is a folder, expected a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise R1ProbeError(f"{flag} {path}: is not writable")
    _check_creatable(p.parent, path, flag)
    return p


def _check_creatable(folder: Path, shown, flag: str) -> None:
    probe = _nearest_existing(folder.absolute())
    name = os.path.relpath(probe) if not Path(shown).is_absolute() else str(probe)
    if not probe.is_dir():
        raise R1ProbeError(f"{flag} {shown}: {name} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise R1ProbeError(f"{flag} {shown}: {name} is not writable")


def cache_dir() -> Path:
    """Root of r1probe's cache: ``$R1PROBE_CACHE`` or ``~/.cache/r1probe``."""
    root = os.environ.get("R1PROBE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "r1probe")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p
