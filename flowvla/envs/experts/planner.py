"""A task expert for any LIBERO goal: the goal's predicates become stages, each run by one skill, in an
order chosen from the predicates and re-planned from the simulator's state after every stage.

Rules of [`plan_stages`][flowvla.envs.experts.planner.plan_stages] (pure: predicate lists in, stages out):

1. A predicate that holds now needs no stage (a knob already on, a door already shut).
2. ``Turnon`` / ``Turnoff`` come first: the knob before the pot set on the stove.
3. Then ``Open``, and an implied open of the drawer or door a placement goes into while it is shut
   (with its ``Close`` planned again if the goal has one); an object the opened part would cover (a
   bowl in front of the drawer, under its path) is first slid clear of it (an implied ``clear`` stage).
4. Then ``In`` / ``On`` placements, in the BDDL file's order.
5. ``Close`` comes last: the drawer is shut after the bowl is in it.

[`TaskExpert`][flowvla.envs.experts.planner.TaskExpert] runs the first stage of the plan, then plans again
from what holds now, so a stage that undid another (a nudged bowl) or failed is planned again; a stage
tried ``max_stage_tries`` times without its predicate holding ends the episode as failed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowvla.envs.experts.articulated import (
    Articulation,
    DoorCloseSkill,
    DrawerSkill,
    KnobSkill,
    articulation,
)
from flowvla.envs.experts.insert import SideInsertSkill, inserts
from flowvla.envs.experts.pick_place import ExpertConfig, PickPlaceExpert
from flowvla.envs.experts.predicates import (
    GoalPredicate,
    PlaceGoal,
    UnsupportedGoalError,
    goal_predicates,
    place_goals,
    site_parent,
)
from flowvla.envs.experts.push import ClearSkill, SlideSkill, clear_spot, slides
from flowvla.envs.experts.scene import Scene
from flowvla.envs.experts.skill import Skill

__all__ = ["PlaceSkill", "Stage", "TaskExpert", "plan_stages"]

_ORDER = {"turnon": 0, "turnoff": 0, "clear": 1, "open": 1, "in": 2, "on": 2, "close": 3}
# An object whose origin lies within _BLOCK_MARGIN (m) of the box a drawer sweeps as it opens is in the
# way: the hand reaching down for it would meet the opened drawer. It is slid to where its origin is
# _CLEAR_MARGIN out, which leaves room for the palm (7 cm wide) along the drawer's side.
_BLOCK_MARGIN, _CLEAR_MARGIN = 0.05, 0.065
_VERBS = {"turnon": "turn on", "turnoff": "turn off", "open": "open", "close": "close"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a plan: make ``predicate`` hold.

    Attributes:
        predicate: what must hold when the stage is done (a goal conjunct, or an implied ``Open``).
        implied: the stage is not in the goal; it makes a goal conjunct reachable (opening a drawer).
    """

    predicate: GoalPredicate
    implied: bool = False

    @property
    def name(self) -> str:
        """e.g. ``"open wooden_cabinet_1_top_region"``, ``"place akita_black_bowl_1 in ..."``."""
        p = self.predicate
        if p.name in ("in", "on"):
            return f"place {p.args[0]} {p.name} {p.args[1]}"
        if p.name == "clear":
            return f"move {p.args[0]} clear of {p.args[1]}"
        return f"{_VERBS[p.name]} {p.args[0]}"


def plan_stages(
    predicates: Sequence[GoalPredicate],
    holds: Callable[[GoalPredicate], bool],
    container: Callable[[str], str | None] = lambda region: None,
    blocks: Callable[[str, str], bool] = lambda obj, box: False,
) -> list[Stage]:
    """The stages that make every predicate hold, in execution order (see the module's rules).

    Args:
        predicates: the goal conjunction.
        holds: whether a predicate holds now (LIBERO's own check, or a test's table).
        container: for a placement target, the articulated part that must be open to reach it (a drawer
            region, a microwave), or ``None``.
        blocks: whether an object stands where the opened part would cover it (a bowl in front of a
            drawer that opens over it): it is moved clear first, by an implied ``clear`` stage.

    Raises:
        UnsupportedGoalError: a predicate no skill handles (named).
    """
    stages: list[Stage] = []
    for p in predicates:
        if p.name not in _ORDER or len(p.args) != (2 if p.name in ("in", "on") else 1):
            raise UnsupportedGoalError(
                f"goal predicate {p} is not supported; "
                "the expert handles In, On, Open, Close, Turnon, Turnoff"
            )
    pending = [p for p in predicates if not holds(p)]
    opened = {p.args[0] for p in predicates if p.name == "open"}
    for p in pending:
        if p.name in ("in", "on"):
            box = container(p.args[1])
            if box is not None and box not in opened:
                implied = GoalPredicate("open", (box,))
                if not holds(implied):
                    if blocks(p.args[0], box):
                        # Opened, the part would hang over the object and keep the hand from it.
                        stages.append(Stage(GoalPredicate("clear", (p.args[0], box)), implied=True))
                    stages.append(Stage(implied, implied=True))
                    opened.add(box)
                    # Opening undoes a Close the goal asks for: shut it again afterwards.
                    shut = GoalPredicate("close", (box,))
                    if shut in predicates and shut not in pending:
                        stages.append(Stage(shut))
        stages.append(Stage(p))
    return sorted(stages, key=lambda s: _ORDER[s.predicate.name])  # stable: BDDL order within a rank


