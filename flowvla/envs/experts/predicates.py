"""What a LIBERO task asks for, read from its BDDL goal: which object goes where.

LIBERO parses each task's BDDL file into ``parsed_problem["goal_state"]``, a conjunction of ground
predicates such as ``["in", "alphabet_soup_1", "basket_1_contain_region"]`` or
``["on", "akita_black_bowl_1", "plate_1"]``. A pick-and-place expert needs one of them turned into a
[`PlaceGoal`][flowvla.envs.experts.predicates.PlaceGoal]: the object to carry, the thing it must end up in or
on, and whether that thing is a movable object or a region (a MuJoCo site) of an object or fixture. Tasks
whose goal is anything else (``open``, ``turnon``, several predicates, ...) raise
[`UnsupportedGoalError`][flowvla.envs.experts.predicates.UnsupportedGoalError] naming it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "GoalPredicate",
    "PlaceGoal",
    "UnsupportedGoalError",
    "goal_holds",
    "goal_predicates",
    "place_goal",
    "place_goals",
]

#: Predicates a pick-and-place expert can satisfy: ``(In obj region)``, ``(On obj target)``.
PLACE_PREDICATES = ("in", "on")


class UnsupportedGoalError(ValueError):
    """The task's goal is not one the expert knows how to reach; the message names the predicate."""


@dataclasses.dataclass(frozen=True)
class GoalPredicate:
    """One ground BDDL predicate, e.g. ``GoalPredicate("on", ("akita_black_bowl_1", "plate_1"))``."""

    name: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"({self.name.capitalize()} {' '.join(self.args)})"


@dataclasses.dataclass(frozen=True)
class PlaceGoal:
    """Carry ``obj`` so that ``relation`` holds with ``target``.

    Attributes:
        obj: the object to pick (a key of the env's ``objects_dict``).
        relation: ``"in"`` (inside the target's box) or ``"on"`` (resting on it).
        target: an object name, or a site name when ``target_kind == "site"``.
        target_kind: ``"object"`` (a body with contacts) or ``"site"`` (a region of ``parent``).
        parent: the object or fixture the site belongs to (``None`` for an object target).
        predicate: the goal predicate this was read from.
    """

    obj: str
    relation: Literal["in", "on"]
    target: str
    target_kind: Literal["object", "site"]
    parent: str | None
    predicate: GoalPredicate


def goal_predicates(env: Any) -> list[GoalPredicate]:
    """The goal conjunction of a [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] (or its raw LIBERO env).

    Args:
        env: a ``LiberoEnv``, or the robosuite env LIBERO builds (``LiberoEnv.raw.env``).
    """
    raw = _raw(env)
    goal = raw.parsed_problem["goal_state"]
    return [GoalPredicate(str(p[0]).lower(), tuple(str(a) for a in p[1:])) for p in goal]


def _raw(env: Any) -> Any:
    # LiberoEnv -> ControlEnv -> the BDDL domain env; accept any of the three.
    for _ in range(3):
        if hasattr(env, "parsed_problem"):
            return env
        env = getattr(env, "raw", None) or getattr(env, "env", None)
        if env is None:
            break
    raise TypeError("expected a LiberoEnv or a LIBERO BDDL environment (with .parsed_problem)")


def place_goal(env: Any, predicates: Sequence[GoalPredicate] | None = None) -> PlaceGoal:
    """The single ``In`` / ``On`` goal of a task, resolved against the env's objects and sites.

    Args:
        env: a ``LiberoEnv`` (or LIBERO's BDDL env) whose objects, fixtures and sites resolve names.
        predicates: the goal to read (default: the env's own,
            [`goal_predicates`][flowvla.envs.experts.predicates.goal_predicates]).

    Raises:
        UnsupportedGoalError: the goal has several predicates, or see
            [`place_goals`][flowvla.envs.experts.predicates.place_goals].
    """
    preds = list(predicates) if predicates is not None else goal_predicates(env)
    if len(preds) != 1:
        joined = " ".join(str(p) for p in preds)
        raise UnsupportedGoalError(f"goal (And {joined}) has {len(preds)} predicates; supported: exactly one")
    return place_goals(env, preds)[0]


def place_goals(
    env: Any, predicates: Sequence[GoalPredicate] | None = None, *, inside_articulated: bool = False
) -> list[PlaceGoal]:
    """Every predicate of a conjunctive goal as a [`PlaceGoal`][flowvla.envs.experts.predicates.PlaceGoal], in
    the BDDL file's order (e.g. libero_10's "put both the alphabet soup and the tomato sauce in the basket":
    two ``In``).

    Args:
        env: a ``LiberoEnv`` (or LIBERO's BDDL env) whose objects, fixtures and sites resolve names.
        predicates: the goal to read (default: the env's own,
            [`goal_predicates`][flowvla.envs.experts.predicates.goal_predicates]).
        inside_articulated: accept a region inside an articulated part (a drawer): the caller (the
            [`planner`][flowvla.envs.experts.planner]) opens it first.

    Raises:
        UnsupportedGoalError: a predicate is not ``In`` / ``On`` (named), names something that is not
            in the scene, or (without ``inside_articulated``) lies in a drawer.
    """
    raw = _raw(env)
    preds = list(predicates) if predicates is not None else goal_predicates(raw)
    if not preds:
        raise UnsupportedGoalError("the goal is empty")
    return [_resolve(raw, p, inside_articulated) for p in preds]


def _resolve(raw: Any, pred: GoalPredicate, inside_articulated: bool = False) -> PlaceGoal:
    if pred.name not in PLACE_PREDICATES or len(pred.args) != 2:
        raise UnsupportedGoalError(
            f"goal predicate {pred} is not supported; the pick-and-place expert handles "
            "(In <object> <region>) and (On <object> <object or region>)"
        )
    obj, target = pred.args
    if obj not in raw.objects_dict:
        raise UnsupportedGoalError(f"goal {pred}: {obj!r} is not a movable object of this scene")
    if target in raw.objects_dict or target in raw.fixtures_dict:
        if pred.name == "in":
            raise UnsupportedGoalError(f"goal {pred}: 'in' needs a region (site), got the body {target!r}")
        return PlaceGoal(obj, "on", target, "object", None, pred)
    if target not in raw.object_sites_dict:
        raise UnsupportedGoalError(f"goal {pred}: {target!r} is neither an object nor a region of this scene")
    parent = site_parent(raw, target)
    if not inside_articulated and parent in raw.fixtures_dict and _is_articulated_region(raw, target):
        raise UnsupportedGoalError(
            f"goal {pred}: {target!r} lies in an articulated part of {parent!r} (a drawer); "
            "opening it first is not supported"
        )
    return PlaceGoal(obj, pred.name, target, "site", parent, pred)  # type: ignore[arg-type]


def site_parent(raw: Any, site: str) -> str | None:
    # LIBERO names a region "<parent>_<region>"; the longest matching prefix is the parent.
    names = sorted([*raw.objects_dict, *raw.fixtures_dict], key=len, reverse=True)
    return next((n for n in names if site.startswith(n + "_")), None)


def _is_articulated_region(raw: Any, site: str) -> bool:
    # Drawer regions carry the joints that move them (LIBERO's SiteObject.joints); table-top sites
    # such as a stove's cook region or a cabinet's top side have none.
    return bool(getattr(raw.object_sites_dict[site], "joints", None))


def goal_holds(env: Any, goal: PlaceGoal) -> bool:
    """Whether LIBERO's own predicate for ``goal`` holds now (one conjunct of the task's success)."""
    raw = _raw(env)
    return bool(raw._eval_predicate([goal.predicate.name, *goal.predicate.args]))
