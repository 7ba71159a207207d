"""Probability paths, time samplers and the flow-matching objective (``t = 0`` noise, ``t = 1`` data)."""

from flowvla.flow.analytic import GaussianMixtureFlow
from flowvla.flow.objective import FlowMatchingLoss, FlowMatchingObjective, masked_mse
from flowvla.flow.paths import (
    LinearPath,
    PathSample,
    VelocityFn,
    from_reverse_time_field,
    to_reverse_time_field,
)
from flowvla.flow.shortcut import (
    ShortcutDraw,
    ShortcutMLP,
    distill_shortcut,
    shortcut_loss,
    shortcut_sample,
    shortcut_targets,
)
from flowvla.flow.time_samplers import (
    TIME_SAMPLERS,
    BetaTimeSampler,
    LogitNormalTimeSampler,
    TimeSampler,
    UniformTimeSampler,
    create_time_sampler,
    get_time_sampler_class,
    sample_beta,
    sample_gamma,
)

__all__ = [
    "TIME_SAMPLERS",
    "BetaTimeSampler",
    "FlowMatchingLoss",
    "FlowMatchingObjective",
    "GaussianMixtureFlow",
    "LinearPath",
    "LogitNormalTimeSampler",
    "PathSample",
    "ShortcutDraw",
    "ShortcutMLP",
    "TimeSampler",
    "UniformTimeSampler",
    "VelocityFn",
    "create_time_sampler",
    "distill_shortcut",
    "from_reverse_time_field",
    "get_time_sampler_class",
    "masked_mse",
    "sample_beta",
    "sample_gamma",
    "shortcut_loss",
    "shortcut_sample",
    "shortcut_targets",
    "to_reverse_time_field",
]