class PlaceSkill(Skill):
    """The pick-and-place stage: a [`PickPlaceExpert`][flowvla.envs.experts.pick_place.PickPlaceExpert]
    for one ``In`` / ``On`` goal; done once the object was released and the goal holds."""

    def __init__(
        self,
        env: Any,
        scene: Scene,
        goal: PlaceGoal,
        config: ExpertConfig | None,
        slot: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(env, scene)
        self.goal = goal
        self.expert = PickPlaceExpert(env, goal, config=config, slot=slot)
        self.expert.reset(scene)
        self.timeout = 10**9  # the pick-and-place expert has its own retries and phase timeouts

    @property
    def phase(self) -> str:  # type: ignore[override]
        return self.expert.phase

    @phase.setter
    def phase(self, value: str) -> None:
        pass

    @property
    def retries(self) -> int:
        return self.expert.retries

    def holds(self) -> bool:
        return bool(self.raw._eval_predicate([self.goal.predicate.name, *self.goal.predicate.args]))

    def _act(self) -> np.ndarray:
        a = self.expert.act()
        if self.expert.phase == "failed":
            self.failed = True
        elif self.expert.finished:
            self.done = True
        return a

    @property
    def stoppable(self) -> bool:
        return self.expert.finished or self.expert.phase == "retreat"


class TaskExpert:
    """Solve a LIBERO task from its BDDL goal by running one skill per stage (see the module docstring).

    Args:
        env: a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] (physics-only is enough).
        config: tuning of the pick-and-place stages.
        max_stage_tries: attempts at one stage before the episode is given up.

    Raises:
        UnsupportedGoalError: a goal predicate no skill handles (named), e.g. opening a hinged door.

    After every ``env.reset`` call [`reset`][flowvla.envs.experts.planner.TaskExpert.reset], then
    [`act`][flowvla.envs.experts.planner.TaskExpert.act] once per step. ``finished`` is true once every goal
    predicate holds with the hand let go (or the expert gave up: ``phase == "failed"``); ``stages``
    lists each stage's name and the step (index of ``act`` calls) it started at.
    """

    def __init__(self, env: Any, config: ExpertConfig | None = None, max_stage_tries: int = 3) -> None:
        self.env = env
        self.raw = env.raw.env
        self.cfg = config
        self.max_stage_tries = max_stage_tries
        self.predicates = goal_predicates(env)
        # Fail early, naming the predicate, for goals no skill handles.
        plan_stages(self.predicates, lambda p: False)
        for p in self.predicates:
            if p.name in ("in", "on"):
                place_goals(env, [p], inside_articulated=True)
            else:
                art = self._articulation(p)
                if p.name == "open" and art.kind == "hinge":
                    raise UnsupportedGoalError(f"goal predicate {p}: opening a hinged door is not supported")
        self.scene: Scene | None = None
        self.skill: Skill | None = None
        self.phase = "idle"

    def _articulation(self, p: GoalPredicate) -> Articulation:
        try:
            return articulation(self.raw, p.args[0])
        except ValueError as e:
            raise UnsupportedGoalError(f"goal predicate {p}: {e}") from None

    def _holds(self, p: GoalPredicate) -> bool:
        if p.name == "clear":
            return not self._blocks(*p.args)
        return bool(self.raw._eval_predicate([p.name, *p.args]))

    def _sweep(self, box: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The horizontal box a drawer sweeps as it opens (``None`` for anything but a drawer)."""
        art = self._articulation(GoalPredicate("open", (box,)))
        if art.kind != "slide":
            return None
        return DrawerSkill(self.env, self.scene, ("open", box), art).sweep()

    def _blocks(self, obj: str, box: str, margin: float = _BLOCK_MARGIN) -> bool:
        sweep = self._sweep(box)
        if sweep is None:
            return False
        p = self.scene.body_pos(obj)[:2]
        return bool(np.all(p > sweep[0] - margin) and np.all(p < sweep[1] + margin))

    def _container(self, region: str) -> str | None:
        sites = self.raw.object_sites_dict
        if region in sites and getattr(sites[region], "joints", None):
            return region
        parent = site_parent(self.raw, region) if region in sites else None
        if parent is None:
            return None
        props = getattr(self.raw.get_object(parent), "object_properties", {}).get("articulation", {})
        if not props.get("default_open_ranges") or parent not in self.scene.names:
            return None
        # A region inside a door-closed object (a microwave's heating region) lies below the object's
        # top; one on top of it (a cabinet's top side) does not need anything opened.
        top = float(self.scene.shape(parent).high[2])
        return parent if float(self.scene.site_pos(region)[2]) < top - 0.03 else None

    def plan(self) -> list[Stage]:
        """The remaining stages, from the simulator's state now."""
        return plan_stages(self.predicates, self._holds, self._container, self._blocks)

    # ---------------------------------------------------------------------------------------- run
    def reset(self) -> None:
        """Re-read the scene (after every ``env.reset``) and start the first stage."""
        self.scene = Scene(self.env)
        self.steps = 0
        self.stages: list[tuple[str, int]] = []
        self.history: list[str] = []
        self._tries: dict[str, int] = {}
        self._retries = 0
        self._gave_up = False
        self._all_done = False
        self.phase = "idle"
        self._next_stage()

    def _make_skill(self, stage: Stage) -> Skill:
        p, sc = stage.predicate, self.scene
        if p.name == "clear":
            obj, box = p.args
            spot = clear_spot(sc, obj, self._sweep(box), margin=_CLEAR_MARGIN)
            return ClearSkill(self.env, sc, obj, sc.body_pos(obj)[:2] if spot is None else spot)
        if p.name in ("in", "on"):
            goal = place_goals(self.env, [p], inside_articulated=True)[0]
            if inserts(sc, goal):
                return SideInsertSkill(self.env, sc, goal)
            if slides(sc, goal):
                return SlideSkill(self.env, sc, goal)
            sharing = [q for q in self.predicates if q.name in ("in", "on") and q.args[1] == p.args[1]]
            return PlaceSkill(self.env, sc, goal, self.cfg, slot=(sharing.index(p), len(sharing)))
        art = self._articulation(p)
        pred = (p.name, p.args[0])
        if p.name in ("turnon", "turnoff"):
            return KnobSkill(self.env, sc, pred, art)
        if art.kind == "slide":
            # An implied open is followed by the placement into the drawer: the pick-and-place approach
            # turns the hand palm down on its way, so the posture recovery would only cost steps.
            return DrawerSkill(self.env, sc, pred, art, recover_posture=not stage.implied)
        if p.name == "close":
            return DoorCloseSkill(self.env, sc, pred, art)
        raise UnsupportedGoalError(f"stage {stage.name}: opening a hinged door is not supported")

    def _next_stage(self) -> None:
        plan = self.plan()
        if not plan:
            self.skill, self._all_done = None, True
            return
        stage = plan[0]
        tries = self._tries.get(stage.name, 0)
        if tries >= self.max_stage_tries:
            self.skill, self._gave_up, self.phase = None, True, "failed"
            self.history.append("failed")
            return
        self._tries[stage.name] = tries + 1
        self._retries += int(tries > 0)
        self.stage = stage
        self.stages.append((stage.name, self.steps))
        self.skill = self._make_skill(stage)
        self._last_phase = ""

    @property
    def retries(self) -> int:
        """Stage attempts beyond the first, plus the pick-and-place stages' own grasp retries."""
        inner = getattr(self.skill, "retries", 0) if self.skill is not None else 0
        return self._retries + int(inner)

    @property
    def finished(self) -> bool:
        if self._gave_up or self._all_done:
            return True
        if self.skill is None or not all(self._holds(p) for p in self.predicates):
            return False
        return bool(getattr(self.skill, "stoppable", True))

    def act(self) -> np.ndarray:
        """The next ``[7]`` action (OSC_POSE deltas in ``[-1, 1]``, gripper ``-1`` open / ``+1`` close)."""
        if self.scene is None:
            raise RuntimeError("call reset() after env.reset() before act()")
        if self.skill is not None and (self.skill.done or self.skill.failed):
            self._next_stage()
        self.steps += 1
        if self.skill is None:
            return np.concatenate([np.zeros(6), [-1.0]])
        a = self.skill.act()
        if self.skill.phase != self._last_phase:
            self._last_phase = self.skill.phase
            self.history.append(self.skill.phase)
        self.phase = self.skill.phase if self.skill.phase != "failed" else "stage failed"
        return a
