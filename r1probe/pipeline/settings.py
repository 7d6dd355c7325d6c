"""The settings of ``r1probe run``: one model per stage, nested in :class:`StudySettings`.

Sources, lowest first: the field defaults < the preset's defaults (``PRESETS``) < a TOML file
(``[study]`` table) < ``R1PROBE_*`` environment variables (``__`` between nesting levels, e.g.
``R1PROBE_EVAL__BENCHES=gsm8k,xstest-safe``) < CLI flags (``--eval.benches``; a leaf name that is
unique in the schema also has a short flag, ``--benches``). Lists take comma-separated strings,
limits take ``name=N`` pairs. Everything is validated before any model is loaded: a wrong type,
an unknown key at any depth, an unknown bench or edit name is a one-line :class:`SettingsError`.
"""

from __future__ import annotations

import os
import sys
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, SettingsConfigDict

from r1probe.distill.student import StudentRecipe
from r1probe.models.builtin import DEFAULT_MODEL
from r1probe.probes.select import SelectConfig
from r1probe.settings import Settings, SettingsError, register_model, split_limits, split_list, validate

#: the default study's benches and items per variant: CHiSafetyBench (report-only) and the four over-refusal
#: sets (report parts) at 96 items (a 95% Wilson interval of at most +-0.10 at any rate; OR-Bench-Hard's report
#: part has fewer, all of it is used; zh-harmless rates sit near 0, 64 keep them within +-0.10 up to a rate of
#: 0.2), and reasoning (GSM8K gold NLL, the cost measure; GSM8K and CMATH accuracy as a check)
DEFAULT_LIMITS = {"chisafety-refusal": 96, "cvalues-report": 96, "xstest-safe": 96, "or-bench": None,
                  "zh-harmless": 64, "gsm8k": 24, "gsm8k-nll": 64, "cmath": 16}
FULL_LIMITS = {"chisafety-refusal": None, "chisafety-multiturn": None, "cvalues-report": None, "xstest-safe": None,
               "or-bench": None, "zh-harmless": None, "gsm8k": None, "gsm8k-nll": None, "math500": None,
               "cmath": None, "safetybench-zh": None}
#: the powered preset: >= 200 items per safety set where the report part has them (XSTest-safe: its whole report
#: part), the GSM8K gold NLL over the whole report part
POWERED_LIMITS = {"chisafety-refusal": 200, "cvalues-report": 200, "xstest-safe": None, "or-bench": 200,
                  "zh-harmless": 200, "gsm8k": 200, "gsm8k-nll": None, "cmath": 200}
#: the mini-distill preset: >= 200 CHiSafetyBench items (a 95% Wilson interval of at most +-0.07 on a rate),
#: the four over-refusal sets at 64 (OR-Bench-Hard: its report part), reasoning as in the study
DISTILL_LIMITS = {"chisafety-refusal": 200, "cvalues-report": 64, "xstest-safe": 64, "or-bench": None,
                  "zh-harmless": 64, "gsm8k": 24, "gsm8k-nll": 64}
#: restoration variants of the mini-distill preset: (how, whose direction)
RESTORES = ("plan-base", "plan-own", "edit-base", "edit-own")
#: study variant names replaced by the edit registry's names: old -> new
RENAMED_EDITS = {"enhance": "rank1-gate", "enhance-borderline": "rank1-gate-borderline"}


def bench_names() -> list[str]:
    """Names of the benchmark registry (``r1probe.eval.benches``)."""
    from r1probe.eval.benches import BENCHES

    return list(BENCHES)


def edit_names() -> list[str]:
    """The study's exported-edit variants: the weight-edit registry's names plus ``rank1-gate-borderline``
    (rank1-gate with its read vector also kept silent on CValues borderline prompts)."""
    try:
        from r1probe.steering.edits import EDITS

        names = [n for n in EDITS]
    except ImportError:
        names = ["orthogonalize", "rank1-gate", "amplify"]
    if "rank1-gate" in names:
        names.insert(names.index("rank1-gate") + 1, "rank1-gate-borderline")
    return names


def _check_names(values: list[str], allowed: list[str], what: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(bad)} (allowed: {', '.join(allowed)})")
    return values


class ModelSettings(Settings):
    """The model every stage loads (variants are exports of it)."""

    spec: str = Field(DEFAULT_MODEL, description="Model spec: hub id, checkpoint folder, .gguf file or builtin:NAME.",
                      json_schema_extra={"flag": "model"})
    dtype: str = Field("auto", description="auto, bfloat16, float16 or float32.")
    device: str = Field("auto", description="cpu, cuda, cuda:1 ... (auto: cuda if available).")
    chat_template: str | None = Field(None, description="auto (the model's), r1, or a .jinja file (unset: the model's).")


