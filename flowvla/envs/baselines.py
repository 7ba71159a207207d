"""Baseline policies for smoke tests, timing and floors: a constant action and uniform random ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flowvla.envs.libero import ACTION_DIM

__all__ = ["ConstantPolicy", "RandomPolicy"]


class ConstantPolicy:
    """Baseline that always predicts the same action (default: stay still, gripper open).

    ``predict_action`` returns a ``[B, horizon, 7]`` float32 array; for smoke tests and timing.
    """

    def __init__(self, horizon: int = 8, action: Sequence[float] | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.action = np.asarray(action if action is not None else [0.0] * 6 + [-1.0], dtype=np.float32)
        if self.action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} entries, got shape {self.action.shape}")

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        b = len(batch["instruction"])
        return np.broadcast_to(self.action, (b, self.horizon, ACTION_DIM)).copy(), {"policy": "constant"}


class RandomPolicy:
    """Baseline with uniform random actions in ``[-scale, scale]`` (gripper in ``{-1, 1}``), seeded."""

    def __init__(self, horizon: int = 8, scale: float = 0.5, seed: int = 0) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.scale = horizon, scale
        self.rng = np.random.default_rng(seed)

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        b = len(batch["instruction"])
        a = self.rng.uniform(-self.scale, self.scale, size=(b, self.horizon, ACTION_DIM)).astype(np.float32)
        a[..., -1] = np.sign(a[..., -1]) + (a[..., -1] == 0)
        return a, {"policy": "random"}
