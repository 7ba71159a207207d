"""Bespoke solvers: the identity is the base solver, a fit never loses on its training noise and wins
on held-out noise, save/load is bit-exact, and they sample through predict_action."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.flow import GaussianMixtureFlow
from flowvla.solvers import (
    BespokeParams,
    BespokeSolver,
    EulerSolver,
    MidpointSolver,
    fit_bespoke_solver,
    integrate,
)


def _rms(a, b):
    return float((a - b).square().mean().sqrt())


@pytest.fixture(scope="module")
def chunk_mixture():
    """Three modes of a [4, 2] action chunk, two of them narrow: the field bends early and late."""
    g = torch.Generator().manual_seed(3)
    means = torch.randn(3, 4, 2, generator=g, dtype=torch.float64).cumsum(1) * 0.6
    return GaussianMixtureFlow(means, torch.tensor([0.05, 0.1, 0.3], dtype=torch.float64))


@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(128, 4, 2, generator=g, dtype=torch.float64)
    test = torch.randn(256, 4, 2, generator=g, dtype=torch.float64)
    return train, test


@pytest.fixture(scope="module")
def references(chunk_mixture, noise):
    return tuple(integrate(chunk_mixture, x, solver="rk4", steps=200).x for x in noise)


@settings(max_examples=25, deadline=None)
@given(
    base=st.sampled_from(["euler", "midpoint"]),
    interior=st.lists(st.floats(0.01, 0.99), min_size=0, max_size=5, unique=True),
    seed=st.integers(0, 2**16),
)
def test_identity_transform_is_the_base_solver_bit_for_bit(mixture, base, interior, seed):
    times = [0.0, *sorted(interior), 1.0]
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    solver = BespokeSolver(BespokeParams.identity(base, times))
    reference = {"euler": EulerSolver, "midpoint": MidpointSolver}[base]().solve(mixture, x0, times)
    out = solver.solve(mixture, x0, [i / (len(times) - 1) for i in range(len(times))])
    assert torch.equal(out.x, reference.x)
    assert out.nfe == reference.nfe


@pytest.mark.parametrize("base, steps", [("euler", 2), ("midpoint", 1)])
def test_fit_never_loses_on_training_noise_and_beats_euler_at_two_nfe_held_out(
    chunk_mixture, noise, references, base, steps
):
    (train, test), (ref_train, ref_test) = noise, references
    solver = fit_bespoke_solver(
        chunk_mixture, train, base=base, steps=steps, reference=ref_train, iterations=60, lr=2e-2
    )
    assert solver.nfe == 2
    assert solver.info["fit_error"] <= solver.info["init_error"]
    grid = [i / steps for i in range(steps + 1)]
    init = BespokeSolver(BespokeParams.identity(base, grid))
    assert _rms(solver.solve(chunk_mixture, train, grid).x, ref_train) <= _rms(
        init.solve(chunk_mixture, train, grid).x, ref_train
    )
    euler2 = _rms(integrate(chunk_mixture, test, solver="euler", steps=2).x, ref_test)
    tuned = _rms(integrate(chunk_mixture, test, solver=solver, steps=steps).x, ref_test)
    assert tuned < 0.7 * euler2, f"bespoke {base} x{steps}: {tuned:.4f} vs euler@2 {euler2:.4f}"
    assert solver.info["teacher_nfe"] > 0 and solver.info["seconds"] > 0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), base=st.sampled_from(["euler", "midpoint"]), steps=st.integers(1, 4))
def test_save_load_round_trip_is_bit_exact(tmp_path_factory, mixture, seed, base, steps):
    g = torch.Generator().manual_seed(seed)
    p = BespokeParams.identity(base, [i / steps for i in range(steps + 1)])
    stages = len(p.t[0])
    scale = [1.0, *(float(v) for v in torch.rand(steps, generator=g, dtype=torch.float64) + 0.5)]
    rand = lambda: torch.randn(steps, stages, generator=g, dtype=torch.float64).tolist()
    s = [[scale[i], *(float(v) for v in torch.rand(stages - 1, generator=g) + 0.5)] for i in range(steps)]
    t = torch.rand(steps, stages, generator=g, dtype=torch.float64).tolist()
    solver = BespokeSolver(
        BespokeParams(base=base, h=p.h, t=t, dt=rand(), s=s, ds=rand(), scale=scale), info={"note": "x"}
    )
    path = solver.save(tmp_path_factory.mktemp("b") / "solver.json")
    loaded = BespokeSolver.load(path)
    assert loaded == solver and loaded.info == {"note": "x"}
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    grid = [i / steps for i in range(steps + 1)]
    assert torch.equal(loaded.solve(mixture, x0, grid).x, solver.solve(mixture, x0, grid).x)
    # Its identity in evaluation records is its coefficients: two fits never pass for each other.
    from flowvla.io import jsonable

    record = json.loads(json.dumps(jsonable({"solver": loaded})))
    assert record["solver"] == loaded.to_dict() and record != jsonable(
        {"solver": BespokeSolver.identity(base, steps)}
    )


def test_bad_arguments_name_the_argument(tmp_path, mixture):
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="base"):
        fit_bespoke_solver(mixture, x0, base="rk45", steps=2)
    with pytest.raises(ValueError, match="steps"):
        fit_bespoke_solver(mixture, x0, steps=0)
    with pytest.raises(ValueError, match="reference"):
        fit_bespoke_solver(mixture, x0, steps=2, reference=torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="init_grid"):
        fit_bespoke_solver(mixture, x0, steps=2, init_grid=[0.0, 0.5, 0.9])
    with pytest.raises(ValueError, match="init_grid"):
        fit_bespoke_solver(mixture, x0, steps=3, init_grid=[0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="lr"):
        fit_bespoke_solver(mixture, x0, steps=2, lr=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        fit_bespoke_solver(mixture, x0, steps=2, batch_size=5)
    solver = BespokeSolver.identity("euler", 2)
    with pytest.raises(ValueError, match=r"grid.*2 steps"):
        solver.solve(mixture, x0, [0.0, 0.3, 0.6, 1.0])
    p = BespokeParams.identity("euler", [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="scale"):
        BespokeParams(**{**p.__dict__, "scale": [1.0, -1.0, 1.0]})
    with pytest.raises(ValueError, match="dt"):
        BespokeParams(**{**p.__dict__, "dt": [[1.0]]})
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"times": [0.0, 1.0]}))
    with pytest.raises(ValueError, match="path"):
        BespokeSolver.load(path)


def test_predict_action_samples_with_a_bespoke_solver():
    from tests.policy.helpers import make_batch, tiny_policy

    policy = tiny_policy()
    batch = make_batch()
    solver = BespokeSolver.identity("euler", 3)
    actions, info = policy.predict_action(batch, seed=0, solver=solver, steps=3)
    euler, _ = policy.predict_action(batch, seed=0, solver="euler", steps=3)
    assert torch.equal(actions, euler)
    assert info["nfe"] == 3 and info["solver"] == "BespokeSolver"
    with pytest.raises(ValueError, match="steps=3"):
        policy.predict_action(batch, seed=0, solver=solver, steps=2)