class ExtractSettings(Settings):
    """Activation extraction on the training prompts (``r1probe extract``)."""

    harmful: str = Field("builtin:zh-harmful", description="Harmful prompt set (its train split is read).")
    harmless: str = Field("builtin:zh-harmless", description="Harmless prompt set (its train split is read).")
    n_train: int = Field(96, ge=4, description="Prompts per class for extraction and the probes.")
    layers: str = Field("all", description="Layers to extract: all, 8-16, 4,8,12.")
    positions: str = Field("post", description="Token positions to extract: post (post-instruction) or offsets.")


class ProbeSettings(SelectConfig):
    """Probes and the causal selection of the refusal direction (``r1probe probe``)."""

    _where: ClassVar[str] = "probe"

    n_val: int = Field(24, ge=2, description="Validation prompts per class for the causal selection.")
    candidates: Literal["mean_diff", "lda", "pca"] = Field(
        "lda", description="Whose directions the causal search scores (lda: mean difference whitened by a shrunk covariance).")
    estimators: list[str] = Field(["mean_diff", "logistic"], description="Probe estimators to fit (candidates is added).")
    ablation: Literal["directional", "affine", "affine-downstream"] = Field(
        "affine-downstream", description="Bypass intervention: directional, affine (ACE) or affine after the read layer.")
    induce_score: Literal["first_token", "generation"] = Field(
        "generation", description="Induce score: first-token log-odds or the keyword-judged refusal rate of a generation.")
    induce_min: float = Field(0.5, description="Drop candidates whose induce score is <= this.")
    induce_scale: float = Field(3.0, gt=0, allow_inf_nan=False, description="Induce strength s in alpha = s * ||r||.")
    n_reference: int | None = Field(None, ge=1, description="Harmless train prompts for the affine references "
                                                          "(unset: max(n_val, 32)).")

    _split = field_validator("estimators", mode="before")(classmethod(lambda cls, v: split_list(v)))

    def select_config(self) -> SelectConfig:
        """The causal search's settings (``n_reference`` resolved)."""
        data = {k: getattr(self, k) for k in SelectConfig.model_fields}
        data["n_reference"] = self.n_reference or max(self.n_val, 32)
        return SelectConfig(**data)


class EditSettings(Settings):
    """Exported weight edits evaluated beside the base model (``r1probe edit``)."""

    edits: list[str] = Field(["rank1-gate"],
                             description="Exported edits to evaluate (names of the weight-edit registry; add "
                                         "orthogonalize for the refusal-ablated export and its comparison with "
                                         "the base model).")
    rank1_gate_layer: int = Field(-1, ge=-1, description="rank1-gate: its layer (-1: the middle layer).")
    rank1_gate_lam: float = Field(10.0, description="rank1-gate: the write strength lambda of W <- W + lambda r a^T "
                                                   "(the value the dev-part screen chose).")
    rank1_gate_borderline: int = Field(332, ge=0, description="rank1-gate-borderline: CValues contrast prompts added "
                                                             "to the benign fit data.")
    rank1_gate_extra_benign: list[Literal["or-bench", "xstest-safe"]] = Field([], description="rank1-gate-borderline: benches whose whole dev part "
                                                               "also joins its benign fit data (or-bench, "
                                                               "xstest-safe).")
    fit_seeds: list[int] = Field(
        [], description="rank1-gate: also refit on a seeded subsample of its fit data (rank1_gate_fit_fraction of "
                        "each part) for each seed; each refit is a variant rank1-gate@sK evaluated like the others.")
    rank1_gate_fit_fraction: float = Field(0.8, gt=0, le=1, description="rank1-gate: share of each fit-data part a "
                                                                        "seeded refit keeps.")
    fr_ablate_borderline: int = Field(332, ge=1, description="fr-ablate: CValues contrast prompts (dev) whose mean, "
                                                             "less the harmless train prompts', is the false-refusal "
                                                             "direction (read at the rank1-gate layer).")
    amplify_layers: str = Field("8-19", description="amplify: the layers whose output projections are amplified.")
    amplify_beta: float = Field(1.0, description="amplify: beta of W <- (I + beta r r^T) W.")

    _seeds = field_validator("fit_seeds", "rank1_gate_extra_benign", mode="before")(
        classmethod(lambda cls, v: split_list(v)))

    @field_validator("edits", mode="before")
    @classmethod
    def _edits(cls, v):
        v = split_list(v)
        if isinstance(v, list):
            out = []
            for name in v:
                if name in RENAMED_EDITS:
                    print(f"r1probe: edit {name!r} is deprecated; use {RENAMED_EDITS[name]!r}", file=sys.stderr)
                    name = RENAMED_EDITS[name]
                out.append(name)
            allowed = edit_names()
            _check_names([p for name in out for p in name.split("+")], allowed,
                         "edit (a name, or names joined by + to apply in order)")
            return out
        return v


