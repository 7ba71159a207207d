"""Explicit Runge–Kutta solvers from a Butcher tableau: Euler, midpoint, Heun, RK4.

One step of size ``h`` from ``(x, t)`` with ``s`` stages::

    k_j     = v(x + h * sum_{l<j} a_jl k_l,  t + c_j h)
    x_next  = x + h * sum_j b_j k_j

Any explicit tableau can be passed to [`ExplicitRungeKutta`][flowvla.solvers.runge_kutta.ExplicitRungeKutta];
the named solvers are instances of it. Cost: ``s`` field evaluations per step."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.typing import Tensor

__all__ = [
    "EULER",
    "HEUN",
    "MIDPOINT",
    "RK4",
    "ButcherTableau",
    "EulerSolver",
    "ExplicitRungeKutta",
    "HeunSolver",
    "MidpointSolver",
    "RK4Solver",
]


@dataclass(frozen=True)
class ButcherTableau:
    """Coefficients of an explicit Runge–Kutta method.

    Attributes:
        a: rows of the strictly lower-triangular matrix; row ``j`` has ``j`` entries.
        b: ``s`` weights of the solution, summing to 1.
        c: ``s`` stage times, ``c_j = sum_l a_jl`` (consistency), ``c_0 = 0``.
        order: global order of the method.
        b_low: weights of an embedded lower-order solution (adaptive pairs), or ``None``.
        order_low: order of the embedded solution.
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    b_low: tuple[float, ...] | None = None
    order_low: int | None = None

    def __post_init__(self) -> None:
        s = len(self.b)
        if len(self.c) != s or len(self.a) != s:
            raise ValueError(f"tableau: a, b, c must describe the same {s} stages")
        for j, row in enumerate(self.a):
            if len(row) != j:
                raise ValueError(
                    f"tableau: row {j} of a must have {j} entries (explicit method), got {len(row)}"
                )
            if not math.isclose(sum(row), self.c[j], abs_tol=1e-12):
                raise ValueError(f"tableau: c[{j}] = {self.c[j]} must equal the row sum of a, {sum(row)}")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-12):
            raise ValueError(f"tableau: b must sum to 1, got {sum(self.b)}")
        if self.b_low is not None:
            if len(self.b_low) != s or not math.isclose(sum(self.b_low), 1.0, abs_tol=1e-12):
                raise ValueError("tableau: b_low must have one weight per stage and sum to 1")
            if self.order_low is None:
                raise ValueError("tableau: order_low is required with b_low")

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def fsal(self) -> bool:
        """First-same-as-last: the last stage is evaluated at the step's solution."""
        return self.c[-1] == 1.0 and tuple(self.a[-1]) == tuple(self.b[:-1]) and self.b[-1] == 0.0


EULER = ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1)
MIDPOINT = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
HEUN = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)
RK4 = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)


def linear_combination(x: Tensor | None, coefs: tuple[float, ...], ks: list[Tensor]) -> Tensor:
    """``x + sum_j coefs[j] * ks[j]`` (just the sum when ``x`` is ``None``) in one new tensor.

    The first non-zero term allocates the result with a fused ``add`` (``mul`` without ``x``);
    later terms accumulate in place, which is autograd-safe because ``add`` saves no inputs for
    backward. With every coefficient 0 the result is ``x`` itself (zeros without ``x``).
    """
    out = None
    for coef, k in zip(coefs, ks, strict=False):
        if coef == 0.0:
            continue
        if out is not None:
            out.add_(k, alpha=coef)
        elif x is not None:
            out = torch.add(x, k, alpha=coef)
        else:
            out = torch.mul(k, coef)
    if out is None:
        return x if x is not None else torch.zeros_like(ks[0])
    return out


class ExplicitRungeKutta(Solver):
    """Fixed-step explicit Runge–Kutta solver for any
    [`ButcherTableau`][flowvla.solvers.runge_kutta.ButcherTableau]."""

    name = "rk"

    def __init__(self, tableau: ButcherTableau) -> None:
        self.tableau = tableau

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.tableau.order

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        tab = self.tableau
        steps = len(times) - 1
        hs = [times[i + 1] - times[i] for i in range(steps)]
        stage_t = self._time_tensors([times[i] + cj * hs[i] for i in range(steps) for cj in tab.c], x0)
        stage_coefs = [[tuple(h * a for a in row) for row in tab.a] for h in hs]
        step_coefs = [tuple(h * b for b in tab.b) for h in hs]
        traj = self._new_trajectory(x0, times, return_trajectory)
        x = x0
        for i in range(steps):
            ks: list[Tensor] = []
            for j in range(tab.stages):
                xs = linear_combination(x, stage_coefs[i][j], ks)
                ks.append(self._evaluate(velocity_fn, xs, stage_t[i * tab.stages + j], fn_kwargs))
            x = linear_combination(x, step_coefs[i], ks)
            if traj is not None:
                traj[i + 1] = x
        return ODESolution(
            x=x,
            nfe=steps * tab.stages,
            grid=tuple(times),
            trajectory=traj,
            steps=steps,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(order={self.order}, stages={self.tableau.stages})"


class EulerSolver(ExplicitRungeKutta):
    """Forward Euler: ``x += h v(x, t)``. Order 1, 1 NFE per step (openpi/GR00T's sampler)."""

    name = "euler"

    def __init__(self) -> None:
        super().__init__(EULER)


class MidpointSolver(ExplicitRungeKutta):
    """Explicit midpoint rule. Order 2, 2 NFE per step."""

    name = "midpoint"

    def __init__(self) -> None:
        super().__init__(MIDPOINT)


class HeunSolver(ExplicitRungeKutta):
    """Heun's method (explicit trapezoid, RK2). Order 2, 2 NFE per step."""

    name = "heun"

    def __init__(self) -> None:
        super().__init__(HEUN)


class RK4Solver(ExplicitRungeKutta):
    """The classical fourth-order Runge–Kutta method. Order 4, 4 NFE per step."""

    name = "rk4"

    def __init__(self) -> None:
        super().__init__(RK4)
