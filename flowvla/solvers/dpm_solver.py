"""DPM-Solver++(2M): a second-order multistep solver on the data prediction.

For the linear path, ``alpha_t = t``, ``sigma_t = 1 - t`` and the half log-SNR is
``lambda_t = log(t / (1 - t))``. With the data prediction ``a_hat_i = x_i + (1 - t_i) v_i`` and
``h_i = lambda_{i+1} - lambda_i``, one step is::

    D_i     = a_hat_i + (a_hat_i - a_hat_{i-1}) / (2 r_i),     r_i = h_{i-1} / h_i
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - exp(-h_i)) D_i

Here ``alpha_{i+1} (1 - exp(-h_i)) = (t_{i+1} - t_i) / (1 - t_i)`` and the ratio of sigmas are
finite for every ``t_i < 1``, so the update is computed without ever forming ``lambda`` at
``t = 0`` or ``t = 1``. With ``D_i = a_hat_i`` the step is exactly Euler (first-order
DPM-Solver++ is Euler for this path); the gain comes from the second-order correction.

``lambda`` is infinite at both ends of ``[0, 1]``: a step leaving ``t = 0`` has ``h = inf``, so the
step after it has ``1 / r = 0`` (no correction), and a step landing on ``t = 1`` has ``r = 0``.
``final_step`` chooses what happens there: ``"euler"`` (the DPM-Solver++ default, lower order
at the last step) or ``"extrapolate"``, which uses ``x(1) = a_hat(1)`` (exact for this path) with
``a_hat`` extrapolated linearly in ``t`` from the last two evaluations -- second order.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from flowvla.solvers.base import ODESolution, Solver, VelocityFn
from flowvla.typing import Tensor

__all__ = ["DPMSolverPlusPlus2M"]


def _log_snr(t: float) -> float:
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t / (1.0 - t))


class DPMSolverPlusPlus2M(Solver):
    """DPM-Solver++(2M) for ``x_t = (1 - t) z + t a`` (see module docs). Order 2, 1 NFE per step.

    Args:
        final_step: ``"euler"`` or ``"extrapolate"`` for a step that lands on ``t = 1``.
    """

    name = "dpm++2m"
    order = 2

    def __init__(self, final_step: Literal["euler", "extrapolate"] = "euler") -> None:
        if final_step not in ("euler", "extrapolate"):
            raise ValueError(f"final_step: expected 'euler' or 'extrapolate', got {final_step!r}")
        self.final_step = final_step

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        if not (times[0] >= 0.0 and times[-1] <= 1.0 and times[1] > times[0]):
            raise ValueError(f"grid: DPM-Solver++ needs increasing times within [0, 1], got {times}")
        steps = len(times) - 1
        lam = [_log_snr(t) for t in times]
        t_eval = self._time_tensors(times[:-1], x0)
        traj = self._new_trajectory(x0, times, return_trajectory)
        x, d_prev = x0, None
        for i in range(steps):
            t, t_next = times[i], times[i + 1]
            v = self._evaluate(velocity_fn, x, t_eval[i], fn_kwargs)
            d = torch.add(x, v, alpha=1.0 - t)  # a_hat_i
            if t_next >= 1.0:
                # Lands on the data: x(1) = a_hat(1).
                if d_prev is not None and self.final_step == "extrapolate":
                    w = (1.0 - t) / (t - times[i - 1])
                    x = torch.mul(d, 1.0 + w).add_(d_prev, alpha=-w)
                else:
                    x = d
            else:
                ratio = (1.0 - t_next) / (1.0 - t)
                c = (t_next - t) / (1.0 - t)
                h, h_prev = lam[i + 1] - lam[i], (lam[i] - lam[i - 1]) if i > 0 else math.inf
                corr = 0.0 if (d_prev is None or math.isinf(h_prev)) else h / (2.0 * h_prev)
                x = torch.mul(x, ratio).add_(d, alpha=c * (1.0 + corr))
                if corr != 0.0:
                    x.add_(d_prev, alpha=-c * corr)
            d_prev = d
            if traj is not None:
                traj[i + 1] = x
        return ODESolution(x=x, nfe=steps, grid=tuple(times), trajectory=traj, steps=steps)

    def __repr__(self) -> str:
        return f"DPMSolverPlusPlus2M(final_step={self.final_step!r})"