class SeparabilitySettings(Settings):
    """Must-refuse vs borderline vs ordinary prompts, separability per layer (``r1probe probe separability``)."""

    n: int = Field(64, ge=0, description="Prompts per class (0: skip the stage).")
    positions: list[int] = Field([-1], description="Token positions (offsets from the end of the prompt).")
    bootstrap: int = Field(500, ge=0, description="Bootstrap resamples of each AUROC's interval.")

    _split = field_validator("positions", mode="before")(classmethod(lambda cls, v: split_list(v)))


class PlanSettings(Settings):
    """Run-time steering plans evaluated beside the base model."""

    plans: list[Literal["add", "conditional", "alphasteer"]] = Field(
        ["conditional"], description="Run-time plans: conditional (CAST), add, alphasteer (AlphaSteer as published).")
    gate_quantile: float = Field(0.95, gt=0, lt=1, description="The conditional plan steers prompts whose projection "
                                                              "passes this quantile of the harmless train prompts.")
    alphasteer_layers: str = Field("6-16", description="alphasteer: the steered layers (block inputs).")
    alphasteer_strength: float = Field(0.3, description="alphasteer: lambda of s = lambda (a.x_last) r.")
    alphasteer_null_ratio: float = Field(0.5, gt=0, lt=1, description="alphasteer: share of the width kept as the "
                                                                      "benign null space.")
    alphasteer_ridge: float = Field(10.0, ge=0, description="alphasteer: ridge gamma of its read-vector fit.")
    alphasteer_borderline: int = Field(332, ge=0, description="alphasteer: CValues contrast prompts (dev) in its "
                                                              "benign null space.")
    alphasteer_extra_benign: list[Literal["or-bench", "xstest-safe"]] = Field([], description="alphasteer: benches whose whole dev part also joins "
                                                               "its benign null space (or-bench, xstest-safe).")
    alphasteer_fit_seeds: list[int] = Field([], description="alphasteer: also refit on a seeded subsample of its "
                                                            "fit data (alphasteer_fit_fraction of each part) for each "
                                                            "seed; each refit is a variant plan-alphasteer@sK.")
    alphasteer_fit_fraction: float = Field(0.8, gt=0, le=1, description="alphasteer: share of each fit-data part a "
                                                                        "seeded refit keeps.")

    _split = field_validator("plans", "alphasteer_extra_benign", "alphasteer_fit_seeds", mode="before")(
        classmethod(lambda cls, v: split_list(v)))


