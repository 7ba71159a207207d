"""The reference VLA policy: config, batch checks, assembly, training losses, ``predict_action``, saving."""

from flowvla.policy.build import (
    BACKBONES,
    build_geometry_branch,
    build_router,
    build_time_sampler,
    create_backbone,
    create_geometry_branch,
    get_backbone_class,
    register_backbone,
)
from flowvla.policy.checks import BatchError, check_batch
from flowvla.policy.config import FusionConfig, HeadConfig, LossConfig, PolicyConfig, RouterConfig
from flowvla.policy.debug import layer_rms, record_block_stats, token_signatures
from flowvla.policy.identity import checkpoint_step, policy_identity, weights_digest
from flowvla.policy.policy import PolicyLosses, VLAPolicy, chunk_differences_penalty
from flowvla.policy.shortcut_distill import distill_policy_shortcut
from flowvla.policy.solver_fit import fit_policy_grid, fit_policy_solver

__all__ = [
    "BACKBONES",
    "BatchError",
    "FusionConfig",
    "HeadConfig",
    "LossConfig",
    "PolicyConfig",
    "PolicyLosses",
    "RouterConfig",
    "VLAPolicy",
    "build_geometry_branch",
    "build_router",
    "build_time_sampler",
    "check_batch",
    "checkpoint_step",
    "chunk_differences_penalty",
    "create_backbone",
    "create_geometry_branch",
    "distill_policy_shortcut",
    "fit_policy_grid",
    "fit_policy_solver",
    "get_backbone_class",
    "layer_rms",
    "policy_identity",
    "record_block_stats",
    "register_backbone",
    "token_signatures",
    "weights_digest",
]
