"""Presets of ``r1probe run``: a preset is a list of stages (functions of a :class:`Context`) plus the
settings defaults it brings (``r1probe.pipeline.settings.PRESETS``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from r1probe.pipeline.settings import PRESETS as PRESET_DEFAULTS
from r1probe.pipeline.settings import StudySettings
from r1probe.pipeline.stages import Context


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    stages: tuple[Callable[[Context], None], ...]


#: preset name -> its stages (its settings defaults are ``r1probe.pipeline.settings.PRESETS[name]``)
PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, defaults: dict | None = None) -> Preset:
    """Make ``preset`` runnable as ``r1probe run --preset NAME``; ``defaults``: nested settings it brings
    (below a TOML file, the environment and flags), e.g. ``{"eval": {"benches": ["gsm8k"]}}``."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset
    PRESET_DEFAULTS[preset.name] = PRESET_DEFAULTS.get(preset.name) or dict(defaults or {})
    return preset


def get_preset(name: str) -> Preset:
    from r1probe.errors import R1ProbeError

    if name not in PRESETS:
        raise R1ProbeError(f"unknown preset {name!r} (allowed: {', '.join(PRESETS)})")
    return PRESETS[name]


def run_preset(settings: StudySettings, *, force: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run (or resume) ``settings.preset``'s stages in ``settings.out``; returns the results and report path."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    preset = get_preset(settings.preset)
    ctx = Context(settings, force=force, log=log)
    t0 = time.time()
    for stage in preset.stages:
        stage(ctx)
    dt = time.time() - t0
    report = ctx.out / "report.md"
    log(f"{preset.name} finished in {dt:.1f}s; report: {report}")
    return {"results": ctx.results, "report": str(report), "seconds": dt, "variants": ctx.variants,
            "context": ctx}


def _register_builtin() -> None:
    from r1probe.pipeline import distill, study

    register_preset(Preset("study", "extract, probe and select, edits and plans, evaluate, compare, report",
                           study.STAGES))
    register_preset(Preset("powered", "the study's stages at >= 200 items per safety set and the whole GSM8K NLL",
                           study.STAGES))
    register_preset(Preset("mini-distill", "distil on R1-format GSM8K traces, measure the safety loss, restore it",
                           distill.STAGES))


_register_builtin()
