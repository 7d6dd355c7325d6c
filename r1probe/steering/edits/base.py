"""What every weight edit shares: the settings base, the fitted result and settings errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from r1probe.settings import Settings, SettingsError, one_line, split_list


class EditSettings(Settings):
    """Settings every edit has: which direction of the probe folder it writes."""

    direction_key: str = Field("chosen", description="Direction of the probe folder to use: 'chosen' (the "
                                                     "selected one) or a key such as layer12_pos-1.")


class ReadFitSettings(EditSettings):
    """Settings of an edit that fits a read vector on harmful vs benign text: its fit data
    (``r1probe.steering.fit_data``: built-in splits by default, or prompt files) and the fit's regularisation."""

    harmful: str | None = Field(None, description="Harmful prompt file to fit the read vector on "
                                                  "(JSON/JSONL/CSV; default: the built-in fit data).")
    benign: Annotated[list[str], BeforeValidator(split_list)] = Field(
        [], description="Benign prompt files (with answer/std_answer fields when present) whose tokens the edit "
                        "must leave alone.")
    benign_limit: int = Field(150, ge=1, description="Use the first N prompts of each benign file.")
    harmful_set: str = Field("builtin:zh-harmful", description="Built-in fit data: the harmful prompt set "
                                                               "(its train split).")
    harmless_set: str = Field("builtin:zh-harmless", description="Built-in fit data: the harmless prompt set "
                                                                 "(its train split).")
    data_root: str | None = Field(None, description="Shared data folder for the built-in GSM8K benign texts "
                                                    "(default $R1PROBE_DATA or ../shared/data).")
    seed: int = Field(0, description="Seed of the built-in prompt sets' train split.")
    borderline: int = Field(0, ge=0, description="Built-in fit data: also keep the edit silent on the first N "
                                                 "CValues borderline contrast prompts.")
    extra_benign: Annotated[list[str], BeforeValidator(split_list)] = Field(
        [], description="Built-in fit data: benches whose whole dev part also joins the benign side (or-bench, "
                        "xstest-safe: prompts that look harmful and are not).")
    null_energy: float = Field(0.99, gt=0, le=1, description="Benign energy kept out of the read vector.")
    ridge: float = Field(1e-2, ge=0, description="Ridge of the read-vector fit, relative to the harmful "
                                                 "rows' mean squared norm.")

    @model_validator(mode="after")
    def _fit_files(self):
        if bool(self.harmful) != bool(self.benign):
            raise ValueError("give both --harmful FILE and --benign FILE, or neither (built-in fit data)")
        for flag, given in (("--borderline", self.borderline), ("--extra-benign", self.extra_benign)):
            if self.harmful and given:
                raise ValueError(f"{flag} applies to the default fit data; add such prompts to a --benign file "
                                 "instead")
        from r1probe.steering.fit_data import EXTRA_BENIGN

        bad = [b for b in self.extra_benign if b not in EXTRA_BENIGN]
        if bad:
            raise ValueError(f"extra_benign {bad[0]!r}: choose from {', '.join(EXTRA_BENIGN)} (their dev parts)")
        return self

    def fit_data(self, lm, **default_kw):
        """The texts the read vector is fitted on: the prompt files when given, else the built-in fit data
        (``default_kw``: more arguments of :func:`r1probe.steering.fit_data.default_fit_data`)."""
        from r1probe.steering.fit_data import default_fit_data, file_fit_data

        if self.harmful:
            return file_fit_data(lm, self.harmful, self.benign, self.benign_limit)
        return default_fit_data(lm, harmful=self.harmful_set, harmless=self.harmless_set, data_root=self.data_root,
                                seed=self.seed, borderline=self.borderline, extra_benign=self.extra_benign,
                                **default_kw)


@dataclass
class Fitted:
    """What ``WeightEdit.fit`` hands to ``apply``: the settings, the direction and what was fitted."""

    settings: Any
    direction: torch.Tensor
    data: dict = field(default_factory=dict)


def settings_error(e: ValidationError, edit: str) -> SettingsError:
    """One line naming the bad setting of ``edit`` and why (``r1probe.settings.one_line``)."""
    return SettingsError(f"{edit}: {one_line(e)}")
