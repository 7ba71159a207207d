"""A bespoke solver fitted to a policy's own field: never worse than its start on the fitting noise,
sampled through predict_action, saved and reloaded bit for bit, and the policy left as it was."""

import pytest
import torch

from flowvla.policy.solver_fit import fit_policy_grid, fit_policy_solver
from flowvla.solvers import FittedGrid, grid_times
from flowvla.solvers.bespoke import BespokeSolver
from tests.policy.helpers import A, H, make_batch, shaped_tiny_policy


@pytest.fixture(scope="module")
def policy():
    return shaped_tiny_policy()


def test_the_fit_improves_on_euler_and_samples_through_predict_action(policy, tmp_path):
    batch = make_batch(3, depth=False, actions=False)
    before = {k: v.clone() for k, v in policy.head.state_dict().items()}
    solver = fit_policy_solver(
        policy, batch, steps=2, samples=4, held_out_samples=4, iterations=20, lr=2e-2, reference_tol=1e-4
    )
    info = solver.info
    assert info["fit_error"] <= info["init_error"] and info["observations"] == 3
    assert info["held_out_error"] < info["held_out_base_error"]  # 2 fitted Euler steps beat 2 plain ones
    assert info["held_out_euler10_error"] < info["held_out_base_error"]
    # The policy is untouched: same weights, gradients on again, back in training mode.
    assert all(torch.equal(v, policy.head.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in policy.head.parameters()) and policy.training
    actions, dbg = policy.predict_action(batch, solver=solver, steps=2, seed=0)
    assert actions.shape == (3, H, A) and dbg["nfe"] == 2
    again, _ = policy.predict_action(
        batch, solver=BespokeSolver.load(solver.save(tmp_path / "s.json")), seed=0
    )
    assert torch.equal(actions, again)


def test_bad_arguments_are_named(policy):
    batch = make_batch(2, depth=False, actions=False)
    with pytest.raises(ValueError, match="samples"):
        fit_policy_solver(policy, batch, steps=2, samples=0)
    with pytest.raises(ValueError, match="base"):
        fit_policy_solver(policy, batch, steps=2, base="rk4", iterations=1)


@pytest.mark.parametrize("target", ["ode", "demos"])
def test_a_fitted_grid_is_never_worse_than_uniform_on_its_fit_and_samples_through_predict_action(
    policy, target, tmp_path
):
    batch = make_batch(3, depth=False, actions=True)
    batch["action_mask"][0, H // 2 :] = False  # masked steps of a demonstration do not count
    grid, info = fit_policy_grid(
        policy, batch, solver="ab2", steps=3, target=target, samples=2, held_out_samples=2, sweeps=1,
        reference_tol=1e-4,
    )  # fmt: skip
    assert grid.solver == "ab2" and grid.steps == 3 and grid.times[0] == 0.0 and grid.times[-1] == 1.0
    assert grid.fit_error <= grid.start_errors["uniform"]  # the best start is kept, then only improved
    key = "held_out_ode_error" if target == "ode" else "held_out_demo_error"
    assert info[key] > 0 and info[f"{key}_uniform"] > 0 and info["target"] == target
    assert "held_out_demo_error" in info  # the batch has demonstrations: both errors are reported
    assert policy.training  # left as it was
    # Sampled through predict_action: the grid's times, its solver, steps = len(times) - 1.
    obs = {k: v for k, v in batch.items() if k not in ("actions", "action_mask")}
    actions, dbg = policy.predict_action(obs, grid=FittedGrid.load(grid.save(tmp_path / "g.json")), seed=0)
    assert dbg["nfe"] == 3 and dbg["steps"] == 3 and dbg["grid"] == grid.times
    same, _ = policy.predict_action(obs, solver="ab2", grid=grid.times, seed=0)
    assert torch.equal(actions, same)


def test_predict_action_grids_are_checked_and_uniform_times_equal_the_named_grid(policy):
    obs = make_batch(2, depth=False, actions=False)
    named, _ = policy.predict_action(obs, solver="euler", steps=4, seed=1)
    explicit, dbg = policy.predict_action(obs, solver="euler", grid=grid_times("uniform", 4), seed=1)
    assert torch.equal(named, explicit) and dbg["steps"] == 4
    shifted, _ = policy.predict_action(obs, solver="euler", steps=4, grid="shifted", seed=1)
    assert not torch.equal(named, shifted)
    fitted = FittedGrid(solver="ab2", times=[0.0, 0.3, 1.0], fit_error=0.0, start="uniform")
    for kwargs, match in [
        ({"grid": [0.0, 0.6, 0.4, 1.0]}, "increasing times"),
        ({"grid": [0.1, 0.5, 1.0]}, "increasing times"),
        ({"grid": [0.0, 0.5, 1.0], "steps": 4}, "2 steps"),
        ({"grid": fitted, "solver": "euler"}, "fitted for solver 'ab2'"),
    ]:
        with pytest.raises(ValueError, match=match):
            policy.predict_action(obs, **kwargs)


def test_a_demos_target_needs_demonstrations(policy):
    with pytest.raises(ValueError, match="'actions'"):
        fit_policy_grid(
            policy, make_batch(2, depth=False, actions=False), solver="euler", steps=2, target="demos"
        )
    with pytest.raises(ValueError, match="target"):
        fit_policy_grid(policy, make_batch(2, depth=False), solver="euler", steps=2, target="success")
