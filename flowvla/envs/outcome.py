"""How an episode ended: a failure named by what the arm did, for any goal of the standard suites.

A success rate says how often a policy fails, not how. The tracker reads the task's BDDL goal, plans
its stages as the scripted expert does ([`plan_stages`][flowvla.envs.experts.planner.plan_stages]:
knobs first, then opening, placements in the file's order, closing last), and follows every stage
through the episode: when its predicate first held, whether it holds at the end, and what moved
towards it. The outcome is read off the first stage of the plan that does not hold at the end:

| outcome | what happened |
|---|---|
| ``success`` | the goal holds |
| ``never_reached`` | placement: the gripper never came within ``near`` of the object |
| ``hover`` | placement: it came within ``near`` but never commanded a close there |
| ``missed_grasp`` | placement: it closed near the object, but the object never rose by ``lift`` |
| ``lifted_not_placed`` | placement: the object was lifted (at least ``lift``) but did not end at the goal |
| ``not_opened`` | a drawer or door the goal opens (or a placement goes into) is not open |
| ``not_closed`` | a drawer or door the goal closes is not closed |
| ``knob_not_turned`` | a stove knob the goal turns on (or off) is not turned |
| ``next_stage_never_started`` | an earlier stage was done and the next was never started (see below) |
| ``unknown`` | the goal could not be read, or every stage holds and the task still failed |

A stage was never started when its object was never reached, or its joint never moved ``started`` of
the way to its target ("stage 2 never started" on two-stage tasks; a later stage on longer plans).
A placement's readings (reach, close, lift) and an articulation's progress count from the step at
which every earlier stage had held: on "put both the soup and the sauce in the basket" a hand that
brushed the sauce while carrying the soup has not started the sauce's stage. ``hover`` is the classic
failure of a regression policy that averages "approach further" with "close now" near the object.

[`classify_outcome`][flowvla.envs.outcome.classify_outcome] is the pure rule over
[`StageTrace`][flowvla.envs.outcome.StageTrace] records;
[`OutcomeTracker`][flowvla.envs.outcome.OutcomeTracker] fills them from the simulator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["OUTCOMES", "OutcomeTracker", "StageTrace", "classify_outcome"]

OUTCOMES = (
    "success",
    "never_reached",
    "hover",
    "missed_grasp",
    "lifted_not_placed",
    "not_opened",
    "not_closed",
    "knob_not_turned",
    "next_stage_never_started",
    "unknown",
)
"""Every outcome an episode record can hold, successes first (see the module's table)."""

StageKind = Literal["place", "open", "close", "turn"]
_KIND = {"in": "place", "on": "place", "open": "open", "close": "close", "turnon": "turn", "turnoff": "turn"}
_NOT_DONE = {"open": "not_opened", "close": "not_closed", "turn": "knob_not_turned"}


@dataclasses.dataclass
class StageTrace:
    """One stage of a goal through an episode.

    Attributes:
        name: the stage, e.g. ``"place alphabet_soup_1 in basket_1_contain_region"``.
        kind: ``"place"`` (``In`` / ``On``), ``"open"``, ``"close"`` or ``"turn"`` (a knob).
        given: its predicate held when the episode started (no stage of the plan; it can still be
            undone).
        held_at_end: its predicate holds at the last step.
        first_held: the first step at which it held (0: at the start), or None.
        min_distance: placement: the closest the gripper came to the object (m).
        max_lift: placement: the object's largest rise over its start height (m).
        closed_near: placement: a close was commanded within ``near`` of the object.
        close_offset: placement: gripper minus object (m, world frame) at that first close: a
            missed grasp off sideways (x, y) or in height (z).
        max_progress: articulation: the largest fraction of the way from the joint's start to its
            target (1: there).
    """

    name: str
    kind: StageKind
    given: bool = False
    held_at_end: bool = False
    first_held: int | None = None
    min_distance: float = math.inf
    max_lift: float = 0.0
    closed_near: bool = False
    close_offset: list[float] | None = None
    max_progress: float = 0.0

    def started(self, near: float, progress: float) -> bool:
        """Whether anything moved towards this stage: its object reached, or its joint ``progress``
        of the way."""
        if self.kind == "place":
            return self.min_distance < near
        return self.max_progress >= progress

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded to 0.1 mm / 0.001."""
        d = dataclasses.asdict(self)
        d["min_distance"] = None if math.isinf(self.min_distance) else round(self.min_distance, 4)
        d["max_lift"] = round(self.max_lift, 4)
        d["max_progress"] = round(self.max_progress, 3)
        return d


def classify_outcome(
    stages: Sequence[StageTrace],
    success: bool,
    *,
    near: float = 0.10,
    lift: float = 0.03,
    started: float = 0.1,
) -> tuple[str, int | None]:
    """How an episode ended (one of [`OUTCOMES`][flowvla.envs.outcome.OUTCOMES]) and the index of the
    stage it failed in (None on success or when unknown); see the module's table.

    Args:
        stages: the goal's stages in the plan's order, predicates that held at the start first.
        success: the environment's verdict.
        near: gripper-to-object distance (m) that counts as reaching an object.
        lift: rise (m) that counts as lifting it.
        started: fraction of a joint's way that counts as having started to move it.
    """
    if success:
        return "success", None
    failed = next((i for i, s in enumerate(stages) if not s.held_at_end), None)
    if failed is None:
        return "unknown", None
    s = stages[failed]
    if any(not earlier.given for earlier in stages[:failed]) and not s.started(near, started):
        return "next_stage_never_started", failed
    if s.kind != "place":
        return _NOT_DONE[s.kind], failed
    if s.max_lift >= lift:
        return "lifted_not_placed", failed
    if s.closed_near:
        return "missed_grasp", failed
    return ("hover" if s.min_distance < near else "never_reached"), failed


class OutcomeTracker:
    """Follows one episode's goal stages; build it after the reset, call
    [`update`][flowvla.envs.outcome.OutcomeTracker.update] after every step.

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv], already reset to the episode's start.
        near: gripper-to-object distance (m, grip site to the object's body origin) that counts as
            reaching it.
        lift: rise of an object (m) that counts as lifting it.
        started: fraction of a joint's way to its target that counts as having started to move it.
    """

    def __init__(self, env: Any, near: float = 0.10, lift: float = 0.03, started: float = 0.1) -> None:
        from flowvla.envs.experts import UnsupportedGoalError
        from flowvla.envs.experts.scene import Scene

        self.near, self.lift, self.started = near, lift, started
        self.step = 0
        self.stages: list[StageTrace] = []
        self._probes: list[tuple[Any, ...]] = []
        self.raw = env.raw.env
        self.scene = Scene(env)
        try:
            self._plan(env)
        except (UnsupportedGoalError, ValueError):  # a goal no plan covers: its outcome is "unknown"
            self.stages, self._probes = [], []

    def _plan(self, env: Any) -> None:
        from flowvla.envs.experts import TaskExpert
        from flowvla.envs.experts.articulated import articulation

        expert = TaskExpert(env)
        # The expert's own plan from this state (its containers need the scene it reads at a reset;
        # set here so that no skill is built).
        expert.scene = self.scene
        plan = expert.plan()
        planned = {s.predicate for s in plan}
        given = [p for p in expert.predicates if p not in planned]
        for p, implied in [*((p, False) for p in given), *((s.predicate, s.implied) for s in plan)]:
            if p.name == "clear":
                # The expert's own means (an object pushed out of a drawer's way): nothing the goal
                # asks, and no predicate LIBERO can evaluate.
                continue
            kind: StageKind = _KIND[p.name]  # type: ignore[assignment]
            name = f"place {p.args[0]} {p.name} {p.args[1]}" if kind == "place" else f"{p.name} {p.args[0]}"
            holds = self._holds(p)
            trace = StageTrace(
                name=name + (" (implied)" if implied else ""),
                kind=kind,
                given=p in given,
                held_at_end=holds,
                first_held=0 if holds else None,
            )
            if kind == "place":
                probe: tuple[Any, ...] = (p, "place", p.args[0], float(self.scene.body_pos(p.args[0])[2]))
            else:
                art = articulation(self.raw, p.args[0])
                target = art.open_q if p.name in ("open", "turnon") else art.closed_q
                probe = (p, "joint", art.joint, self._qpos(art.joint), target)
            self.stages.append(trace)
            self._probes.append(probe)

    def _holds(self, p: Any) -> bool:
        return bool(self.raw._eval_predicate([p.name, *p.args]))

    def _qpos(self, joint: str) -> float:
        m = self.raw.sim.model
        return float(self.raw.sim.data.qpos[m.jnt_qposadr[m.joint_name2id(joint)]])

    def update(self, action: np.ndarray) -> None:
        """Call after each ``env.step(action)`` with the ``[7]`` action executed (gripper last, ``+1``
        closes)."""
        self.step += 1
        if not self.stages:
            return
        eef = self.scene.eef_pos()
        closing = float(action[-1]) > 0
        earlier_held = True  # every stage before this one has held at some step
        for trace, probe in zip(self.stages, self._probes, strict=True):
            holds = self._holds(probe[0])
            trace.held_at_end = holds
            if holds and trace.first_held is None:
                trace.first_held = self.step
            if earlier_held:
                if probe[1] == "place":
                    p = self.scene.body_pos(probe[2])
                    d = float(np.linalg.norm(eef - p))
                    trace.min_distance = min(trace.min_distance, d)
                    trace.max_lift = max(trace.max_lift, float(p[2]) - probe[3])
                    if closing and d < self.near:
                        if not trace.closed_near:
                            trace.close_offset = [round(float(v), 4) for v in eef - p]
                        trace.closed_near = True
                else:
                    start, target = probe[3], probe[4]
                    way = target - start
                    progress = 1.0 if abs(way) < 1e-9 else (self._qpos(probe[2]) - start) / way
                    trace.max_progress = max(trace.max_progress, progress)
            earlier_held = earlier_held and trace.first_held is not None

    def outcome(self, success: bool) -> str:
        """One of [`OUTCOMES`][flowvla.envs.outcome.OUTCOMES]."""
        return self._classify(success)[0]

    def _classify(self, success: bool) -> tuple[str, int | None]:
        if not self.stages:
            return ("success" if success else "unknown"), None
        return classify_outcome(self.stages, success, near=self.near, lift=self.lift, started=self.started)

    def summary(self, success: bool) -> dict[str, Any]:
        """The outcome with the readings behind it (JSON-ready): the stage it failed in, every
        stage's trace, and (as before stages were tracked) the readings of the placement it failed
        in, else of the goal's first placement: ``object``, ``min_gripper_object_m``,
        ``max_object_lift_m``, ``closed_near_object``, ``close_offset_m``."""
        outcome, failed = self._classify(success)
        places = [s for s in self.stages if s.kind == "place"]
        shown = self.stages[failed] if failed is not None and self.stages[failed].kind == "place" else None
        shown = shown or (places[0] if places else None)
        obj = shown.name.split()[1] if shown is not None else None
        return {
            "outcome": outcome,
            "failed_stage": None if failed is None else self.stages[failed].name,
            "object": obj,
            "min_gripper_object_m": None if shown is None else shown.to_dict()["min_distance"],
            "max_object_lift_m": None if shown is None else round(shown.max_lift, 4),
            "closed_near_object": bool(shown is not None and shown.closed_near),
            "close_offset_m": None if shown is None else shown.close_offset,
            "stages": [s.to_dict() for s in self.stages],
        }
