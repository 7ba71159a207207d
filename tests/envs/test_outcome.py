"""Failure outcomes: the pure rule over synthetic stage traces (pick-and-place, drawers, knobs,
two-stage goals), and (with LIBERO) the tracker on a drawer task and on a two-stage libero_10 task
whose second stage is never started."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.envs.outcome import OUTCOMES, StageTrace, classify_outcome


def place(held=False, reach=math.inf, lift=0.0, closed=False, given=False, first=None):
    return StageTrace("place obj_1 in basket", "place", given=given, held_at_end=held,
                      first_held=first if first is not None else (0 if held else None),
                      min_distance=reach, max_lift=lift, closed_near=closed)  # fmt: skip


def joint(kind, held=False, progress=0.0, given=False):
    return StageTrace(f"{kind} x", kind, given=given, held_at_end=held, first_held=0 if held else None,
                      max_progress=progress)  # fmt: skip


@pytest.mark.parametrize(
    "stage, outcome",
    [
        (place(), "never_reached"),
        (place(reach=0.05), "hover"),
        (place(reach=0.02, closed=True), "missed_grasp"),
        (place(reach=0.02, closed=True, lift=0.1), "lifted_not_placed"),
        (joint("open"), "not_opened"),
        (joint("open", progress=0.6), "not_opened"),
        (joint("close", progress=0.5), "not_closed"),
        (joint("turn"), "knob_not_turned"),
    ],
)
def test_a_one_stage_goal_fails_by_what_its_stage_lacks(stage, outcome):
    assert classify_outcome([stage], success=False) == (outcome, 0)
    assert classify_outcome([stage], success=True) == ("success", None)


def test_a_second_stage_never_started_is_named_as_such():
    first_done = place(held=True, first=120)
    assert classify_outcome([first_done, place()], False) == ("next_stage_never_started", 1)
    # Started (reached, or the joint moved) it fails by what it lacks instead.
    assert classify_outcome([first_done, place(reach=0.05)], False) == ("hover", 1)
    assert (
        classify_outcome([first_done, joint("close", progress=0.05)], False)[0] == "next_stage_never_started"
    )
    assert classify_outcome([first_done, joint("close", progress=0.5)], False) == ("not_closed", 1)
    # The drawer opened, the bowl never reached: libero_10's "put the bowl in the drawer and close it".
    opened = joint("open", held=True)
    assert classify_outcome([opened, place(), joint("close")], False) == ("next_stage_never_started", 1)


def test_the_first_stage_not_holding_is_the_one_failed():
    # The second object is in, the first is not: a first-stage failure, whatever the second did.
    assert classify_outcome([place(reach=0.03), place(held=True)], False) == ("hover", 0)
    # A stage done and later undone fails again, as itself.
    assert classify_outcome(
        [place(held=False, first=40, reach=0.01, closed=True, lift=0.2), place()], False
    ) == (
        "lifted_not_placed",
        0,
    )


def test_a_predicate_true_from_the_start_is_no_stage_the_policy_did():
    # libero_10 8 starts with the stove on: a policy that does nothing never reached the first pot.
    stove_on = joint("turn", held=True, given=True)
    assert classify_outcome([stove_on, place(), place()], False) == ("never_reached", 1)
    # Turned off by the policy: it fails on the knob.
    assert classify_outcome([joint("turn", given=True), place(held=True)], False) == ("knob_not_turned", 0)


def test_every_stage_holding_without_success_and_an_empty_goal_are_unknown():
    assert classify_outcome([place(held=True), joint("close", held=True)], False) == ("unknown", None)
    assert classify_outcome([], False) == ("unknown", None)


_traces = st.builds(
    StageTrace,
    name=st.just("s"),
    kind=st.sampled_from(["place", "open", "close", "turn"]),
    given=st.booleans(),
    held_at_end=st.booleans(),
    min_distance=st.floats(0, 1),
    max_lift=st.floats(0, 0.3),
    closed_near=st.booleans(),
    max_progress=st.floats(-1, 2),
)


@given(st.lists(_traces, max_size=4), st.booleans())
def test_an_outcome_is_named_and_points_at_the_first_stage_not_holding(stages, success):
    outcome, failed = classify_outcome(stages, success)
    assert outcome in OUTCOMES
    first = next((i for i, s in enumerate(stages) if not s.held_at_end), None)
    assert failed == (None if success else first)
    if outcome == "next_stage_never_started":
        assert any(not s.given for s in stages[:failed])


# ---------------------------------------------------------------------------------------- simulator
@pytest.mark.libero
def test_a_drawer_left_shut_is_not_opened(libero_ready):
    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.outcome import OutcomeTracker

    with LiberoEnv("libero_goal", 0, render=False) as env:  # open the middle drawer of the cabinet
        env.reset(init_state=0, settle_steps=10)
        tracker = OutcomeTracker(env)
        still = np.array([0.0] * 6 + [-1.0])
        for _ in range(3):
            env.step(still)
            tracker.update(still)
        s = tracker.summary(False)
    assert s["outcome"] == "not_opened" and s["object"] is None
    assert [t["kind"] for t in s["stages"]] == ["open"] and s["stages"][0]["max_progress"] < 0.1


@pytest.mark.libero
def test_the_stages_are_the_goals_and_the_drawer_it_implies_never_the_experts_own_means(libero_ready):
    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.outcome import OutcomeTracker

    # open the top drawer and put the bowl inside: the expert's plan also pushes an object out of
    # the drawer's way, a step of its own with no LIBERO predicate to score it by
    with LiberoEnv("libero_goal", 3, render=False) as env:
        env.reset(init_state=0, settle_steps=10)
        stages = OutcomeTracker(env).stages
    assert [(s.kind, s.name) for s in stages] == [
        ("open", "open wooden_cabinet_1_top_region (implied)"),
        ("place", "place akita_black_bowl_1 in wooden_cabinet_1_top_region"),
    ]


@pytest.mark.libero
@pytest.mark.slow
def test_a_two_stage_task_stopped_after_its_first_stage_never_started_the_second(libero_ready):
    from flowvla.envs.experts import make_expert, run_expert_episode
    from flowvla.envs.libero import LiberoEnv
    from flowvla.envs.outcome import OutcomeTracker

    # put both the alphabet soup and the tomato sauce in the basket
    with LiberoEnv("libero_10", 0, render=False) as env:
        ep = run_expert_episode(env, make_expert(env), seed=3)
        assert ep.success and len(ep.stages) == 2
        second = ep.stages[1][1]  # the step the second stage began
        env.reset(init_state=ep.init_state, settle_steps=10)
        tracker = OutcomeTracker(env)
        still = np.array([0.0] * 6 + [-1.0])
        for a in [*ep.actions[:second], *[still] * 5]:
            env.step(a)
            tracker.update(a)
        s = tracker.summary(False)
    assert [t["kind"] for t in s["stages"]] == ["place", "place"]
    assert s["stages"][0]["held_at_end"] and s["outcome"] == "next_stage_never_started"
    assert s["failed_stage"] == s["stages"][1]["name"]
