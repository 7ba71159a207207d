"""The contract every stage of a [`TaskExpert`][flowvla.envs.experts.planner.TaskExpert] is run through."""

from __future__ import annotations

from typing import Any

import numpy as np

from flowvla.envs.experts.scene import Scene

__all__ = ["Skill"]


class Skill:
    """One stage of an expert: ``act() -> [7]`` once per step until ``done`` (the stage's predicate holds
    and the hand is clear) or ``failed``. Subclasses set ``phase`` and call ``_start``."""

    timeout = 160

    def __init__(self, env: Any, scene: Scene) -> None:
        self.env, self.scene = env, scene
        self.raw = scene.raw
        self.done = False
        self.failed = False
        self.steps = 0
        self.phase = ""
        self.phase_steps = 0
        self.history: list[str] = []

    def _start(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0
        self.history.append(phase)

    def act(self) -> np.ndarray:
        """The next ``[7]`` action; marks the skill ``failed`` once it has run ``timeout`` steps."""
        self.steps += 1
        self.phase_steps += 1
        if self.steps > self.timeout and not self.done:
            self.failed = True
        return np.clip(self._act(), -1.0, 1.0)

    def _act(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def holds(self) -> bool:  # pragma: no cover - abstract
        """Whether the stage's predicate holds now (LIBERO's own check)."""
        raise NotImplementedError
