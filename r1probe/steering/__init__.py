"""Steering at run time (transforms, plans, one hook runtime) and weight edits with export."""

from r1probe.models.engine import register_plan_context as _register_plan_context
from r1probe.steering.directions import DirectionSet, load_direction, load_directions, save_directions
from r1probe.steering.plan import Condition, SteeringPlan, SteeringStep
from r1probe.steering.runtime import SteeringHandle, steering
from r1probe.steering.transforms import (TRANSFORMS, Transform, ablate, add, clamp, gate, gate_scores, get_transform,
                                         projection, register_transform)


def _plan_context(lm, plan):
    """The generation engine's way to apply a plan (a ``SteeringPlan`` or its path; a list of them for
    per-row plans): ``steering``."""
    if isinstance(plan, (list, tuple)):
        return steering(lm, [p if isinstance(p, SteeringPlan) else SteeringPlan.load(p) for p in plan])
    if not isinstance(plan, SteeringPlan):
        plan = SteeringPlan.load(plan)
    return steering(lm, plan)


_register_plan_context(_plan_context)

__all__ = ["DirectionSet", "TRANSFORMS", "Transform", "get_transform", "register_transform", "load_direction",
           "load_directions", "save_directions", "Condition", "SteeringPlan", "SteeringStep", "SteeringHandle", "steering", "ablate", "add", "clamp", "gate", "gate_scores", "projection"]
