"""Variable-step two-step Adams–Bashforth (AB2): second order for one field evaluation per step.

With steps ``h_i = t_{i+1} - t_i`` and ``r = h_i / h_{i-1}``, the linear extrapolation of the
velocity over the step gives::

    x_{i+1} = x_i + h_i [ (1 + r / 2) v_i - (r / 2) v_{i-1} ]

The first step has no history and is an Euler step; its local error is O(h^2), so the global
order stays 2.
"""

from __future__ import annotations

import torch

from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.typing import Tensor

__all__ = ["AdamsBashforth2Solver"]


class AdamsBashforth2Solver(Solver):
    """Variable-step AB2 (see module docs). Order 2, 1 NFE per step."""

    name = "ab2"
    order = 2

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        steps = len(times) - 1
        t = self._time_tensors(times[:-1], x0)
        traj = self._new_trajectory(x0, times, return_trajectory)
        x, v_prev = x0, None
        for i in range(steps):
            h = times[i + 1] - times[i]
            v = self._evaluate(velocity_fn, x, t[i], fn_kwargs)
            if v_prev is None:
                x = torch.add(x, v, alpha=h)
            else:
                r = h / (times[i] - times[i - 1])
                x = torch.add(x, v, alpha=h * (1.0 + 0.5 * r)).add_(v_prev, alpha=-0.5 * h * r)
            v_prev = v
            if traj is not None:
                traj[i + 1] = x
        return ODESolution(x=x, nfe=steps, grid=tuple(times), trajectory=traj, steps=steps)
