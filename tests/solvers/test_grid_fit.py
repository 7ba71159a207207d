"""Fitted time grids: valid, never worse than their start, better on held-out samples, reusable."""

import itertools

import pytest
import torch

from flowvla.solvers import FittedGrid, create_solver, fit_time_grid, integrate


def _rms(a, b):
    return float((a - b).square().mean().sqrt())


@pytest.fixture(scope="module")
def stiff_mixture():
    """Two narrow modes: the field bends early (mode choice) and late (sharpening)."""
    from flowvla.flow import GaussianMixtureFlow

    means = torch.tensor([[-1.0, 0.5, 0.0], [1.0, -0.5, 0.3]], dtype=torch.float64)
    return GaussianMixtureFlow(means, torch.tensor([0.05, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("solver, steps", [("euler", 6), ("ab2", 6), ("heun", 3), ("dpm++2m", 5)])
def test_fit_is_valid_and_beats_its_start_on_held_out_samples(stiff_mixture, solver, steps):
    fit_x0 = torch.randn(128, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fitted = fit_time_grid(stiff_mixture, fit_x0, solver=solver, steps=steps, sweeps=3)
    t = fitted.times
    assert len(t) == steps + 1 and t[0] == 0.0 and t[-1] == 1.0
    assert all(b - a >= 1e-3 - 1e-12 for a, b in itertools.pairwise(t))
    assert fitted.fit_error <= min(fitted.start_errors.values())

    test_x0 = torch.randn(512, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = integrate(stiff_mixture, test_x0, solver="rk4", steps=1000).x
    uniform = _rms(integrate(stiff_mixture, test_x0, solver=solver, steps=steps).x, ref)
    tuned = _rms(create_solver(solver).solve(stiff_mixture, test_x0, fitted.tensor()).x, ref)
    assert tuned < 0.9 * uniform, f"{solver}: fitted {tuned:.4f} vs uniform {uniform:.4f}"


def test_save_load_round_trip(tmp_path, stiff_mixture):
    x0 = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fitted = fit_time_grid(stiff_mixture, x0, solver="euler", steps=4, sweeps=1)
    path = fitted.save(tmp_path / "grid.json")
    assert FittedGrid.load(path) == fitted
    path.write_text(path.read_text().replace("1.0\n", "0.9\n"))
    with pytest.raises(ValueError, match="increasing times"):
        FittedGrid.load(path)


def test_fit_arguments_are_validated(stiff_mixture):
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="adaptive"):
        fit_time_grid(stiff_mixture, x0, solver="dopri5", steps=4)
    with pytest.raises(ValueError, match="reference"):
        fit_time_grid(
            stiff_mixture, x0, solver="euler", steps=4, reference=torch.zeros(4, 2, dtype=torch.float64)
        )
    with pytest.raises(ValueError, match="min_gap"):
        fit_time_grid(stiff_mixture, x0, solver="euler", steps=4, min_gap=0.3)


def test_custom_score_replaces_the_reference_distance(stiff_mixture):
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = integrate(stiff_mixture, x0, solver="rk4", steps=500).x
    default = fit_time_grid(stiff_mixture, x0, solver="euler", steps=4, reference=ref, sweeps=2)
    custom = fit_time_grid(
        stiff_mixture, x0, solver="euler", steps=4, score=lambda x1: _rms(x1, ref), sweeps=2
    )
    assert custom.times == default.times and custom.fit_error == default.fit_error
    # A different objective moves the grid: here, pull samples towards the first mode's mean.
    mode = stiff_mixture.means[0]
    pulled = fit_time_grid(
        stiff_mixture,
        x0,
        solver="euler",
        steps=4,
        score=lambda x1: float((x1 - mode).square().mean()),
        sweeps=2,
    )
    assert pulled.times != default.times
    with pytest.raises(ValueError, match="either a score or a reference"):
        fit_time_grid(stiff_mixture, x0, solver="euler", steps=4, reference=ref, score=lambda x1: 0.0)
