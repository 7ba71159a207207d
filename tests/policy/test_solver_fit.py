"""A bespoke solver fitted to a policy's own field: never worse than its start on the fitting noise,
sampled through predict_action, saved and reloaded bit for bit, and the policy left as it was."""

import pytest
import torch

from flowvla.policy.solver_fit import fit_policy_solver
from flowvla.solvers.bespoke import BespokeSolver
from tests.policy.helpers import A, H, make_batch, tiny_policy


@pytest.fixture(scope="module")
def policy():
    p = tiny_policy()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a random-init head's zeroed outputs give a trivial field: give it a shape
        for param in p.head.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=g))
    return p


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
