"""Steering plans: which transform applies at which layers, sites and tokens; saved as JSON.

A plan is a list of ``SteeringStep``s. Each step names an op (a registered transform,
``transforms.TRANSFORMS``: ``add`` / ``ablate`` / ``clamp`` / ``amplify`` built in),
the layers, a direction (a tensor, or a name such as ``"chosen"`` or ``"layer12_pos-1"``
resolved from the plan's ``directions`` file), its strength (``alpha`` for add, ``value`` for
clamp), the tokens it touches (``prompt`` / ``generated`` / ``both``), the site, and an optional
``Condition`` (CAST-style gate computed per row from the prompt).

Sites, for decoder block ``i`` (``x_i`` is the residual stream before block ``i``,
``x_{i+1} = x_i + attn_i(x_i) + mlp_i(x_i + attn_i(x_i))``):

- ``resid_pre``: ``x_i``, the block input (HF ``output_hidden_states[i]``);
- ``resid_post``: ``x_{i+1}``, the block output;
- ``attn_out`` / ``mlp_out``: what the attention / MLP output projection writes to the stream.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.steering.transforms import PARAMS, TRANSFORMS, get_transform

TOKENS = ("prompt", "generated", "both")
SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
METRICS = ("projection", "cosine", "dot")

Direction = "torch.Tensor | str"


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``"12"``, ``"8,10,12"``, ``"8-15"``, ``"all"`` or negative offsets -> layer indices (order kept)."""
    if spec.strip() == "all":
        return list(range(n_layers))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError as e:
            raise R1ProbeError(f"--layer {spec!r}: use e.g. 12, 8,10,12, 8-15 or all") from e
    if not out:
        raise R1ProbeError(f"--layer {spec!r}: no layers")
    return out


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _names(names: list[str]) -> str:
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def _direction_ok(d, what: str):
    if isinstance(d, str):
        if not d:
            raise R1ProbeError(f"{what}: empty direction name")
        return d
    if isinstance(d, torch.Tensor):
        if d.dim() != 1 and not (d.dim() == 2 and 1 in d.shape):
            raise R1ProbeError(f"{what}: a direction must be one vector [d], got shape {tuple(d.shape)}")
        d = d.detach().reshape(-1).float().cpu()
        if not torch.isfinite(d).all() or float(d.norm()) == 0.0:
            raise R1ProbeError(f"{what}: the direction is zero or not finite")
        return d
    if isinstance(d, (list, tuple)):
        return _direction_ok(torch.tensor(d, dtype=torch.float32), what)
    raise R1ProbeError(f"{what}: direction must be a tensor, a list of floats or a name, not {type(d).__name__}")


def _dir_json(d):
    return d if isinstance(d, str) else [float(x) for x in d.tolist()]


@dataclass
class Condition:
    """A per-row gate (CAST): steer a row only when its prompt scores past ``threshold``.

    The score is ``metric(pool(x_layer, position), direction)`` on the prompt's residual stream
    at the input of block ``layer`` (see ``transforms.gate_scores``), computed once per
    generation during the prompt's forward pass; rows with ``score > threshold`` (or ``<``
    when ``above`` is False) are steered, the others are left untouched.

    ``scale=True`` makes the gate graded: a steered row's change is multiplied by its score,
    ``x' = x + s (T(x) − x)`` (for ``add``: ``x + s α d̂``), so the step writes in proportion to how
    strongly the prompt reads along ``direction`` (AlphaSteer's ``x + λ (a·x_last) r``, with ``metric="dot"``
    and the read vector ``a`` as direction). ``threshold`` is then optional (None: every row, weight ``s``).
    """
    layer: int
    direction: object
    threshold: float | None
    position: int | str = -1
    metric: str = "projection"
    above: bool = True
    scale: bool = False

    def __post_init__(self):
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise R1ProbeError(f"condition layer must be an int, got {self.layer!r}")
        self.direction = _direction_ok(self.direction, "condition")
        if self.threshold is None:
            if not self.scale:
                raise R1ProbeError("a condition needs a threshold (only a graded condition, scale=True, may omit it)")
        else:
            self.threshold = float(self.threshold)
        self.scale = bool(self.scale)
        if self.metric not in METRICS:
            raise R1ProbeError(f"condition metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        if not (isinstance(self.position, int) or self.position == "mean"):
            raise R1ProbeError(f"condition position {self.position!r}: an int offset (e.g. -1) or 'mean'")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "direction": _dir_json(self.direction), "threshold": self.threshold,
                "position": self.position, "metric": self.metric, "above": self.above,
                **({"scale": True} if self.scale else {})}