class EvalSettings(Settings):
    """Benchmarks every variant is evaluated on, with the same items and seeds (``r1probe eval``)."""

    benches: list[str] = Field(list(DEFAULT_LIMITS), description="Benchmarks (names of r1probe.eval.benches).")
    limits: dict[str, int | None] = Field(dict(DEFAULT_LIMITS), description="Items per bench, e.g. gsm8k=50 "
                                                                              "(none: all); merged over the preset's.")
    max_new_tokens: int = Field(64, ge=1, description="Generated tokens on non-reasoning benches.")
    reasoning_max_new_tokens: int = Field(256, ge=1, description="Generated tokens on benches that need a reasoning "
                                                                 "budget (maths).")
    auto_budget: bool = Field(True, description="For a model that thinks (opens <think>), raise max_new_tokens and "
                                                "reasoning_max_new_tokens to what its reasoning needs, measured on "
                                                "dev prompts (never lowered; a model that does not think keeps them).")
    budget_prompts: int = Field(32, ge=4, description="auto_budget: dev prompts per group (harmful, harmless, GSM8K).")
    budget_quantile: float = Field(0.95, gt=0, le=1, description="auto_budget: the quantile of reasoning lengths "
                                                                 "covered.")
    budget_answer_tokens: int = Field(64, ge=1, description="auto_budget: tokens for the answer after </think>.")
    budget_cap: int = Field(1024, ge=16, description="auto_budget: the largest budget (replies stop here).")
    batch_size: int | None = Field(None, ge=1, description="Rows in flight when generating (unset: the engine's "
                                                         "default for the device).")
    nll_batch_size: int | None = Field(None, ge=1, description="Batch of teacher-forced NLL benches (unset: batch_size, "
                                                              "else 16).")
    judge_reasoning: bool = Field(False, description="Also judge the <think> reasoning of refusal benches separately "
                                                     "(turned on by auto_budget when the model thinks).")
    reuse_closed_gates: bool = Field(True, description="A run-time plan whose every step is gated takes the records "
                                                       "of the same model without it for the prompts that leave its "
                                                       "gates closed (they run the unedited model); false: generate "
                                                       "them again.")
    data_root: str | None = Field(None, description="Folder with the benchmark data (unset: ../shared/data or R1PROBE_DATA).")
    chisafety_root: str | None = Field(None, description="CHiSafetyBench folder (never shipped: no licence; unset: data_root's chisafetybench/).")

    @field_validator("benches", mode="before")
    @classmethod
    def _benches(cls, v):
        v = split_list(v)
        return _check_names(v, bench_names(), "bench") if isinstance(v, list) else v

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, v):
        v = split_limits(v)
        if isinstance(v, dict):
            _check_names(list(v), bench_names(), "bench in limits")
            v = {k: None if isinstance(x, str) and x.strip().lower() in ("none", "all", "") else x for k, x in v.items()}
        return v


class CompareSettings(Settings):
    """Base model vs an exported edit: probe curves, cosine, CKA, transfer (``r1probe compare``)."""

    edit: str = Field("orthogonalize", description="The exported edit compared with the base model (skipped when "
                                                   "it is not among edit.edits).")


class ReportSettings(Settings):
    """``report.md``: key numbers with intervals, figures, the settings and the equivalent commands."""

    figures: bool = Field(True, description="Draw the figures (PNG + PDF) beside the tables.")


class DistillSettings(Settings):
    """The mini-distill preset: distil the model into an R1-style student, measure the safety loss, restore it."""

    traces: str = Field("r1-student", description="'r1-student' (the student recipe's mix: n_math GSM8K + n_general "
                                                  "BELLE traces in R1 format, no safety data), 'gsm8k', 'gsm8k:PATH' "
                                                  "or a traces JSONL file.")
    n_math: int = Field(StudentRecipe.n_math, ge=0, description="r1-student: GSM8K train traces.")
    n_general: int = Field(StudentRecipe.n_general, ge=0, description="r1-student: BELLE everyday-instruction traces.")
    n_traces: int = Field(400, ge=1, description="Training traces ('gsm8k' or a file).")
    lora: bool = Field(StudentRecipe.lora, description="Train a LoRA adapter (merged on export) instead of every weight.")
    lora_rank: int = Field(StudentRecipe.lora_rank, ge=1, description="LoRA rank (alpha = 2 * rank).")
    lr: float = Field(StudentRecipe.lr, gt=0, lt=1, description="Learning rate.")
    epochs: float = Field(StudentRecipe.epochs, gt=0, description="Epochs over the traces.")
    max_len: int = Field(StudentRecipe.max_len, ge=16, description="Tokens per training sequence.")
    grad_accum: int = Field(StudentRecipe.grad_accum, ge=1, description="Gradient accumulation steps (batch size 1).")
    warmup_steps: int = Field(StudentRecipe.warmup_steps, ge=0, description="Linear warm-up steps.")
    keypoint: Literal["sentence", "clause"] = Field(StudentRecipe.keypoint, description="r1-student: the free text "
                                                    "of a BELLE trace's reasoning, the answer's first sentence or clause.")
    keypoint_chars: int = Field(StudentRecipe.keypoint_chars, ge=1, description="r1-student: that free text's "
                                                                                "largest length in characters.")
    think_positions: bool = Field(True, description="Also extract and probe the distilled model inside an opened "
                                                    "<think> block and after an empty closed one.")
    transfer_prompts: int = Field(32, ge=0, description="Cross-model transfer: dev prompts per class on which each "
                                                       "model runs with the other's direction ablated / added "
                                                       "(0: skip).")
    restores: list[Literal["plan-base", "plan-own", "edit-base", "edit-own"]] = Field(
        list(RESTORES), description="Restorations: a gated plan or an amplify edit, with the base or the distilled "
                                    "model's own direction.")
    amplify_layers: str = Field("8-19", description="Restoring edit: the layers whose output projections are amplified.")
    amplify_beta: float = Field(1.0, description="Restoring edit: beta of W <- (I + beta r r^T) W.")

    _split = field_validator("restores", mode="before")(classmethod(lambda cls, v: split_list(v)))

    def recipe(self, base: str, seed: int) -> StudentRecipe:
        """The student recipe of ``traces='r1-student'`` (``r1probe.distill.student``) for ``base``."""
        return StudentRecipe(base=base, n_math=self.n_math, n_general=self.n_general, epochs=self.epochs, lr=self.lr,
                             lora=self.lora, lora_rank=self.lora_rank, grad_accum=self.grad_accum,
                             max_len=self.max_len, warmup_steps=self.warmup_steps, keypoint=self.keypoint,
                             keypoint_chars=self.keypoint_chars, seed=seed)

    def sft_config(self, seed: int):
        """The fine-tuning settings (``r1probe.distill.sft.SFTConfig``) of 'gsm8k' or file traces: the student
        recipe's, from these settings."""
        return self.recipe("", seed).sft_config()


