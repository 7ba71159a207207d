"""Scripted experts that solve LIBERO tasks from privileged simulator state.

Modules: [`predicates`][flowvla.envs.experts.predicates] (what the BDDL goal asks for),
[`geometry`][flowvla.envs.experts.geometry] (grasp and pose maths), [`scene`][flowvla.envs.experts.scene]
(simulator readings), [`pick_place`][flowvla.envs.experts.pick_place] (the pick-and-place expert),
[`skill`][flowvla.envs.experts.skill] (what a stage runs through),
[`articulated`][flowvla.envs.experts.articulated] (drawers, doors, knobs),
[`push`][flowvla.envs.experts.push] (sliding a plate, pushing a bowl clear),
[`insert`][flowvla.envs.experts.insert] (carrying an object sideways into a region under a roof),
[`control`][flowvla.envs.experts.control] (pose tracking), [`planner`][flowvla.envs.experts.planner]
(stages from the goal's predicates, the task expert), [`episode`][flowvla.envs.experts.episode] (run
and record one episode). Nothing here imports LIBERO; the env passed in does.
"""

from __future__ import annotations

from flowvla.envs.experts.episode import Expert, ExpertEpisode, run_expert_episode
from flowvla.envs.experts.pick_place import ExpertConfig, Grasp, PickPlaceExpert
from flowvla.envs.experts.planner import Stage, TaskExpert, plan_stages
from flowvla.envs.experts.predicates import (
    GoalPredicate,
    PlaceGoal,
    UnsupportedGoalError,
    goal_holds,
    goal_predicates,
    place_goal,
    place_goals,
)

__all__ = [
    "Expert",
    "ExpertConfig",
    "ExpertEpisode",
    "GoalPredicate",
    "Grasp",
    "PickPlaceExpert",
    "PlaceGoal",
    "Stage",
    "TaskExpert",
    "UnsupportedGoalError",
    "goal_holds",
    "goal_predicates",
    "make_expert",
    "place_goal",
    "place_goals",
    "plan_stages",
    "run_expert_episode",
]


def make_expert(env: object, config: ExpertConfig | None = None) -> TaskExpert:
    """The expert for ``env``'s task: a [`TaskExpert`][flowvla.envs.experts.planner.TaskExpert] planning
    stages from its BDDL goal.

    Raises:
        UnsupportedGoalError: a goal predicate no skill handles (the message names it).
    """
    return TaskExpert(env, config=config)
