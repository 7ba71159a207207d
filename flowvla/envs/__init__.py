"""Simulator environments: LIBERO tasks with on-demand rendering, and a rollout runner.

Nothing here imports LIBERO until an environment is built, so ``import flowvla.envs`` works without it.
Modules: [`libero_setup`][flowvla.envs.libero_setup] (offline install),
[`libero_check`][flowvla.envs.libero_check] (its command-line check), [`libero`][flowvla.envs.libero] (the
environment), [`rollout`][flowvla.envs.rollout]
(evaluation: [`rollout_config`][flowvla.envs.rollout_config], [`closed_loop`][flowvla.envs.closed_loop],
[`metrics`][flowvla.envs.metrics], [`baselines`][flowvla.envs.baselines]), the machinery simulator jobs share
([`pool`][flowvla.envs.pool], [`ledger`][flowvla.envs.ledger], [`progress`][flowvla.envs.progress]),
[`perturb`][flowvla.envs.perturb]
(robustness perturbations for evaluation), ``experts`` (scripted experts for every standard
LIBERO task, reading the simulator's state), [`cameras`][flowvla.envs.cameras] (geometry),
[`video`][flowvla.envs.video].
"""

from __future__ import annotations

from flowvla._lazy import lazy_exports

__all__ = [
    "LiberoEnv",
    "LiberoSetupError",
    "Perturbation",
    "PickPlaceExpert",
    "RolloutConfig",
    "TaskExpert",
    "evaluate",
    "make_expert",
    "prepare_libero",
    "run_expert_episode",
]

_LAZY = {
    "LiberoEnv": "flowvla.envs.libero",
    "LiberoSetupError": "flowvla.envs.libero_setup",
    "prepare_libero": "flowvla.envs.libero_setup",
    "Perturbation": "flowvla.envs.perturb",
    "RolloutConfig": "flowvla.envs.rollout_config",
    "evaluate": "flowvla.envs.rollout",
    "PickPlaceExpert": "flowvla.envs.experts",
    "TaskExpert": "flowvla.envs.experts",
    "make_expert": "flowvla.envs.experts",
    "run_expert_episode": "flowvla.envs.experts",
}


__getattr__ = lazy_exports(__name__, _LAZY)
