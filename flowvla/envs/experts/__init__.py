"""Scripted experts that solve LIBERO tasks from privileged simulator state.

Modules: [`predicates`][flowvla.envs.experts.predicates] (what the BDDL goal asks for),
[`geometry`][flowvla.envs.experts.geometry] (grasp and pose maths), [`scene`][flowvla.envs.experts.scene]
(simulator readings), [`pick_place`][flowvla.envs.experts.pick_place] (the pick-and-place expert),
[`episode`][flowvla.envs.experts.episode] (run and record one episode). Nothing here imports LIBERO;
the env passed in does.
"""

from __future__ import annotations

from flowvla.envs.experts.episode import Expert, ExpertEpisode, run_expert_episode
from flowvla.envs.experts.pick_place import ExpertConfig, Grasp, PickPlaceExpert
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
    "UnsupportedGoalError",
    "goal_holds",
    "goal_predicates",
    "make_expert",
    "place_goal",
    "place_goals",
    "run_expert_episode",
]


def make_expert(env: object, config: ExpertConfig | None = None) -> PickPlaceExpert:
    """The expert for ``env``'s task, chosen from its BDDL goal.

    Raises:
        UnsupportedGoalError: no expert handles this goal (the message names the predicate).
    """
    return PickPlaceExpert(env, config=config)
