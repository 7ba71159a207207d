"""flowvla: composable, typed PyTorch modules for flow-matching vision-language-action policies.

The flow-matching core is re-exported here; components with optional dependencies
(``flowvla.envs``, ``flowvla.data``) are imported by their module path.
"""

__version__ = "0.1.0.dev0"

from flowvla.flow import (
    BetaTimeSampler,
    FlowMatchingLoss,
    FlowMatchingObjective,
    GaussianMixtureFlow,
    LinearPath,
    LogitNormalTimeSampler,
    UniformTimeSampler,
    from_reverse_time_field,
    to_reverse_time_field,
)
from flowvla.solvers import (
    FittedGrid,
    ODESolution,
    Solver,
    available_solvers,
    fit_time_grid,
    get_solver,
    integrate,
    make_grid,
)
from flowvla.typing import set_typecheck

__all__ = [
    "BetaTimeSampler",
    "FittedGrid",
    "FlowMatchingLoss",
    "FlowMatchingObjective",
    "GaussianMixtureFlow",
    "LinearPath",
    "LogitNormalTimeSampler",
    "ODESolution",
    "Solver",
    "UniformTimeSampler",
    "__version__",
    "available_solvers",
    "fit_time_grid",
    "from_reverse_time_field",
    "get_solver",
    "integrate",
    "make_grid",
    "set_typecheck",
    "to_reverse_time_field",
]
