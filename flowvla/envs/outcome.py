"""How an episode ended, for pick-and-place tasks: a failure named by what the arm did.

A success rate says how often a policy fails, not how. For a task whose goal is one object in or on a
target (every libero_object task, most of libero_spatial and libero_goal), the tracker follows the
target object and the gripper command through the episode and names a failure:

| outcome | what happened |
|---|---|
| ``success`` | the goal holds |
| ``never_reached`` | the gripper never came within ``near`` of the object |
| ``hover`` | it came within ``near`` but never commanded a close there |
| ``missed_grasp`` | it closed near the object, but the object never rose by ``lift`` |
| ``lifted_not_placed`` | the object was lifted (at least ``lift``) but did not end at the goal |
| ``unknown`` | the task's goal is not a single place goal |

``hover`` is the classic failure of a regression policy that averages "approach further" with
"close now" near the object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["OUTCOMES", "OutcomeTracker"]

OUTCOMES = ("success", "never_reached", "hover", "missed_grasp", "lifted_not_placed", "unknown")


class OutcomeTracker:
    """Follows one episode's target object and gripper; build it after the reset.

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv], already reset to the episode's start.
        near: gripper-to-object distance (m, grip site to the object's body origin) that counts as
            reaching it.
        lift: rise of the object (m) that counts as lifting it.
    """

    def __init__(self, env: Any, near: float = 0.10, lift: float = 0.03) -> None:
        from flowvla.envs.experts.predicates import UnsupportedGoalError, place_goal
        from flowvla.envs.experts.scene import Scene

        self.near, self.lift = near, lift
        self.min_distance = float("inf")
        self.max_lift = 0.0
        self.closed_near = False
        # Gripper minus object (m, world frame) when the gripper first closed near the object: says
        # whether a missed grasp was off sideways (x, y: where the object is) or in height (z).
        self.close_offset: list[float] | None = None
        try:
            self.object: str | None = place_goal(env).obj
        except UnsupportedGoalError:
            self.object = None
            return
        self.scene = Scene(env)
        self.start = self.scene.body_pos(self.object)

    def update(self, action: np.ndarray) -> None:
        """Call after each ``env.step(action)`` with the ``[7]`` action executed (gripper last, ``+1``
        closes)."""
        if self.object is None:
            return
        p = self.scene.body_pos(self.object)
        d = float(np.linalg.norm(self.scene.eef_pos() - p))
        self.min_distance = min(self.min_distance, d)
        self.max_lift = max(self.max_lift, float(p[2] - self.start[2]))
        if float(action[-1]) > 0 and d < self.near:
            if not self.closed_near:
                self.close_offset = [round(float(v), 4) for v in self.scene.eef_pos() - p]
            self.closed_near = True

    def outcome(self, success: bool) -> str:
        """One of [`OUTCOMES`][flowvla.envs.outcome.OUTCOMES]."""
        if success:
            return "success"
        if self.object is None:
            return "unknown"
        if self.max_lift >= self.lift:
            return "lifted_not_placed"
        if self.closed_near:
            return "missed_grasp"
        return "hover" if self.min_distance < self.near else "never_reached"

    def summary(self, success: bool) -> dict[str, Any]:
        """The outcome with the readings behind it (JSON-ready)."""
        return {
            "outcome": self.outcome(success),
            "object": self.object,
            "min_gripper_object_m": None if self.object is None else round(self.min_distance, 4),
            "max_object_lift_m": None if self.object is None else round(self.max_lift, 4),
            "closed_near_object": self.closed_near,
            "close_offset_m": self.close_offset,
        }
