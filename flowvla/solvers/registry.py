"""A registry so a string (``"heun"``) picks a solver, and [`integrate`][flowvla.solvers.registry.integrate],
the one-call sampler."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from flowvla.deprecation import deprecated_alias
from flowvla.solvers.adams_bashforth import AdamsBashforth2Solver
from flowvla.solvers.adaptive import BogackiShampine32Solver, DormandPrince54Solver
from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.solvers.dpm_solver import DPMSolverPlusPlus2M
from flowvla.solvers.grids import grid_times
from flowvla.solvers.runge_kutta import EulerSolver, HeunSolver, MidpointSolver, RK4Solver
from flowvla.solvers.shortcut import ShortcutSolver
from flowvla.typing import Float, Tensor, typechecked

__all__ = [
    "available_solvers",
    "create_solver",
    "get_solver",
    "get_solver_class",
    "integrate",
    "register_solver",
]

_REGISTRY: dict[str, Callable[..., Solver]] = {
    "euler": EulerSolver,
    "midpoint": MidpointSolver,
    "heun": HeunSolver,
    "rk4": RK4Solver,
    "ab2": AdamsBashforth2Solver,
    "dpm++2m": DPMSolverPlusPlus2M,
    "dopri5": DormandPrince54Solver,
    "bosh3": BogackiShampine32Solver,
    "shortcut": ShortcutSolver,
}


def register_solver(name: str, factory: Callable[..., Solver], *, overwrite: bool = False) -> None:
    """Make ``create_solver(name, **kwargs)`` return ``factory(**kwargs)``."""
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"name: solver {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def available_solvers() -> list[str]:
    """Names accepted by [`create_solver`][flowvla.solvers.registry.create_solver]."""
    return sorted(_REGISTRY)


def get_solver_class(name: str) -> Callable[..., Solver]:
    """The class (or registered factory) of the solver ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"solver: unknown solver {name!r}; choose one of {available_solvers()}")
    return _REGISTRY[name]


def create_solver(solver: str | Solver, **kwargs) -> Solver:
    """A solver instance from its registered name (``kwargs`` go to its constructor), or ``solver`` itself."""
    if isinstance(solver, Solver):
        if kwargs:
            raise ValueError("kwargs: constructor arguments only apply when the solver is given by name")
        return solver
    return get_solver_class(solver)(**kwargs)


get_solver = deprecated_alias("flowvla.solvers.get_solver", create_solver)


@typechecked
def integrate(
    velocity_fn: VelocityFn,
    x0: Float[Tensor, "..."],
    *,
    solver: str | Solver = "heun",
    steps: int = 10,
    grid: str | Tensor | Sequence[float] = "uniform",
    grid_kwargs: dict | None = None,
    return_trajectory: bool = False,
    **fn_kwargs: object,
) -> ODESolution:
    """Sample the flow from ``x0`` at ``t = 0`` to ``t = 1`` in one call.

    Args:
        velocity_fn: ``velocity_fn(x, t, **fn_kwargs) -> v``.
        x0: initial noise ``[*B]``.
        solver: a registered name ([`available_solvers`][flowvla.solvers.registry.available_solvers]) or a
            [`Solver`][flowvla.solvers.base.Solver].
        steps: number of steps of a named grid (ignored when ``grid`` holds explicit times).
        grid: a grid name (see [`flowvla.solvers.grids`][flowvla.solvers.grids]) or explicit times.
        grid_kwargs: extra arguments of the named grid (e.g. ``{"shift": 3.0}``).
    """
    if isinstance(grid, str):
        grid = grid_times(grid, steps, **(grid_kwargs or {}))
    elif grid_kwargs:
        raise ValueError("grid_kwargs: only apply to a named grid")
    return create_solver(solver).solve(
        velocity_fn, x0, grid, return_trajectory=return_trajectory, **fn_kwargs
    )
