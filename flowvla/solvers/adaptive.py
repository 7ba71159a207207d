"""Adaptive step-size control with embedded Runge–Kutta pairs: Dormand–Prince 5(4), Bogacki–Shampine 3(2).

Each step computes a solution of order ``p`` and an embedded one of order ``p - 1`` from the same
stages; their difference estimates the local error. With the scale
``sc = atol + rtol * max(|x|, |x_next|)`` the step is accepted when
``err = rms((x_next - x_next_low) / sc) <= 1`` and the next step size is
``h * clip(safety * err^(-1 / p), min_factor, max_factor)`` (no growth right after a rejection).
Both pairs are FSAL: the last stage of an accepted step is the first stage of the next, so a step
costs ``s - 1`` evaluations.

The solver passes exactly through every grid time (the trajectory holds the states there).
Step-size control needs the error on the host, so each step synchronises once: adaptive solves are
for references, analysis and tolerance-driven sampling, not for ``torch.compile(fullgraph=True)``.

``max_nfe`` caps the evaluations. With ``on_budget="raise"`` running out raises; with
``"finish"`` the solver, once only one more step fits in the budget, takes a single forced step to
the end (accepted whatever its error; crossed grid times are filled by linear interpolation) and
sets ``budget_exhausted`` -- bounded latency for a controller.
"""

from __future__ import annotations

from typing import Literal

import torch

from flowvla.solvers.base import ODESolution, Solver, VelocityFn, time_dtype_for
from flowvla.solvers.runge_kutta import ButcherTableau, linear_combination
from flowvla.typing import Tensor

__all__ = [
    "BOGACKI_SHAMPINE_32",
    "DORMAND_PRINCE_54",
    "AdaptiveRungeKutta",
    "BogackiShampine32Solver",
    "DormandPrince54Solver",
    "NFEBudgetExceeded",
]

DORMAND_PRINCE_54 = ButcherTableau(
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    order=5,
    b_low=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
    order_low=4,
)

