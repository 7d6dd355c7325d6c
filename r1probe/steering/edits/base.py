"""What every weight edit shares: the settings base, the fitted result and settings errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field, ValidationError

from r1probe.settings import Settings, SettingsError, one_line


class EditSettings(Settings):
    """Settings every edit has: which direction of the probe folder it writes."""

    direction_key: str = Field("chosen", description="Direction of the probe folder to use: 'chosen' (the "
                                                     "selected one) or a key such as layer12_pos-1.")


@dataclass
class Fitted:
    """What ``WeightEdit.fit`` hands to ``apply``: the settings, the direction and what was fitted."""

    settings: Any
    direction: torch.Tensor
    data: dict = field(default_factory=dict)


def settings_error(e: ValidationError, edit: str) -> SettingsError:
    """One line naming the bad setting of ``edit`` and why (``r1probe.settings.one_line``)."""
    return SettingsError(f"{edit}: {one_line(e)}")
