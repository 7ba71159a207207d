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

from flowvla.envs.experts import (
    PickPlaceExpert,
    UnsupportedGoalError,
    goal_predicates,
    make_expert,
    place_goal,
    run_expert_episode,
)
from flowvla.recipes.generate import init_state_distance

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
        # One stage; the pinch grasp was laid across the can, every phase ran once, the gripper ended open.
        assert ep.stages == [("place alphabet_soup_1 in basket_1_contain_region", 0)]
        assert expert.skill.expert.grasp.kind == "pinch"
        assert ep.phases[:4] == ["approach", "descend", "close", "lift"]
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
        # The pick-and-place expert alone names what it cannot do; the task expert plans a drawer stage.
        with pytest.raises(UnsupportedGoalError, match=r"\(Open wooden_cabinet_1_middle_region\)"):
            PickPlaceExpert(env)
        assert [s.name for s in make_expert(env).plan()] == ["open wooden_cabinet_1_middle_region"]


def test_a_layout_whose_object_falls_off_the_table_is_skipped_not_failed():
    from flowvla.recipes.generate import attempt_seed

    # LIBERO's region sampler put the bowl of this attempt over the table edge; it falls ~0.6 m.
    with LiberoEnv("libero_spatial", 0, render=False) as env:
        ep = run_expert_episode(env, make_expert(env), seed=attempt_seed(0, "libero_spatial", 0, 10))
        assert not ep.stable and ep.settle_drift > 0.1 and ep.steps == 0 and not ep.success


def test_injected_noise_moves_the_arm_off_path_while_labels_stay_the_experts():
    """DART: the env executes noisy actions, the recorded labels are the expert's clean choices in the
    states the noise led to, and replaying the executed actions reproduces the episode."""
    with LiberoEnv("libero_object", 0, render=False) as env:
        expert = make_expert(env)
        clean = run_expert_episode(env, expert, seed=5)
        noisy = run_expert_episode(env, expert, seed=5, action_noise=0.2)
        assert clean.executed_actions is None and noisy.success
        ex = noisy.executed_actions
        assert ex.shape == noisy.actions.shape
        # Only the translation dims are perturbed, and by about the requested size.
        np.testing.assert_array_equal(ex[:, 3:], noisy.actions[:, 3:])
        dev = np.abs(ex[:, :3] - noisy.actions[:, :3])
        assert 0.05 < dev.mean() < 0.3
        # The noise changed where the arm went (not just what was logged).
        n = min(len(clean.states), len(noisy.states))
        assert np.abs(clean.states[n // 2] - noisy.states[n // 2]).max() > 1e-3
        env.reset(init_state=noisy.init_state, settle_steps=10)
        for a in ex:
            res = env.step(a)
        assert res.success
        with pytest.raises(ValueError, match="action_noise"):
            run_expert_episode(env, expert, seed=5, action_noise=-0.1)


def test_noise_bursts_leave_clean_stretches_the_expert_recovers_in():
    """With bursts, noise is executed only inside them; between them what ran is the label, and the
    noisy episode still succeeds and replays."""
    with LiberoEnv("libero_object", 0, render=False) as env:
        ep = run_expert_episode(env, make_expert(env), seed=5, action_noise=0.3, noise_bursts=(6, 30))
        assert ep.success
        noisy = np.any(ep.executed_actions != ep.actions, axis=-1)
        assert 0 < noisy.sum() < 0.4 * len(noisy)
        env.reset(init_state=ep.init_state, settle_steps=10)
        for a in ep.executed_actions:
            res = env.step(a)
        assert res.success


def test_outcomes_name_how_an_episode_ended():
    """The tracker's readings come from the simulator: the expert's episode is a success; its own
    actions with the gripper held open reach the object without closing (hover); standing still never
    reaches it."""
    from flowvla.envs.outcome import OutcomeTracker

    with LiberoEnv("libero_object", 0, render=False) as env:
        ep = run_expert_episode(env, make_expert(env), seed=7)

        def replay(actions):
            env.reset(init_state=ep.init_state, settle_steps=10)
            tracker = OutcomeTracker(env)
            success = False
            for a in actions:
                success = env.step(a).success
                tracker.update(a)
            return tracker.summary(success)

        done = replay(ep.actions)
        assert done["outcome"] == "success" and done["object"] == "alphabet_soup_1"
        assert done["max_object_lift_m"] > 0.03 and done["closed_near_object"]
        # Where the expert first commanded a close: within reach of the object.
        assert np.linalg.norm(done["close_offset_m"]) < 0.1
        open_hand = ep.actions.copy()
        open_hand[:, -1] = -1.0
        hover = replay(open_hand)
        assert hover["outcome"] == "hover" and hover["min_gripper_object_m"] < 0.1
        assert hover["close_offset_m"] is None
        still = np.zeros((20, 7))
        still[:, -1] = -1.0
        assert replay(still)["outcome"] == "never_reached"
