"""ODE solvers for flow fields: ``solver.solve(velocity_fn, x0, grid) -> ODESolution``.

| name | class | order | NFE per step |
|---|---|---|---|
| ``euler`` | :class:`EulerSolver` | 1 | 1 |
| ``midpoint`` | :class:`MidpointSolver` | 2 | 2 |
| ``heun`` | :class:`HeunSolver` | 2 | 2 |
| ``rk4`` | :class:`RK4Solver` | 4 | 4 |
| ``ab2`` | :class:`AdamsBashforth2Solver` | 2 | 1 |
| ``dpm++2m`` | :class:`DPMSolverPlusPlus2M` | 2 | 1 |
| ``dopri5`` | :class:`DormandPrince54Solver` | 5 (adaptive) | 6 |
| ``bosh3`` | :class:`BogackiShampine32Solver` | 3 (adaptive) | 3 |

Time grids: :func:`uniform_grid`, :func:`shifted_grid` (SD3 shift), :func:`power_grid`,
:func:`cosine_grid`, and :func:`fit_time_grid`, which fits the step locations to a given field.
"""

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
from flowvla.solvers.dpm_solver import DPMSolverPlusPlus2M
from flowvla.solvers.grid_fit import FittedGrid, fit_time_grid
from flowvla.solvers.grids import (
    GRIDS,
    cosine_grid,
    grid_times,
    make_grid,
    power_grid,
    shifted_grid,
    uniform_grid,
)
from flowvla.solvers.registry import available_solvers, get_solver, integrate, register_solver
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
    "Solver",
    "VelocityFn",
    "available_solvers",
    "cosine_grid",
    "fit_time_grid",
    "get_solver",
    "grid_times",
    "integrate",
    "make_grid",
    "power_grid",
    "register_solver",
    "shifted_grid",
    "uniform_grid",
]
