"""Time grids on ``[0, 1]`` (``t = 0`` noise, ``t = 1`` data): where the solver spends its steps.

A flow field for multimodal actions bends early (near ``t = 0`` the sample commits to a mode)
and late (near ``t = 1`` narrow modes sharpen); a warped grid puts steps there. Every grid
returns ``steps + 1`` strictly increasing float64 times with ``grid[0] = 0`` and ``grid[-1] = 1``.
The times are computed in Python floats ([`grid_times`][flowvla.solvers.grids.grid_times]), so building a grid
inside a ``torch.compile``'d sampler costs no traced tensor op."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flowvla.deprecation import deprecated_alias
from flowvla.typing import Float, Tensor, typechecked

__all__ = [
    "GRIDS",
    "cosine_grid",
    "create_grid",
    "grid_times",
    "make_grid",
    "power_grid",
    "shifted_grid",
    "uniform_grid",
]


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}")


def _unit(steps: int) -> list[float]:
    _check_steps(steps)
    return [i / steps for i in range(steps + 1)]


def _uniform(steps: int, t0: float = 0.0, t1: float = 1.0) -> list[float]:
    if t0 == t1:
        raise ValueError("t0, t1: the interval must not be empty")
    return [t0 + (t1 - t0) * u for u in _unit(steps)]


def _shifted(steps: int, shift: float = 3.0) -> list[float]:
    if shift <= 0:
        raise ValueError(f"shift: must be positive, got {shift}")
    sigmas = [1.0 - u for u in _unit(steps)]
    return [1.0 - shift * s / (1.0 + (shift - 1.0) * s) for s in sigmas]


def _power(steps: int, power: float = 2.0) -> list[float]:
    if power <= 0:
        raise ValueError(f"power: must be positive, got {power}")
    return [u**power for u in _unit(steps)]


def _cosine(steps: int) -> list[float]:
    return [0.5 * (1.0 - math.cos(math.pi * u)) for u in _unit(steps)]


GRIDS: dict[str, Callable[..., list[float]]] = {
    "uniform": _uniform,
    "shifted": _shifted,
    "power": _power,
    "cosine": _cosine,
}
"""Named grids as functions ``(steps, **kwargs) -> list[float]``."""


def grid_times(kind: str, steps: int, **kwargs) -> list[float]:
    """The times of a named grid as Python floats (what solvers consume)."""
    if kind not in GRIDS:
        raise ValueError(f"grid: unknown grid {kind!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[kind](steps, **kwargs)


@typechecked
def create_grid(kind: str, steps: int, **kwargs) -> Float[Tensor, " G"]:
    """A named grid (``"uniform"``, ``"shifted"``, ``"power"``, ``"cosine"``) as a float64 tensor."""
    return torch.tensor(grid_times(kind, steps, **kwargs), dtype=torch.float64)


@typechecked
def uniform_grid(steps: int, t0: float = 0.0, t1: float = 1.0) -> Float[Tensor, " G"]:
    """``steps`` equal steps from ``t0`` to ``t1``."""
    return create_grid("uniform", steps, t0=t0, t1=t1)


@typechecked
def shifted_grid(steps: int, shift: float = 3.0) -> Float[Tensor, " G"]:
    """The SD3 timestep shift, in flowvla's time.

    With noise level ``sigma = 1 - t`` on a uniform grid, ``sigma' = shift sigma / (1 + (shift - 1) sigma)``.
    ``shift > 1`` spends more steps near the noise (``t = 0``); ``shift < 1`` near the data.
    """
    return create_grid("shifted", steps, shift=shift)


@typechecked
def power_grid(steps: int, power: float = 2.0) -> Float[Tensor, " G"]:
    """``t = u^power`` on a uniform ``u``: ``power > 1`` is dense near noise, ``< 1`` near data."""
    return create_grid("power", steps, power=power)


@typechecked
def cosine_grid(steps: int) -> Float[Tensor, " G"]:
    """``t = (1 - cos(pi u)) / 2``: dense at both ends, where mixture fields bend."""
    return create_grid("cosine", steps)


make_grid = deprecated_alias("flowvla.solvers.make_grid", create_grid)