@dataclass
class SteeringStep:
    """One transform at some layers. ``alpha`` is the strength of ``add`` (``x + α d̂``) and of
    ``amplify`` (``x + α (x·d̂) d̂``); ``value`` the target projection of ``clamp``."""

    op: str
    layers: Sequence[int]
    direction: object = "chosen"
    alpha: float | None = None
    value: float | None = None
    tokens: str = "both"
    site: str = "resid_pre"
    condition: Condition | None = None

    def __post_init__(self):
        transform = get_transform(self.op)
        if isinstance(self.layers, int):
            self.layers = (self.layers,)
        try:
            self.layers = tuple(int(x) for x in self.layers)
        except (TypeError, ValueError) as e:
            raise R1ProbeError(f"steering layers must be integers, got {self.layers!r}") from e
        if not self.layers:
            raise R1ProbeError(f"steering step {self.op!r} has no layers")
        if self.tokens not in TOKENS:
            raise R1ProbeError(f"steering tokens {self.tokens!r}: choose one of {', '.join(TOKENS)}")
        if self.site not in SITES:
            raise R1ProbeError(f"steering site {self.site!r}: choose one of {', '.join(SITES)}")
        self.direction = _direction_ok(self.direction, f"{self.op} step")
        for p, what in PARAMS.items():
            users = [t.name for t in TRANSFORMS.values() if p in t.params]
            if p in transform.params:
                if getattr(self, p) is None:
                    raise R1ProbeError(f"{_a(self.op)} {self.op} step needs {p} ({what})")
                setattr(self, p, float(getattr(self, p)))
            elif getattr(self, p) is not None:
                raise R1ProbeError(f"{p} is only for {_names(users)} steps (got {p} with {self.op})")
        if isinstance(self.condition, dict):
            self.condition = Condition(**self.condition)
        if self.condition is not None and self.tokens != "generated":
            early = [lay for lay in self.layers if 0 <= lay < self.condition.layer]
            if early:
                raise R1ProbeError(
                    f"a conditional step that steers prompt tokens must act at or after the condition layer "
                    f"{self.condition.layer} (got layers {early}): the gate is not known earlier in the "
                    "prompt's pass; use tokens='generated' to steer earlier layers")

    def to_dict(self) -> dict:
        d = {"op": self.op, "layers": list(self.layers), "direction": _dir_json(self.direction),
             "tokens": self.tokens, "site": self.site}
        if self.alpha is not None:
            d["alpha"] = self.alpha
        if self.value is not None:
            d["value"] = self.value
        if self.condition is not None:
            d["condition"] = self.condition.to_dict()
        return d


