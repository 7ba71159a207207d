"""Simulator environments: LIBERO tasks with on-demand rendering, and a rollout runner.

Nothing here imports LIBERO until an environment is built, so ``import flowvla.envs`` works without it.
"""

from flowvla.envs.libero_setup import LiberoSetupError, prepare_libero

__all__ = ["LiberoSetupError", "prepare_libero"]
