"""The sampler of a shortcut model: Euler steps that tell the field their size.

A shortcut field ``s(x, t, d)`` (Frans et al., 2024) predicts the average velocity over the step
``[t, t + d]``, so ``x + d s(x, t, d)`` is one accurate step of any size: 1-2 steps replace an ODE
solve. [`ShortcutSolver`][flowvla.solvers.shortcut.ShortcutSolver] is Euler that passes each step's
size to the field as the keyword ``step`` (a 0-dim tensor). The field must accept it: a
[`FlowActionHead`][flowvla.dit.head.FlowActionHead] built with ``step_conditioning`` (see
[`distill_policy_shortcut`][flowvla.policy.shortcut_distill.distill_policy_shortcut]). On a field
that ignores ``step`` it is Euler.
"""

from __future__ import annotations

from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.typing import Tensor

__all__ = ["ShortcutSolver"]


class ShortcutSolver(Solver):
    """Euler steps ``x += h s(x, t, step=h)`` with the step size as an input. 1 NFE per step."""

    name = "shortcut"
    order = 1

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        if "step" in fn_kwargs:
            raise ValueError("fn_kwargs: 'step' is the shortcut solver's own argument; do not pass it")
        steps = len(times) - 1
        hs = [times[i + 1] - times[i] for i in range(steps)]
        ts = self._time_tensors(times[:-1], x0)
        ds = self._time_tensors(hs, x0)
        traj = self._new_trajectory(x0, times, return_trajectory)
        x = x0
        for i in range(steps):
            try:
                v = self._evaluate(velocity_fn, x, ts[i], {**fn_kwargs, "step": ds[i]})
            except TypeError as e:
                if "step" not in str(e):
                    raise
                raise ValueError(
                    "velocity_fn: the shortcut solver passes the step size as step=...; this field "
                    f"does not take it ({e}). Use a step-conditioned head (distill_policy_shortcut)."
                ) from e
            x = x.add(v, alpha=hs[i])
            if traj is not None:
                traj[i + 1] = x
        return ODESolution(x=x, nfe=steps, grid=tuple(times), trajectory=traj, steps=steps)
