"""Settings of the edit search (``r1probe edit-search``): sizes, budget, constraints and search space.

One pydantic model: the CLI flags are generated from its fields (default and help text included),
and a wrong value is rejected with one line naming the field (:func:`search_settings`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from r1probe.settings import Settings, SettingsError, split_list, validate

#: kinds of the direction ``r̂`` to amplify (see :mod:`r1probe.tuning.directions`)
DIR_KINDS = ("harm", "hb", "orth", "probe")


class EditSearchSettings(Settings):
    """Sizes, budget and search space of the edit search (every field is a CLI flag of ``edit-search``)."""

    n_harmful: int = Field(24, ge=1, description="Harmful search prompts (PolyRefuse-zh val; CHiSafetyBench is "
                                                  "report-only).")
    n_borderline: int = Field(24, ge=1, description="CValues search prompts.")
    n_nll: int = Field(16, ge=1, description="GSM8K train gold solutions (NLL objective).")
    max_new_tokens: int = Field(32, ge=1, description="Reply length judged in the search.")
    batch_size: int = Field(48, ge=1, description="Generation batch size (directions use at most 16).")
    trials: int = Field(40, ge=1, description="Total trials in the study (a rerun continues up to this number).")
    budget_min: float = Field(40.0, gt=0, description="Wall-clock budget of this run's search (minutes).")
    seed: int = Field(0, description="Seed of the Optuna sampler.")
    sampler: Literal["tpe", "nsga2"] = Field("tpe", description="Optuna sampler: constrained TPE or NSGA-II.")
    border_margin: float = Field(0.10, description="Allowed rise of CValues (borderline) refusal over the "
                                                   "unedited model.")
    nll_tol: float = Field(0.02, description="Allowed relative rise of the gold-solution NLL.")
    harm_target: float = Field(0.85, description="Refusal on harmful prompts the chosen edit should reach.")
    dir_layers: list[int] = Field([8, 10, 12, 14, 16], min_length=1,
                                        description="Layers where directions are read (comma list; "
                                                    "difference-in-means at the last post-instruction token).")
    n_direction: int = Field(260, ge=1, description="Prompts per class for the directions.")
    max_beta: float = Field(4.0, gt=0, description="Largest peak amplification β searched.")
    dir_kinds: list[Literal["harm", "hb", "orth", "probe"]] = Field(
        ["harm", "hb", "orth"], min_length=1, description="Direction kinds searched over (comma list of "
                                                          "harm, hb, orth, probe).")
    report_borderline: int = Field(100, ge=0, description="CValues report prompts.")
    report_harmful: int = Field(100, ge=0, description="CHiSafetyBench report prompts (a prefix of the fixed "
                                                       "report part of 100).")
    report_nll: int = Field(60, ge=0, description="GSM8K test solutions for the report NLL.")
    report_max_new_tokens: int = Field(40, ge=1, description="Reply length judged on the report splits.")
    plans: bool = Field(True, description="Also measure the run-time plans (additive, CAST-conditional).")
    plan_strengths: list[float] = Field([1.0, 2.0], description="Run-time plan strengths k "
                                                                      "(α = k · diff-in-means gap; comma list).")

    @field_validator("dir_layers", "dir_kinds", "plan_strengths", mode="before")
    @classmethod
    def _comma_lists(cls, v):
        return split_list(v)

    @property
    def budget_s(self) -> float:
        """The search budget in seconds."""
        return self.budget_min * 60.0


def search_settings(**values) -> EditSearchSettings:
    """``EditSearchSettings(**values)``; a wrong or unknown value is one :class:`SettingsError` line."""
    return validate(EditSearchSettings, values)


__all__ = ["DIR_KINDS", "EditSearchSettings", "SettingsError", "search_settings"]
