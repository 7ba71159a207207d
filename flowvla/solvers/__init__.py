"""ODE solvers for flow fields: ``solver.solve(velocity_fn, x0, grid) -> ODESolution``.

| name | class | order | NFE per step |
|---|---|---|---|
| ``euler`` | [`EulerSolver`][flowvla.solvers.runge_kutta.EulerSolver] | 1 | 1 |
| ``midpoint`` | [`MidpointSolver`][flowvla.solvers.runge_kutta.MidpointSolver] | 2 | 2 |
| ``heun`` | [`HeunSolver`][flowvla.solvers.runge_kutta.HeunSolver] | 2 | 2 |
| ``rk4`` | [`RK4Solver`][flowvla.solvers.runge_kutta.RK4Solver] | 4 | 4 |
| ``ab2`` | [`AdamsBashforth2Solver`][flowvla.solvers.adams_bashforth.AdamsBashforth2Solver] | 2 | 1 |
| ``dpm++2m`` | [`DPMSolverPlusPlus2M`][flowvla.solvers.dpm_solver.DPMSolverPlusPlus2M] | 2 | 1 |
| ``dopri5`` | [`DormandPrince54Solver`][flowvla.solvers.adaptive.DormandPrince54Solver] | 5 (adaptive) | 6 |
| ``bosh3`` | [BogackiShampine32Solver][flowvla.solvers.adaptive.BogackiShampine32Solver] | 3 (adaptive) | 3 |
| ``shortcut`` | [`ShortcutSolver`][flowvla.solvers.shortcut.ShortcutSolver] (a shortcut head) | - | 1 |

Time grids: [`uniform_grid`][flowvla.solvers.grids.uniform_grid],
[`shifted_grid`][flowvla.solvers.grids.shifted_grid] (SD3 shift),
[`power_grid`][flowvla.solvers.grids.power_grid], [`cosine_grid`][flowvla.solvers.grids.cosine_grid], and
[`fit_time_grid`][flowvla.solvers.grid_fit.fit_time_grid], which fits the step locations to a given field.

Few-step sampling: [`fit_bespoke_solver`][flowvla.solvers.bespoke.fit_bespoke_solver] learns a
[`BespokeSolver`][flowvla.solvers.bespoke.BespokeSolver] (per-step times and scales of a base Euler/midpoint
step) for one field: 1-2 NFE at the error of Euler with 10."""

from flowvla.solvers.adams_bashforth import AdamsBashforth2Solver
from flowvla.solvers.adaptive import (
    BOGACKI_SHAMPINE_32,
    DORMAND_PRINCE_54,
    AdaptiveRungeKutta,
    BogackiShampine32Solver,
    DormandPrince54Solver,
    NFEBudgetExceeded,
)
from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.solvers.bespoke import BespokeParams, BespokeSolver, fit_bespoke_solver
from flowvla.solvers.dpm_solver import DPMSolverPlusPlus2M
from flowvla.solvers.grid_fit import FittedGrid, fit_time_grid
from flowvla.solvers.grids import (
    GRIDS,
    cosine_grid,
    create_grid,
    grid_times,
    make_grid,
    power_grid,
    shifted_grid,
    uniform_grid,
)
from flowvla.solvers.registry import (
    available_solvers,
    create_solver,
    get_solver,
    get_solver_class,
    integrate,
    register_solver,
)
from flowvla.solvers.runge_kutta import (
    EULER,
    HEUN,
    MIDPOINT,
    RK4,
    ButcherTableau,
    EulerSolver,
    ExplicitRungeKutta,
    HeunSolver,
    MidpointSolver,
    RK4Solver,
)
from flowvla.solvers.shortcut import ShortcutSolver

__all__ = [
    "BOGACKI_SHAMPINE_32",
    "DORMAND_PRINCE_54",
    "EULER",
    "GRIDS",
    "HEUN",
    "MIDPOINT",
    "RK4",
    "AdamsBashforth2Solver",
    "AdaptiveRungeKutta",
    "BespokeParams",
    "BespokeSolver",
    "BogackiShampine32Solver",
    "ButcherTableau",
    "DPMSolverPlusPlus2M",
    "DormandPrince54Solver",
    "EulerSolver",
    "ExplicitRungeKutta",
    "FittedGrid",
    "HeunSolver",
    "MidpointSolver",
    "NFEBudgetExceeded",
    "ODESolution",
    "RK4Solver",
    "ShortcutSolver",
    "Solver",
    "VelocityFn",
    "available_solvers",
    "cosine_grid",
    "create_grid",
    "create_solver",
    "fit_bespoke_solver",
    "fit_time_grid",
    "get_solver",
    "get_solver_class",
    "grid_times",
    "integrate",
    "make_grid",
    "power_grid",
    "register_solver",
    "shifted_grid",
    "uniform_grid",
]
