"""The stepping contract every flowvla ODE solver follows.

A solver integrates ``dx/dt = velocity_fn(x, t, **fn_kwargs)`` from ``grid[0]`` to ``grid[-1]``:

* ``x`` is the state, any shape ``[*B]`` and any floating dtype; the returned state keeps it
  (the velocity is cast to the state dtype if the field returns another one).
* ``t`` is passed as a 0-dim tensor on the state's device, in float32 for low-precision states
  (bfloat16/float16 cannot resolve times near 1) and in the state dtype otherwise.
* Step coefficients are computed once per solve in float64 Python arithmetic, so a step costs only
  the field evaluations plus a few fused ``add`` kernels; nothing is allocated that the step does
  not need, and the loop has no host synchronisation (fixed-step solvers trace under
  ``torch.compile(fullgraph=True)``).
* ``**fn_kwargs`` reach the field unchanged on every call: pass a precomputed context / KV cache
  there.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from flowvla.flow.paths import VelocityFn
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["ODESolution", "Solver", "VelocityFn", "as_time_list", "time_dtype_for"]


@dataclass(frozen=True)
class ODESolution:
    """Result of [`Solver.solve`][flowvla.solvers.base.Solver.solve].

    Attributes:
        x: state at ``grid[-1]``, same shape/dtype/device as ``x0``.
        nfe: number of velocity evaluations spent.
        grid: the grid times as Python floats (``times`` gives them as a tensor).
        trajectory: ``[G, *x.shape]`` states at the grid times (``trajectory[0] = x0``), or ``None``.
        steps: accepted steps.
        rejected_steps: steps an adaptive solver rejected (0 for fixed-step solvers).
        budget_exhausted: an adaptive solver hit ``max_nfe`` and finished with a forced step.
    """

    x: Tensor
    nfe: int
    grid: tuple[float, ...]
    trajectory: Tensor | None = None
    steps: int = 0
    rejected_steps: int = 0
    budget_exhausted: bool = False

    @property
    def times(self) -> Tensor:
        """The grid, ``[G]`` float64 on the CPU."""
        return torch.tensor(self.grid, dtype=torch.float64)


@typechecked
def as_time_list(grid: Tensor | Sequence[float], name: str = "grid") -> list[float]:
    """Validate a time grid and return it as Python floats (one host copy per solve)."""
    if isinstance(grid, Tensor):
        if grid.dim() != 1:
            raise ValueError(f"{name}: expected a 1-D tensor of times, got shape {tuple(grid.shape)}")
        times = [float(v) for v in grid.detach().to("cpu", torch.float64).tolist()]
    else:
        times = [float(v) for v in grid]
    if len(times) < 2:
        raise ValueError(f"{name}: need at least 2 times (start and end), got {len(times)}")
    if not all(math.isfinite(v) for v in times):
        raise ValueError(f"{name}: times must be finite, got {times}")
    steps = [b - a for a, b in itertools.pairwise(times)]
    if not (all(h > 0 for h in steps) or all(h < 0 for h in steps)):
        raise ValueError(f"{name}: times must be strictly increasing or strictly decreasing, got {times}")
    return times


def time_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """dtype in which times reach the field: at least float32."""
    return torch.promote_types(dtype, torch.float32)


class Solver(ABC):
    """Base class: subclasses implement ``_solve`` over a validated list of times."""

    name: ClassVar[str] = "solver"
    order: ClassVar[int] = 1
    """Global order of accuracy in the step size."""

    @typechecked
    def solve(
        self,
        velocity_fn: VelocityFn,
        x0: Float[Tensor, "..."],
        grid: Tensor | Sequence[float],
        *,
        return_trajectory: bool = False,
        **fn_kwargs: object,
    ) -> ODESolution:
        """Integrate ``velocity_fn`` from ``x0`` at ``grid[0]`` to ``grid[-1]``.

        Args:
            velocity_fn: ``velocity_fn(x, t, **fn_kwargs) -> v`` with ``v.shape == x.shape``.
            x0: initial state ``[*B]`` (e.g. noise ``[B, H, A]`` at ``t = 0``).
            grid: times ``[G]``, strictly monotone; fixed-step solvers step between consecutive
                times, adaptive solvers pass through them (and report the state there).
            return_trajectory: also return the states at every grid time.
            **fn_kwargs: forwarded to every ``velocity_fn`` call (context, cache, ...).
        """
        times = as_time_list(grid)
        return self._solve(velocity_fn, x0, times, return_trajectory, fn_kwargs)

    @abstractmethod
    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution: ...

    @staticmethod
    def _evaluate(velocity_fn: VelocityFn, x: Tensor, t: Tensor, fn_kwargs: dict) -> Tensor:
        v = velocity_fn(x, t, **fn_kwargs)
        if v.shape != x.shape:
            raise ValueError(
                f"velocity_fn: returned shape {tuple(v.shape)} for a state of shape {tuple(x.shape)}; "
                "the velocity must have exactly the state's shape"
            )
        return v if v.dtype == x.dtype else v.to(x.dtype)

    @staticmethod
    def _time_tensors(values: list[float], like: Tensor) -> tuple[Tensor, ...]:
        """The times the field will see, as 0-dim tensors: one host->device copy, one unbind."""
        return torch.tensor(values, dtype=time_dtype_for(like.dtype), device=like.device).unbind(0)

    @staticmethod
    def _new_trajectory(x0: Tensor, times: list[float], enabled: bool) -> Tensor | None:
        if not enabled:
            return None
        traj = x0.new_empty((len(times), *x0.shape))
        traj[0] = x0
        return traj

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
