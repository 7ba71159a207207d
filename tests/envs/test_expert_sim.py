"""The scripted expert in the LIBERO simulator (marked ``libero``; skipped without LIBERO installed):
one libero_object episode from a fresh layout succeeds with physics only, and goals are read from
the tasks' BDDL files."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
pytest.importorskip("robosuite", reason="robosuite is not installed (see docs/libero.md)")

from flowvla.envs.libero import LiberoEnv
from flowvla.envs.libero_setup import LiberoSetupError, prepare_libero

try:
    prepare_libero()
except LiberoSetupError as err:
    pytest.skip(str(err), allow_module_level=True)

from flowvla.data.generate import init_state_distance
from flowvla.envs.experts import (
    PickPlaceExpert,
    UnsupportedGoalError,
    goal_predicates,
    make_expert,
    place_goal,
    run_expert_episode,
)

pytestmark = pytest.mark.libero


def test_scripted_libero_object_episode_succeeds_from_a_fresh_layout():
    with LiberoEnv("libero_object", 0, render=False) as env:
        goal = place_goal(env)
        assert (goal.obj, goal.relation, goal.target) == ("alphabet_soup_1", "in", "basket_1_contain_region")
        expert = make_expert(env)
        ep = run_expert_episode(env, expert, seed=123)
        assert ep.success and env.success()
        assert (
            ep.steps < env.max_steps and ep.actions.shape == (ep.steps, 7) and ep.states.shape[0] == ep.steps
        )
        assert np.abs(ep.actions).max() <= 1.0
        # The pinch grasp was laid across the can, every phase ran once, the gripper ended open.
        assert expert.grasp.kind == "pinch" and ep.phases[:4] == ["approach", "descend", "close", "lift"]
        assert ep.actions[-1, -1] == -1.0 and "release" in ep.phases
        # A fresh sampler layout, not one of the 50 reserved for evaluation.
        nq = int(env.sim.model.nq)
        assert init_state_distance(ep.init_state, env.init_states, nq).min() > 1e-3
        assert init_state_distance(env.init_states[7], env.init_states, nq)[7] == 0.0

        # Replaying the recorded actions from the recorded start reproduces the success.
        env.reset(init_state=ep.init_state, settle_steps=10)
        np.testing.assert_allclose(env.get_sim_state()[1:], ep.states[0][1:], atol=1e-6)
        for a in ep.actions:
            res = env.step(a)
        assert res.success


def test_goals_are_read_from_bddl_and_unsupported_ones_named():
    with LiberoEnv("libero_goal", 0, render=False) as env:
        assert [str(p) for p in goal_predicates(env)] == ["(Open wooden_cabinet_1_middle_region)"]
        with pytest.raises(UnsupportedGoalError, match=r"\(Open wooden_cabinet_1_middle_region\)"):
            PickPlaceExpert(env)


def test_a_layout_whose_object_falls_off_the_table_is_skipped_not_failed():
    from flowvla.data.generate import attempt_seed

    # LIBERO's region sampler put the bowl of this attempt over the table edge; it falls ~0.6 m.
    with LiberoEnv("libero_spatial", 0, render=False) as env:
        ep = run_expert_episode(env, make_expert(env), seed=attempt_seed(0, "libero_spatial", 0, 10))
        assert not ep.stable and ep.settle_drift > 0.1 and ep.steps == 0 and not ep.success
