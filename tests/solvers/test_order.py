"""Measured convergence orders, polynomial exactness and adaptive tolerance.

Order is measured as the least-squares slope of log(error) against log(step size) over
N = 32..256 uniform steps on a 3-mode mixture field (float64, reference: RK4 with 4096 steps).
The error is C h^p (1 + O(h)), so over this range the slope sits within a few hundredths of p
(measured: Euler 1.03, midpoint 1.96, Heun 1.99, RK4 3.95, AB2 1.99). A tolerance of 0.15
leaves room for that pre-asymptotic bias while still telling order p from p - 1 or p + 1.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.solvers import (
    AdamsBashforth2Solver,
    BogackiShampine32Solver,
    DormandPrince54Solver,
    DPMSolverPlusPlus2M,
    EulerSolver,
    HeunSolver,
    MidpointSolver,
    NFEBudgetExceeded,
    RK4Solver,
    uniform_grid,
)

STEPS = [32, 64, 128, 256]


def _rms(a, b):
    return float((a - b).square().mean().sqrt())


def _slope(solver, field, x0, ref, t0=0.0, t1=1.0):
    errs = [_rms(solver.solve(field, x0, uniform_grid(n, t0, t1)).x, ref) for n in STEPS]
    return float(np.polyfit(np.log([(t1 - t0) / n for n in STEPS]), np.log(errs), 1)[0])


@pytest.mark.parametrize(
    "solver", [EulerSolver(), MidpointSolver(), HeunSolver(), RK4Solver(), AdamsBashforth2Solver()], ids=repr
)
def test_measured_order_matches_nominal(solver, mixture, mixture_x0, mixture_reference):
    slope = _slope(solver, mixture, mixture_x0, mixture_reference)
    assert abs(slope - solver.order) < 0.15, f"{solver}: measured order {slope:.3f}, nominal {solver.order}"


@pytest.mark.parametrize("final_step", ["euler", "extrapolate"])
def test_dpm_solver_order(final_step, mixture, mixture_x0, mixture_reference):
    solver = DPMSolverPlusPlus2M(final_step)
    # Away from t = 0 the log-SNR steps shrink with h and the method is cleanly second order.
    ref = RK4Solver().solve(mixture, mixture_x0, uniform_grid(2048, 0.1, 1.0)).x
    assert abs(_slope(solver, mixture, mixture_x0, ref, 0.1, 1.0) - 2) < 0.15
    # From t = 0 a uniform t-grid has log-SNR steps of O(1) near the noise (lambda_2 - lambda_1 =
    # log 2, ...), which adds a log factor: error ~ h^2 log(1/h), apparent slope 2 - 1/ln(1/h) ~ 1.8.
    assert 1.7 < _slope(solver, mixture, mixture_x0, mixture_reference) < 2.15


@given(
    coefs=st.lists(st.floats(-3, 3), min_size=4, max_size=4),
    cuts=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=6, unique=True),
)
@pytest.mark.parametrize("solver", [EulerSolver(), MidpointSolver(), HeunSolver(), RK4Solver()], ids=repr)
def test_runge_kutta_is_exact_on_polynomials_below_its_order(solver, coefs, cuts):
    """A method of order p integrates v(t) = sum_{k<p} c_k t^k exactly, on any grid."""
    c = coefs[: solver.order]
    grid = [0.0, *sorted(cuts), 1.0]
    x0 = torch.randn(3, 2, dtype=torch.float64)

    def field(x, t):
        return torch.full_like(x, sum(ck * float(t) ** k for k, ck in enumerate(c)))

    exact = x0 + sum(ck / (k + 1) for k, ck in enumerate(c))
    torch.testing.assert_close(solver.solve(field, x0, grid).x, exact, rtol=0, atol=1e-12)


def test_euler_is_exact_on_constant_velocity():
    x0 = torch.randn(4, 16, 7)
    v = torch.randn(4, 16, 7)
    out = EulerSolver().solve(lambda x, t: v, x0, [0.0, 0.1, 0.5, 0.55, 1.0])
    torch.testing.assert_close(out.x, x0 + v)


@pytest.mark.parametrize("make", [DormandPrince54Solver, BogackiShampine32Solver])
def test_adaptive_solver_meets_its_tolerance(make, mixture, mixture_x0, mixture_reference):
    errors, nfes = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = make(atol=tol, rtol=tol, max_nfe=20_000).solve(mixture, mixture_x0, [0.0, 1.0])
        errors.append(_rms(sol.x, mixture_reference))
        nfes.append(sol.nfe)
        # Each accepted step keeps its local error below atol + rtol |x|; on this non-expanding
        # flow the global error is at most their sum over the accepted steps.
        bound = sol.steps * (tol + tol * float(mixture_reference.square().mean().sqrt()))
        assert errors[-1] <= bound, f"tol {tol}: global error {errors[-1]:.2e} > {bound:.2e}"
    assert errors[0] > errors[1] > errors[2]
    assert nfes[0] < nfes[1] < nfes[2]


def test_adaptive_solver_passes_through_grid_times(mixture, mixture_x0):
    grid = [0.0, 0.3, 0.35, 0.8, 1.0]
    sol = DormandPrince54Solver(atol=1e-9, rtol=1e-9).solve(mixture, mixture_x0, grid, return_trajectory=True)
    for i, t in enumerate(grid):
        ref = RK4Solver().solve(mixture, mixture_x0, uniform_grid(1024, 0.0, t)).x if t > 0 else mixture_x0
        assert _rms(sol.trajectory[i], ref) < 1e-8
    assert torch.equal(sol.trajectory[-1], sol.x)


def test_adaptive_budget(mixture, mixture_x0):
    strict = DormandPrince54Solver(atol=1e-10, rtol=1e-10, max_nfe=40)
    with pytest.raises(NFEBudgetExceeded, match="max_nfe"):
        strict.solve(mixture, mixture_x0, [0.0, 1.0])
    finishing = DormandPrince54Solver(atol=1e-10, rtol=1e-10, max_nfe=40, on_budget="finish")
    sol = finishing.solve(mixture, mixture_x0, [0.0, 0.5, 1.0], return_trajectory=True)
    assert sol.nfe <= 40 and sol.budget_exhausted
    assert torch.isfinite(sol.x).all() and torch.equal(sol.trajectory[-1], sol.x)
    assert not math.isnan(float(sol.trajectory[1].sum()))