@dataclass
class SteeringPlan:
    """An ordered list of steps; ``directions`` names the file that resolves named directions.

    Build one with the constructors (``add_at``, ``ablate_everywhere``, ``clamp_at``,
    ``conditional_add``), or load one saved as JSON (``SteeringPlan.load``).
    """

    steps: list[SteeringStep] = field(default_factory=list)
    directions: str | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.steps = [s if isinstance(s, SteeringStep) else SteeringStep(**s) for s in self.steps]
        if self.directions is not None:
            self.directions = str(self.directions)

    # ---- constructors ----
    @classmethod
    def add_at(cls, layer: int | Sequence[int], direction, alpha: float, *, tokens: str = "both",
               site: str = "resid_pre", **kw) -> "SteeringPlan":
        """``x_L ← x_L + α d̂`` at the input of block(s) ``layer`` (the induce intervention)."""
        return cls([SteeringStep("add", layer, direction, alpha=alpha, tokens=tokens, site=site)], **kw)

    @classmethod
    def clamp_at(cls, layer: int | Sequence[int], direction, value: float, *, tokens: str = "both",
                 site: str = "resid_pre", **kw) -> "SteeringPlan":
        """``x_L ← x_L + (v − x_L·d̂) d̂`` at the input of block(s) ``layer``."""
        return cls([SteeringStep("clamp", layer, direction, value=value, tokens=tokens, site=site)], **kw)

    @classmethod
    def ablate_everywhere(cls, direction, n_layers: int, *, tokens: str = "both", **kw) -> "SteeringPlan":
        """Directional ablation on every write to the residual stream (the bypass intervention).

        Ablates the embedding output (input of block 0) and the attention and MLP outputs of every
        block, so the residual stream has no component along ``d̂`` anywhere; equal to
        orthogonalising the weights (``r1probe.steering.edit.orthogonalize``). The same as
        refusal_direction's hooks (block inputs + attention/MLP outputs), minus the inputs of
        blocks 1.. which are already clean.
        """
        layers = tuple(range(n_layers))
        return cls([SteeringStep("ablate", (0,), direction, tokens=tokens, site="resid_pre"),
                    SteeringStep("ablate", layers, direction, tokens=tokens, site="attn_out"),
                    SteeringStep("ablate", layers, direction, tokens=tokens, site="mlp_out")], **kw)

    @classmethod
    def affine_ablate(cls, direction, refs: Sequence[float], *, tokens: str = "both", **kw) -> "SteeringPlan":
        """Affine concept editing (ACE, Marshall et al. 2024): at the input of every block ``i``
        set the projection on ``d̂`` to a reference, ``x ← x − (x·d̂ − c_i) d̂``.

        ``c_i = μ_i·d̂`` is the mean projection of *harmless* prompts at block ``i``'s input
        (``refs[i]``), so harmful rows are moved to where harmless rows already sit instead of to
        the origin: the refusal is removed with less collateral change than directional ablation
        (``c_i = 0``). Run-time only: an exported weight edit cannot store the offset in Qwen2/Llama
        (no bias on o_proj/down_proj).
        """
        return cls([SteeringStep("clamp", (i,), direction, value=float(v), tokens=tokens, site="resid_pre")
                    for i, v in enumerate(refs)], **kw)

    @classmethod
    def amplify_at(cls, layers: int | Sequence[int], direction, beta: float, *,
                   sites: Sequence[str] = ("attn_out", "mlp_out"), tokens: str = "both", **kw) -> "SteeringPlan":
        """``y ← y + β (y·d̂) d̂`` on what the blocks write; equals ``edit.amplify`` on the same layers."""
        return cls([SteeringStep("amplify", layers, direction, alpha=beta, tokens=tokens, site=s) for s in sites], **kw)

    @classmethod
    def conditional_add(cls, layers: int | Sequence[int], direction, alpha: float, *, condition: Condition,
                        tokens: str = "both", site: str = "resid_pre", **kw) -> "SteeringPlan":
        """CAST: ``x_L ← x_L + α d̂`` only on rows whose prompt passes ``condition``."""
        return cls([SteeringStep("add", layers, direction, alpha=alpha, tokens=tokens, site=site,
                                 condition=condition)], **kw)

    def with_directions(self, path: str | os.PathLike | None) -> "SteeringPlan":
        return replace(self, directions=None if path is None else str(path))

    def __add__(self, other: "SteeringPlan") -> "SteeringPlan":
        if self.directions and other.directions and self.directions != other.directions:
            raise R1ProbeError("cannot combine plans that resolve names from different directions files")
        return SteeringPlan(self.steps + other.steps, self.directions or other.directions,
                            self.name or other.name, {**other.meta, **self.meta})

    # ---- resolution ----
    def names(self) -> set[str]:
        out = set()
        for s in self.steps:
            if isinstance(s.direction, str):
                out.add(s.direction)
            if s.condition is not None and isinstance(s.condition.direction, str):
                out.add(s.condition.direction)
        return out

    def resolve(self, d_model: int | None = None, directions: str | os.PathLike | None = None) -> "SteeringPlan":
        """A copy with every named direction replaced by its tensor (and every size checked)."""
        from r1probe.steering.directions import check_size, load_direction

        src = directions or self.directions
        names = self.names()
        if names and src is None:
            raise R1ProbeError(f"the plan names directions ({', '.join(sorted(names))}) but no directions "
                               "file is given (--directions DIR)")
        table = {n: load_direction(src, n, d_model) for n in names}

        def get(d, what):
            if isinstance(d, str):
                return table[d]
            check_size(d, d_model, what)
            return d

        steps = []
        for i, s in enumerate(self.steps):
            cond = s.condition
            if cond is not None:
                cond = replace(cond, direction=get(cond.direction, f"step {i} condition direction"))
            steps.append(replace(s, direction=get(s.direction, f"step {i} direction"), condition=cond))
        return replace(self, steps=steps)

    # ---- JSON ----
    def to_dict(self) -> dict:
        return {"format": "r1probe.steering_plan/1", "name": self.name, "directions": self.directions,
                "steps": [s.to_dict() for s in self.steps], "meta": self.meta}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "SteeringPlan":
        if not isinstance(d, dict) or not isinstance(d.get("steps"), list):
            raise R1ProbeError("a steering plan is a JSON object with a 'steps' list")
        try:
            steps = [SteeringStep(**s) for s in d["steps"]]
        except TypeError as e:
            raise R1ProbeError(f"bad steering step ({e})") from e
        return cls(steps, d.get("directions"), d.get("name", ""), d.get("meta", {}))

    @classmethod
    def from_json(cls, text: str) -> "SteeringPlan":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise R1ProbeError(f"steering plan is not valid JSON ({e})") from e

    def save(self, path: str | os.PathLike) -> None:
        from r1probe.provenance import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SteeringPlan":
        p = Path(path)
        if not p.exists():
            raise R1ProbeError(f"steering plan not found: {p}")
        plan = cls.from_json(p.read_text("utf-8"))
        # a relative directions path is relative to the plan file
        if plan.directions and not os.path.isabs(plan.directions) and not os.path.exists(plan.directions):
            cand = p.parent / plan.directions
            if cand.exists():
                plan.directions = str(cand)
        return plan
