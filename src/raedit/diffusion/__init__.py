"""Stage-2 diffusion: flow matching with the dimension-dependent shift, samplers and guidance."""

from raedit.diffusion.flow import (
    SHIFT_BASE_DIM,
    TimeDistribution,
    flow_matching_loss,
    interpolate,
    shift_alpha,
    shift_time,
    velocity_target,
)
from raedit.diffusion.guidance import auto_guidance, classifier_free_guidance, conditional, guided_velocity
from raedit.diffusion.samplers import SAMPLERS, VelocityFn, sample, time_grid

__all__ = [
    "SAMPLERS",
    "SHIFT_BASE_DIM",
    "TimeDistribution",
    "VelocityFn",
    "auto_guidance",
    "classifier_free_guidance",
    "conditional",
    "flow_matching_loss",
    "guided_velocity",
    "interpolate",
    "sample",
    "shift_alpha",
    "shift_time",
    "time_grid",
    "velocity_target",
]
