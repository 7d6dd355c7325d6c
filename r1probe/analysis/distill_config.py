"""Settings of the ``mini-distill`` preset of ``r1probe run`` (distil, measure the safety loss, restore it).

Precedence: the preset's defaults < ``R1PROBE_<FIELD>`` environment variables < CLI flags, as for the study.
The defaults are sized to finish in under an hour on one CPU thread with the embedded 0.5B model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from r1probe.errors import R1ProbeError
from r1probe.models.builtin import DEFAULT_MODEL

BENCHES = ["chisafety-refusal", "xstest-safe", "gsm8k", "gsm8k-nll"]
LIMITS = {"chisafety-refusal": 64, "xstest-safe": 40, "gsm8k": 24, "gsm8k-nll": 64}
#: restoration variants: (how, whose direction) — a run-time plan or an exported weight edit, with the base
#: model's refusal direction or the distilled model's own (difference in means at the same layer/position)
RESTORES = ("plan-base", "plan-own", "edit-base", "edit-own")


@dataclass
class DistillStudyConfig:
    """Settings of ``r1probe run --preset mini-distill`` (validated on construction)."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    device: str = "auto"
    chat_template: str | None = None
    threads: int | None = None     # torch intra-op threads (None: torch's default)
    # the refusal direction of the base model (same method as the study)
    harmful: str = "builtin:zh-harmful"
    harmless: str = "builtin:zh-harmless"
    n_train: int = 64
    n_val: int = 16
    layers: str = "all"
    positions: str = "post"
    kl_threshold: float = 0.1
    max_layer_frac: float = 0.8
    score: str = "lookahead"
    full: bool = False             # causal search over every layer/position instead of the coarse grid
    # distillation (SFT on GSM8K train rewritten into R1 format; see r1probe.distill)
    traces: str = "gsm8k"          # 'gsm8k', 'gsm8k:PATH' or a traces JSONL file
    n_traces: int = 400
    lora: bool = True
    lora_rank: int = 16
    lr: float = 2e-4
    epochs: float = 1.0
    max_len: int = 384
    grad_accum: int = 8
    warmup_steps: int = 5
    # restoration
    restores: list[str] = field(default_factory=lambda: list(RESTORES))
    enhance_layers: str = "8-19"   # output projections amplified by the edit (W <- (I + beta r r^T) W)
    enhance_beta: float = 1.0
    gate_quantile: float = 0.95    # the plan steers prompts whose projection passes this quantile of harmless ones
    # evaluation (identical for every variant)
    benches: list[str] = field(default_factory=lambda: list(BENCHES))
    limits: dict[str, int | None] = field(default_factory=lambda: dict(LIMITS))
    max_new_tokens: int = 128      # refusal benches: long enough for a short <think> block to close
    gsm8k_max_new_tokens: int = 256
    batch_size: int = 16
    nll_batch_size: int = 2        # teacher-forced NLL materialises [batch, tokens, 151,936] logits: keep it small
    seed: int = 0
    data_root: str | None = None
    chisafety_root: str | None = None
    out: str = "runs/mini-distill"

    def __post_init__(self):
        def bad(msg):
            raise R1ProbeError(f"mini-distill: {msg}")

        if self.n_train < 4 or self.n_val < 2:
            bad(f"n_train ({self.n_train}) must be >= 4 and n_val ({self.n_val}) >= 2")
        if self.n_traces < 1 or self.max_len < 16 or self.grad_accum < 1 or self.lora_rank < 1:
            bad("n_traces, grad_accum and lora_rank must be >= 1 and max_len >= 16")
        if not 0 < self.lr < 1 or self.epochs <= 0:
            bad(f"lr {self.lr} must be in (0, 1) and epochs {self.epochs} > 0")
        if not 0 < self.max_layer_frac <= 1 or not 0 < self.gate_quantile < 1:
            bad("max_layer_frac must be in (0, 1] and gate_quantile in (0, 1)")
        if self.batch_size < 1 or self.nll_batch_size < 1:
            bad("batch_size and nll_batch_size must be >= 1")
        if self.threads is not None and self.threads < 1:
            bad(f"threads {self.threads} must be >= 1")
        wrong = [r for r in self.restores if r not in RESTORES]
        if wrong:
            bad(f"restores {wrong}: choose from {', '.join(RESTORES)}")
        if not self.benches:
            bad("no benches")
        self.limits = {**LIMITS, **self.limits}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sft_config(self):
        """The fine-tuning settings (``r1probe.distill.sft.SFTConfig``) this preset trains with."""
        from r1probe.distill.sft import SFTConfig

        return SFTConfig(lr=self.lr, epochs=self.epochs, batch_size=1, grad_accum=self.grad_accum,
                         max_len=self.max_len, seed=self.seed, lora=self.lora, lora_rank=self.lora_rank,
                         lora_alpha=2.0 * self.lora_rank, warmup_steps=self.warmup_steps, save_every=10)


PRESETS = {"mini-distill": DistillStudyConfig}


def load_distill_config(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> DistillStudyConfig:
    """The preset's config from its defaults, ``R1PROBE_*`` environment variables and ``overrides`` (CLI flags)."""
    env = os.environ if env is None else env
    defaults = DistillStudyConfig()
    names = {f.name for f in fields(DistillStudyConfig)}
    values: dict[str, Any] = {}
    for name in names:
        key = f"R1PROBE_{name.upper()}"
        if key in env:
            values[name] = _typed(env[key], getattr(defaults, name), name, key)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in names:
            raise R1ProbeError(f"--{k.replace('_', '-')} does not apply to the mini-distill preset")
        values[k] = _typed(v, getattr(defaults, k), k, f"--{k.replace('_', '-')}")
    return DistillStudyConfig(**values)


def _typed(value: Any, current: Any, name: str, what: str) -> Any:
    """A string from the environment or a flag parsed as the field's type (``threads`` is an int)."""
    from r1probe.analysis.config import _coerce

    if not isinstance(value, str):
        return value
    if name == "threads":
        return _coerce(value, 0, what)
    return value if current is None or isinstance(current, str) else _coerce(value, current, what)