BOGACKI_SHAMPINE_32 = ButcherTableau(
    a=((), (1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    c=(0.0, 1 / 2, 3 / 4, 1.0),
    order=3,
    b_low=(7 / 24, 1 / 4, 1 / 3, 1 / 8),
    order_low=2,
)


class NFEBudgetExceeded(RuntimeError):
    """An adaptive solve needed more than ``max_nfe`` field evaluations."""


class AdaptiveRungeKutta(Solver):
    """Adaptive solver for an embedded, FSAL [`ButcherTableau`][flowvla.solvers.runge_kutta.ButcherTableau]
    (see module docs).

    Args:
        tableau: an embedded pair (``b_low`` set) whose last stage is FSAL.
        atol: absolute local error tolerance.
        rtol: relative local error tolerance.
        max_nfe: cap on field evaluations per solve.
        on_budget: ``"raise"`` or ``"finish"`` when the cap is reached.
        first_step: initial step size; ``None`` picks one from the field (2 extra NFE).
        safety: factor on the optimal step size (below 1 to avoid rejections).
        min_factor: smallest step-size change per step.
        max_factor: largest step-size change per step.
    """

    name = "adaptive"

    def __init__(
        self,
        tableau: ButcherTableau,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        max_nfe: int = 1000,
        on_budget: Literal["raise", "finish"] = "raise",
        first_step: float | None = None,
        safety: float = 0.9,
        min_factor: float = 0.2,
        max_factor: float = 10.0,
    ) -> None:
        if tableau.b_low is None or not tableau.fsal:
            raise ValueError("tableau: an adaptive solver needs an embedded (b_low) FSAL pair")
        if atol < 0 or rtol < 0 or atol + rtol <= 0:
            raise ValueError(f"atol, rtol: must be non-negative and not both 0, got {atol}, {rtol}")
        cost = tableau.stages - 1
        if max_nfe < cost + 3:
            raise ValueError(f"max_nfe: must allow at least one step ({cost + 3} evaluations), got {max_nfe}")
        if on_budget not in ("raise", "finish"):
            raise ValueError(f"on_budget: expected 'raise' or 'finish', got {on_budget!r}")
        if first_step is not None and first_step <= 0:
            raise ValueError(f"first_step: must be positive, got {first_step}")
        if not 0 < min_factor < 1 < max_factor or not 0 < safety <= 1:
            raise ValueError(
                "safety, min_factor, max_factor: need 0 < safety <= 1, 0 < min_factor < 1 < max_factor"
            )
        self.tableau = tableau
        self.atol, self.rtol = atol, rtol
        self.max_nfe, self.on_budget = max_nfe, on_budget
        self.first_step = first_step
        self.safety, self.min_factor, self.max_factor = safety, min_factor, max_factor
        self._err_coefs = tuple(b - bl for b, bl in zip(tableau.b, tableau.b_low, strict=True))

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.tableau.order

    def _error_ratio(self, x: Tensor, x_next: Tensor, err: Tensor) -> float:
        scale = torch.maximum(x.abs(), x_next.abs()).mul_(self.rtol).add_(self.atol)
        return float(err.div(scale).square().mean().sqrt())

    def _initial_step(self, fn, x, t, v0, span: float, direction: float, fn_kwargs) -> float:
        """Hairer–Nørsett–Wanner's starting step (II.4): one extra Euler probe."""
        scale = x.abs().mul(self.rtol).add_(self.atol)
        d0 = float(x.div(scale).square().mean().sqrt())
        d1 = float(v0.div(scale).square().mean().sqrt())
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, abs(span))
        x1 = torch.add(x, v0, alpha=direction * h0)
        t1 = torch.tensor(t + direction * h0, dtype=time_dtype_for(x.dtype), device=x.device)
        v1 = self._evaluate(fn, x1, t1, fn_kwargs)
        d2 = float((v1 - v0).div(scale).square().mean().sqrt()) / h0
        p = self.tableau.order
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / p)
        return min(100 * h0, h1, abs(span))

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        tab = self.tableau
        cost = tab.stages - 1
        tdtype = time_dtype_for(x0.dtype)
        direction = 1.0 if times[-1] > times[0] else -1.0
        traj = self._new_trajectory(x0, times, return_trajectory)

        def t_tensor(value: float) -> Tensor:
            return torch.tensor(value, dtype=tdtype, device=x0.device)

        x, t = x0, times[0]
        v = self._evaluate(velocity_fn, x, t_tensor(t), fn_kwargs)
        nfe = 1
        if self.first_step is None:
            h = self._initial_step(velocity_fn, x, t, v, times[-1] - t, direction, fn_kwargs)
            nfe += 1
        else:
            h = self.first_step
        accepted = rejected = 0
        exhausted = False
        target_idx = 1
        while target_idx < len(times):
            if nfe + cost > self.max_nfe:
                raise NFEBudgetExceeded(
                    f"max_nfe: the adaptive solve needed more than {self.max_nfe} evaluations "
                    f"(reached t={t:.6g} of {times[-1]:.6g}); raise max_nfe or loosen atol/rtol"
                )
            force = self.on_budget == "finish" and nfe + 2 * cost > self.max_nfe
            end = times[-1] if force else times[target_idx]
            # Land exactly on a grid time rather than a rounding error away from it.
            lands = force or h >= abs(end - t)
            if lands:
                h = abs(end - t)
            hs = direction * h
            ks = [v]
            for j in range(1, tab.stages):
                xs = linear_combination(x, tuple(hs * a for a in tab.a[j]), ks)
                ks.append(self._evaluate(velocity_fn, xs, t_tensor(t + tab.c[j] * hs), fn_kwargs))
            nfe += cost
            # FSAL: the last stage is the solution and its velocity.
            x_next = xs
            err = linear_combination(None, tuple(hs * e for e in self._err_coefs), ks)
            ratio = 0.0 if force else self._error_ratio(x, x_next, err)
            if ratio <= 1.0:
                t_next = end if lands else t + hs
                # Fill every grid time this step reached or crossed.
                while target_idx < len(times) and direction * (times[target_idx] - t_next) <= 1e-12 * max(
                    1.0, abs(t_next)
                ):
                    if traj is not None:
                        frac = (times[target_idx] - t) / hs
                        traj[target_idx] = torch.lerp(x, x_next, frac) if frac < 1.0 else x_next
                    target_idx += 1
                x, t, v = x_next, t_next, ks[-1]
                accepted += 1
                exhausted = exhausted or force
                grow = self.max_factor
            else:
                rejected += 1
                grow = 1.0
            if ratio == 0.0:
                factor = grow
            else:
                factor = min(grow, max(self.min_factor, self.safety * ratio ** (-1.0 / tab.order)))
            h = h * factor
        return ODESolution(
            x=x,
            nfe=nfe,
            grid=tuple(times),
            trajectory=traj,
            steps=accepted,
            rejected_steps=rejected,
            budget_exhausted=exhausted,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(atol={self.atol}, rtol={self.rtol}, max_nfe={self.max_nfe}, "
            f"on_budget={self.on_budget!r})"
        )


class DormandPrince54Solver(AdaptiveRungeKutta):
    """Dormand–Prince 5(4) with FSAL: 6 NFE per step (``dopri5`` in torchdiffeq/scipy)."""

    name = "dopri5"

    def __init__(self, atol: float = 1e-5, rtol: float = 1e-5, max_nfe: int = 1000, **kwargs) -> None:
        super().__init__(DORMAND_PRINCE_54, atol=atol, rtol=rtol, max_nfe=max_nfe, **kwargs)


class BogackiShampine32Solver(AdaptiveRungeKutta):
    """Bogacki–Shampine 3(2) with FSAL: 3 NFE per step (``bosh3`` / MATLAB ``ode23``)."""

    name = "bosh3"

    def __init__(self, atol: float = 1e-4, rtol: float = 1e-4, max_nfe: int = 1000, **kwargs) -> None:
        super().__init__(BOGACKI_SHAMPINE_32, atol=atol, rtol=rtol, max_nfe=max_nfe, **kwargs)
