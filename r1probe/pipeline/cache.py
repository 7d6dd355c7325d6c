"""Cached pipeline stages: a stage reruns only when its inputs change.

A stage's key is the sha256 of its inputs (the config fields it reads and the keys of the
stages it depends on). Its artifact folder holds ``stage.json`` with that key, written last
and atomically, so a crash mid-stage leaves a folder that is simply redone.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from r1probe.provenance import atomic_write_json, sha256_json

STAMP = "stage.json"


@dataclass
class StageResult:
    name: str
    key: str
    path: Path
    skipped: bool
    seconds: float
    info: dict = field(default_factory=dict)


def stage_key(name: str, inputs: dict[str, Any]) -> str:
    return sha256_json({"stage": name, "inputs": inputs})


def is_fresh(path: Path, key: str) -> bool:
    stamp = path / STAMP
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def run_stage(name: str, path: str | Path, inputs: dict[str, Any], fn: Callable[[Path], dict | None],
              *, force: bool = False, keep_partial: bool = False, log: Callable[[str], None] = print) -> StageResult:
    """Run ``fn(path)`` unless ``path/stage.json`` records the same inputs; returns its info.

    A stale folder (other inputs, or no stamp after a crash) is cleared before rerunning, unless
    ``keep_partial`` (for stages that resume by themselves, like evaluation after a crash) and
    the stale folder's inputs are the same (no stamp yet).
    """
    path = Path(path)
    key = stage_key(name, inputs)
    if not force and is_fresh(path, key):
        info = json.loads((path / STAMP).read_text()).get("info", {})
        log(f"[{name}] up to date, skipped ({path})")
        return StageResult(name, key, path, True, 0.0, info)
    if path.exists() and not (keep_partial and not (path / STAMP).exists()):
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] running -> {path}")
    t0 = time.time()
    info = fn(path) or {}
    dt = time.time() - t0
    atomic_write_json(path / STAMP, {"stage": name, "key": key, "inputs": inputs, "info": info,
                                     "seconds": round(dt, 2), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    log(f"[{name}] done in {dt:.1f}s")
    return StageResult(name, key, path, False, dt, info)