#: preset name -> its settings defaults over the field defaults (``presets.register_preset`` adds to it)
PRESETS: dict[str, dict[str, Any]] = {
    "study": {},
    "powered": {"out": "runs/powered", "eval": {"limits": POWERED_LIMITS}},
    "mini-distill": {
        "out": "runs/mini-distill",
        "extract": {"n_train": 64},
        "probe": {"n_val": 16, "candidates": "mean_diff", "ablation": "directional", "induce_score": "first_token",
                  "induce_min": 0.0, "induce_scale": 1.0, "n_reference": 64},
        "edit": {"edits": []},
        "plan": {"plans": []},
        "eval": {"benches": list(DISTILL_LIMITS), "limits": DISTILL_LIMITS,
                 "max_new_tokens": 64, "nll_batch_size": 2, "judge_reasoning": True},
    },
}

_LOWER: ContextVar[dict] = ContextVar("r1probe_settings_lower", default={})
_ENV: ContextVar[dict | None] = ContextVar("r1probe_settings_env", default=None)


class _EnvSource(EnvSettingsSource):
    """``R1PROBE_*`` variables of the mapping given to :func:`load_settings` (default ``os.environ``)."""

    def _load_env_vars(self):
        env = _ENV.get()
        if env is None:
            return super()._load_env_vars()
        return {k.lower(): v for k, v in env.items() if not (self.env_ignore_empty and v == "")}


