"""Cross-checks against torchdiffeq, an independent implementation of the same methods."""

import pytest
import torch

from flowvla.solvers import (
    ButcherTableau,
    DormandPrince54Solver,
    EulerSolver,
    ExplicitRungeKutta,
    MidpointSolver,
)

torchdiffeq = pytest.importorskip("torchdiffeq")


# torchdiffeq's "rk4" is Kutta's 3/8 rule; through the generic tableau solver it must be the same
# arithmetic as theirs.
THREE_EIGHTHS = ButcherTableau(
    a=((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    b=(1 / 8, 3 / 8, 3 / 8, 1 / 8),
    c=(0.0, 1 / 3, 2 / 3, 1.0),
    order=4,
)


@pytest.mark.parametrize(
    "ours, method",
    [(EulerSolver(), "euler"), (MidpointSolver(), "midpoint"), (ExplicitRungeKutta(THREE_EIGHTHS), "rk4")],
    ids=["euler", "midpoint", "rk4-3/8"],
)
def test_fixed_step_methods_agree_with_torchdiffeq(ours, method, mixture, mixture_x0):
    grid = torch.tensor([0.0, 0.1, 0.15, 0.4, 0.7, 0.9, 1.0], dtype=torch.float64)
    x = ours.solve(mixture, mixture_x0, grid).x
    theirs = torchdiffeq.odeint(lambda t, y: mixture(y, t), mixture_x0, grid, method=method)[-1]
    torch.testing.assert_close(x, theirs, rtol=0, atol=1e-12)


def test_dopri5_agrees_with_torchdiffeq_at_tight_tolerance(mixture, mixture_x0, mixture_reference):
    ours = DormandPrince54Solver(atol=1e-9, rtol=1e-9).solve(mixture, mixture_x0, [0.0, 1.0]).x
    theirs = torchdiffeq.odeint(
        lambda t, x: mixture(x, t),
        mixture_x0,
        torch.tensor([0.0, 1.0], dtype=torch.float64),
        method="dopri5",
        atol=1e-9,
        rtol=1e-9,
    )[-1]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours, mixture_reference, rtol=0, atol=1e-7)
