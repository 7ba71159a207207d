"""Time grids fitted to a velocity field: few-step sampling where this field needs the steps.

A fixed-step solver's error at a handful of steps depends mostly on *where* the steps fall. For
a given field (a trained policy head, typically with its conditioning drawn from real
observations) [`fit_time_grid`][flowvla.solvers.grid_fit.fit_time_grid] moves the interior grid times to
minimise the endpoint error against a fine reference solve on a few fitting samples. The result is a plain
list of times, saved as JSON and reused at every ``predict_action``: the fit is offline, sampling costs
nothing extra.

What to minimise matters on a *learned* field. By default the fit matches the exact ODE solution
of the field (a fine reference solve), which is right when the field is exact. A learned field
is not, and a coarse solver's bias can land closer to the data than the exact solution of the
learned ODE does (``examples/toy_flow_policy.py`` shows it); pass ``score`` to fit the grid to a
task metric of the samples instead.

The search is coordinate descent: each sweep moves every interior time ``t_i`` within
``(t_{i-1}, t_{i+1})`` by golden-section search on the endpoint RMS error, starting from the best
of a few named grids. It treats the solver as a black box, so it works for every fixed-step
solver (including the multistep ones) without differentiating through the field.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from flowvla.io import write_json_atomic
from flowvla.solvers.adaptive import DormandPrince54Solver
from flowvla.solvers.base import Solver, VelocityFn, as_time_list
from flowvla.solvers.grids import grid_times
from flowvla.solvers.registry import create_solver
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["FittedGrid", "fit_time_grid"]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

DEFAULT_STARTS: dict[str, dict] = {"uniform": {}, "shifted": {"shift": 3.0}, "cosine": {}}


@dataclass(frozen=True)
class FittedGrid:
    """A time grid fitted to one field and one solver.

    Attributes:
        solver: the solver's registry name the grid was fitted for.
        times: ``steps + 1`` increasing times from 0 to 1.
        fit_error: the minimised score (default: endpoint RMS error to the reference) on the
            fitting samples with ``times``.
        start: the named grid the search started from, and ``start_errors`` those of every start.
        solves: solver runs the fit spent.
    """

    solver: str
    times: list[float]
    fit_error: float
    start: str
    start_errors: dict[str, float] = field(default_factory=dict)
    solves: int = 0

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @typechecked
    def tensor(self) -> Float[Tensor, " G"]:
        """The times as a float64 tensor, for ``solver.solve(fn, x0, grid.tensor())``."""
        return torch.tensor(self.times, dtype=torch.float64)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the grid as JSON (atomically)."""
        return write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FittedGrid:
        """Read a grid written by [`save`][flowvla.solvers.grid_fit.FittedGrid.save]."""
        data = json.loads(Path(path).read_text())
        grid = cls(**data)
        times = as_time_list(grid.times, name=f"path {path}")
        if times[0] != 0.0 or times[-1] != 1.0 or times[1] < times[0]:
            raise ValueError(f"path: {path} does not hold increasing times from 0 to 1")
        return grid


def _rms(a: Tensor, b: Tensor) -> float:
    return float((a.to(b.dtype) - b).square().mean().sqrt())


@typechecked
def fit_time_grid(
    velocity_fn: VelocityFn,
    x0: Float[Tensor, "..."],
    *,
    solver: str | Solver,
    steps: int,
    reference: Float[Tensor, "..."] | None = None,
    reference_solver: Solver | None = None,
    score: Callable[[Tensor], float] | None = None,
    starts: dict[str, dict] | None = None,
    sweeps: int = 4,
    line_search_evals: int = 10,
    min_gap: float = 1e-3,
    rel_tol: float = 1e-3,
    **fn_kwargs: object,
) -> FittedGrid:
    """Fit the ``steps + 1`` times of ``solver`` to ``velocity_fn`` (see module docs).

    Args:
        velocity_fn: the field, ``velocity_fn(x, t, **fn_kwargs)``.
        x0: fitting noise ``[*B]`` (a few hundred samples; hold out others to check the fit).
        solver: a registered solver name or instance (fixed-step).
        steps: number of steps of the grid.
        reference: the exact ``x(1)`` for ``x0``; if omitted, computed by ``reference_solver``
            (default: Dormand–Prince 5(4) at ``atol = rtol = 1e-7``) in ``x0``'s dtype.
        reference_solver: the solver that computes ``reference`` when it is not given.
        score: ``score(x1) -> float`` (lower is better) to minimise *instead of* the distance to
            the reference -- e.g. a task metric of the sampled chunks. On a learned field the exact
            ODE solution is not always the best sample (see the notes in the module docs).
        starts: named grids to start from (``{name: grid_kwargs}``); the best one is refined.
        sweeps: maximum coordinate-descent sweeps over the interior times.
        line_search_evals: golden-section evaluations per coordinate.
        min_gap: smallest step allowed.
        rel_tol: stop when a sweep improves the error by less than this fraction.
    """
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps}")
    if min_gap * steps >= 1.0:
        raise ValueError(f"min_gap: {min_gap} x {steps} steps does not fit in [0, 1]")
    solver = create_solver(solver)
    if getattr(solver, "tableau", None) is not None and getattr(solver.tableau, "b_low", None) is not None:
        raise ValueError("solver: grid fitting needs a fixed-step solver, not an adaptive one")
    if score is not None and reference is not None:
        raise ValueError("score: pass either a score or a reference, not both")
    if score is None:
        if reference is None:
            ref_solver = reference_solver or DormandPrince54Solver(atol=1e-7, rtol=1e-7, max_nfe=100_000)
            with torch.no_grad():
                reference = ref_solver.solve(velocity_fn, x0, [0.0, 1.0], **fn_kwargs).x
        elif reference.shape != x0.shape:
            raise ValueError(f"reference: expected shape {tuple(x0.shape)}, got {tuple(reference.shape)}")
        target = reference

        def score(x1: Tensor) -> float:
            return _rms(x1, target)

    solves = 0

    def error(times: Sequence[float]) -> float:
        nonlocal solves
        solves += 1
        with torch.no_grad():
            return float(score(solver.solve(velocity_fn, x0, list(times), **fn_kwargs).x))

    start_errors = {}
    for name, kwargs in (starts or DEFAULT_STARTS).items():
        start_errors[name] = error(grid_times(name, steps, **kwargs))
    start = min(start_errors, key=start_errors.get)
    times = grid_times(start, steps, **(starts or DEFAULT_STARTS)[start])
    best = start_errors[start]

    for _ in range(sweeps):
        before = best
        for i in range(1, steps):
            lo, hi = times[i - 1] + min_gap, times[i + 1] - min_gap
            if hi <= lo:
                continue

            def at(u: float, i: int = i) -> float:
                trial = list(times)
                trial[i] = u
                return error(trial)

            # Golden-section search on [lo, hi], keeping the current point if nothing beats it.
            a, b = lo, hi
            c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
            fc, fd = at(c), at(d)
            for _ in range(max(0, line_search_evals - 2)):
                if fc < fd:
                    b, d, fd = d, c, fc
                    c = b - _GOLDEN * (b - a)
                    fc = at(c)
                else:
                    a, c, fc = c, d, fd
                    d = a + _GOLDEN * (b - a)
                    fd = at(d)
            u, fu = (c, fc) if fc < fd else (d, fd)
            if fu < best:
                times[i], best = u, fu
        if before - best <= rel_tol * before:
            break
    return FittedGrid(
        solver=solver.name,
        times=[float(t) for t in times],
        fit_error=best,
        start=start,
        start_errors=start_errors,
        solves=solves,
    )
