"""The study's settings: one schema fed by a TOML file, environment variables and CLI flags.

Precedence: defaults < TOML file < ``R1PROBE_<FIELD>`` environment variables < CLI flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from r1probe.errors import R1ProbeError
from r1probe.models.builtin import DEFAULT_MODEL

DEFAULT_LIMITS = {"chisafety-refusal": 50, "cvalues-report": 40, "xstest-safe": 40, "gsm8k": 16, "gsm8k-nll": 64}
FULL_LIMITS = {"chisafety-refusal": None, "chisafety-multiturn": None, "cvalues-report": None, "xstest-safe": None,
               "gsm8k": None, "gsm8k-nll": None, "math500": None, "cmath": None, "safetybench-zh": None}


EDITS = ("orthogonalize", "enhance", "enhance-borderline", "amplify")


@dataclass
class StudyConfig:
    """Settings of ``r1probe run`` (see README for the meaning of each field)."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    device: str = "auto"
    chat_template: str | None = None
    harmful: str = "builtin:zh-harmful"
    harmless: str = "builtin:zh-harmless"
    n_train: int = 96            # prompts per class for extraction / probes (train split)
    n_val: int = 24              # prompts per class for the causal selection (val split)
    layers: str = "all"
    positions: str = "post"
    kl_threshold: float = 0.1
    max_layer_frac: float = 0.8
    score: str = "lookahead"       # refusal score of the causal selection (see r1probe probe --score)
    # the probe configuration that passes the filters on the embedded model (README, probes):
    # shrunk-LDA candidates, ACE ablation downstream of the read layer, induce judged on generations
    candidates: str = "lda"
    ablation: str = "affine-downstream"
    induce_score: str = "generation"
    induce_min: float = 0.5
    induce_scale: float = 3.0
    edits: list[str] = field(default_factory=lambda: ["orthogonalize", "enhance", "enhance-borderline"])
    # enhance: the rank-one read/write edit of `r1probe edit --op enhance` (one layer; -1 = n_layers // 2),
    # written along the difference-in-means direction of that layer
    enhance_layer: int = -1
    enhance_lam: float = 20.0
    enhance_borderline: int = 332  # enhance-borderline: CValues contrast prompts added to the benign fit
    amplify_layers: str = "8-19"  # amplify: W <- (I + beta r r^T) W on these layers' output projections
    amplify_beta: float = 1.0
    plans: list[str] = field(default_factory=lambda: ["conditional"])  # run-time plans to evaluate
    benches: list[str] = field(default_factory=lambda: list(DEFAULT_LIMITS))
    limits: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    max_new_tokens: int = 64      # for refusal benches; reasoning benches use their own defaults
    gsm8k_max_new_tokens: int = 256
    batch_size: int = 16
    seed: int = 0
    data_root: str | None = None  # default: ../shared/data next to the checkout, or R1PROBE_DATA
    chisafety_root: str | None = None
    out: str = "runs/study"
    full: bool = False

    def __post_init__(self):
        if self.n_train < 4 or self.n_val < 2:
            raise R1ProbeError(f"n_train ({self.n_train}) must be >= 4 and n_val ({self.n_val}) >= 2")
        if not 0 < self.max_layer_frac <= 1:
            raise R1ProbeError(f"max_layer_frac {self.max_layer_frac}: must be in (0, 1]")
        bad = [e for e in self.edits if e not in EDITS]
        if bad:
            raise R1ProbeError(f"edits {bad}: choose from {', '.join(EDITS)}")
        if self.candidates not in ("mean_diff", "lda", "pca"):
            raise R1ProbeError(f"candidates {self.candidates!r}: choose from mean_diff, lda, pca")
        from r1probe.probes.select import SelectConfig

        SelectConfig(ablation=self.ablation, induce_score=self.induce_score, induce_scale=self.induce_scale,
                     score=self.score)  # validates these fields with the probe CLI's messages
        bad = [p for p in self.plans if p not in ("add", "conditional")]
        if bad:
            raise R1ProbeError(f"plans {bad}: choose from add, conditional")
        if self.full:
            self.limits = {**FULL_LIMITS, **{k: v for k, v in self.limits.items() if k not in DEFAULT_LIMITS}}
            if self.benches == list(DEFAULT_LIMITS):
                self.benches = list(FULL_LIMITS)
            self.max_new_tokens = max(self.max_new_tokens, 2048)
            self.gsm8k_max_new_tokens = max(self.gsm8k_max_new_tokens, 4096)
            self.n_train, self.n_val = max(self.n_train, 256), max(self.n_val, 32)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: str, current: Any, name: str) -> Any:
    """Parse an environment/CLI string into the type of the field's default."""
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise R1ProbeError(f"{name}={value!r}: expected true or false")
    if isinstance(current, int):
        try:
            return int(value)
        except ValueError as e:
            raise R1ProbeError(f"{name}={value!r}: expected an integer") from e
    if isinstance(current, float):
        try:
            return float(value)
        except ValueError as e:
            raise R1ProbeError(f"{name}={value!r}: expected a number") from e
    if isinstance(current, list):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(current, dict):
        out = {}
        for part in value.split(","):
            k, _, v = part.partition("=")
            out[k.strip()] = None if v.strip().lower() in ("", "none", "all") else int(v)
        return out
    return value


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> StudyConfig:
    """Build a config from defaults, a TOML file (``[study]`` table or top level), env and overrides."""
    env = os.environ if env is None else env
    defaults = StudyConfig()
    values: dict[str, Any] = {}
    names = {f.name for f in fields(StudyConfig)}
    if path:
        p = Path(path)
        if not p.is_file():
            raise R1ProbeError(f"{path}: no such config file")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise R1ProbeError(f"{path}: invalid TOML ({e})") from e
        data = data.get("study", data)
        unknown = sorted(set(data) - names)
        if unknown:
            raise R1ProbeError(f"{path}: unknown settings {', '.join(unknown)}")
        values.update(data)
    for name in names:
        key = f"R1PROBE_{name.upper()}"
        if key in env:
            values[name] = _coerce(env[key], getattr(defaults, name), key)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in names:
            raise R1ProbeError(f"unknown setting {k!r}")
        values[k] = _coerce(v, getattr(defaults, k), f"--{k.replace('_', '-')}") if isinstance(v, str) and not isinstance(getattr(defaults, k), str) else v
    if "limits" in values:
        values["limits"] = {**(FULL_LIMITS if values.get("full") else DEFAULT_LIMITS), **values["limits"]}
    return StudyConfig(**values)
