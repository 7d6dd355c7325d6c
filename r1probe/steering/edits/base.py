"""What every weight edit shares: the settings base, the fitted result, layer specs and settings errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from r1probe.errors import R1ProbeError


class EditSettings(BaseModel):
    """Settings every edit has: which direction of the probe folder it writes."""

    model_config = ConfigDict(extra="forbid")

    direction_key: str = Field("chosen", description="Direction of the probe folder to use: 'chosen' (the "
                                                     "selected one) or a key such as layer12_pos-1.")


@dataclass
class Fitted:
    """What ``WeightEdit.fit`` hands to ``apply``: the settings, the direction and what was fitted."""

    settings: Any
    direction: torch.Tensor
    data: dict = field(default_factory=dict)


def settings_error(e: ValidationError, edit: str) -> R1ProbeError:
    """One line naming each bad setting of ``edit`` and why."""
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return R1ProbeError(f"{edit} settings: {'; '.join(parts)}")