class StudySettings(BaseSettings):
    """Every setting of ``r1probe run``, one nested model per stage."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True, env_prefix="R1PROBE_",
                                      env_nested_delimiter="__", enable_decoding=False, case_sensitive=False)

    preset: str = Field("study", description="Which preset's stages run (r1probe.pipeline.presets.PRESETS): study "
                                             "(probe, edit, evaluate, compare), powered (the study at >= 200 items "
                                             "per safety set) or mini-distill.")
    out: str = Field("runs/study", description="Output folder (every stage caches its artifacts under it).")
    full: bool = Field(False, description="Full benchmark sizes and token budgets (for a GPU and a real R1-Distill model).")
    seed: int = Field(0, description="Seed of every sample, split and generation.")
    threads: int | None = Field(None, ge=1, description="Torch CPU threads (unset: torch's choice).")
    model: ModelSettings = Field(default_factory=ModelSettings, description=ModelSettings.__doc__)
    extract: ExtractSettings = Field(default_factory=ExtractSettings, description=ExtractSettings.__doc__)
    probe: ProbeSettings = Field(default_factory=ProbeSettings, description=ProbeSettings.__doc__)
    separability: SeparabilitySettings = Field(default_factory=SeparabilitySettings,
                                               description=SeparabilitySettings.__doc__)
    edit: EditSettings = Field(default_factory=EditSettings, description=EditSettings.__doc__)
    plan: PlanSettings = Field(default_factory=PlanSettings, description=PlanSettings.__doc__)
    eval: EvalSettings = Field(default_factory=EvalSettings, description=EvalSettings.__doc__)
    compare: CompareSettings = Field(default_factory=CompareSettings, description=CompareSettings.__doc__)
    report: ReportSettings = Field(default_factory=ReportSettings, description=ReportSettings.__doc__)
    distill: DistillSettings = Field(default_factory=DistillSettings, description=DistillSettings.__doc__)

    @field_validator("preset")
    @classmethod
    def _preset(cls, v):
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r} (allowed: {', '.join(PRESETS)})")
        return v

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _EnvSource(settings_cls), InitSettingsSource(settings_cls, _LOWER.get())

    @model_validator(mode="before")
    @classmethod
    def _merge_limits(cls, data):
        """Per-bench limits given in any source merge over the preset's (a bench left out keeps its default)."""
        if isinstance(data, dict) and isinstance(data.get("eval"), dict) and "limits" in data["eval"]:
            given = split_limits(data["eval"]["limits"])
            if isinstance(given, dict):
                preset = data.get("preset", "study")
                base = FULL_LIMITS if _truthy(data.get("full")) else \
                    PRESETS.get(preset, {}).get("eval", {}).get("limits", DEFAULT_LIMITS)
                data = {**data, "eval": {**data["eval"], "limits": {**base, **given}}}
        return data

    @model_validator(mode="after")
    def _full(self):
        """``full``: every item of the full benches, long token budgets and more prompts."""
        if self.full:
            ev = self.eval
            limits = {**FULL_LIMITS, **{k: v for k, v in ev.limits.items() if k not in DEFAULT_LIMITS}}
            benches = list(FULL_LIMITS) if ev.benches == list(DEFAULT_LIMITS) else ev.benches
            object.__setattr__(self, "eval", ev.model_copy(update={
                "limits": limits, "benches": benches, "max_new_tokens": max(ev.max_new_tokens, 2048),
                "reasoning_max_new_tokens": max(ev.reasoning_max_new_tokens, 4096)}))
            object.__setattr__(self, "extract", self.extract.model_copy(update={"n_train": max(self.extract.n_train, 256)}))
            object.__setattr__(self, "probe", self.probe.model_copy(update={"n_val": max(self.probe.n_val, 32)}))
        return self

    def limit(self, bench: str) -> int | None:
        """The item limit of ``bench`` (None: all items)."""
        return self.eval.limits.get(bench)


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"))


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_toml(path: str | os.PathLike) -> dict:
    """The ``[study]`` table of a TOML file (or its top level when there is no such table)."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"{path}: no such settings file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"{path}: invalid TOML ({e})") from None
    return data["study"] if isinstance(data.get("study"), dict) else data


def load_settings(path: str | os.PathLike | None = None, flags: dict[str, Any] | None = None,
                  env: dict[str, str] | None = None) -> StudySettings:
    """Resolve the settings: defaults < preset < TOML ``path`` < ``R1PROBE_*`` env < ``flags`` (nested dict).

    Raises :class:`SettingsError` (one line naming the key and the allowed values) on any problem.
    """
    toml = read_toml(path) if path else {}
    flags = flags or {}
    env = dict(os.environ if env is None else env)
    preset = flags.get("preset") or env.get("R1PROBE_PRESET") or toml.get("preset") or "study"
    if preset not in PRESETS:
        raise SettingsError(f"preset: unknown preset {preset!r} (allowed: {', '.join(PRESETS)})")
    lower = _deep_merge(PRESETS[preset], toml)
    tokens = (_LOWER.set(lower), _ENV.set(env))
    try:
        return _build(flags)
    finally:
        _LOWER.reset(tokens[0])
        _ENV.reset(tokens[1])


def _build(flags: dict) -> StudySettings:
    import pydantic

    from r1probe.settings import one_line

    try:
        return StudySettings(**flags)
    except pydantic.ValidationError as e:
        raise SettingsError(one_line(e)) from None
    except ValueError as e:  # an environment value pydantic-settings could not parse
        raise SettingsError(str(e).splitlines()[0]) from None


register_model(StudySettings)


def equivalent_command(settings: StudySettings) -> str:
    """``r1probe run`` with the flags that reproduce ``settings`` from its preset's defaults."""
    import shlex

    from r1probe.settings import settings_argv

    baseline = load_settings(env={}, flags={"preset": settings.preset})
    argv = settings_argv(settings, baseline)
    if settings.preset != "study" and "--preset" not in argv:
        argv = ["--preset", settings.preset] + argv
    return " ".join(["r1probe", "run"] + [shlex.quote(a) for a in argv])


def settings_from_dict(data: dict) -> StudySettings:
    """Settings from a nested dict (e.g. a report's recorded settings), ignoring the environment."""
    return validate(StudySettings, data)


def dump_settings(s: StudySettings) -> dict:
    """The settings as a JSON-serialisable nested dict."""
    return s.model_dump(mode="json")
