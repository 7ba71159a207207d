"""Closed-form velocity fields of the linear path, for testing solvers and heads.

For a target that is a mixture of diagonal Gaussians ``sum_m pi_m N(mu_m, diag(s_m^2))`` the
marginal velocity of ``x_t = (1 - t) z + t a`` is known exactly. Given component ``m``, ``x_t`` is
Gaussian with mean ``t mu_m`` and variance ``var_m(t) = (1 - t)^2 + t^2 s_m^2`` (per dim), and
``v = a - z`` is jointly Gaussian with it, so::

    E[v | x, m] = mu_m + (t s_m^2 - (1 - t)) / var_m(t) * (x - t mu_m)
    v(x, t)     = sum_m w_m(x, t) E[v | x, m],   w_m ∝ pi_m N(x; t mu_m, var_m(t))

For a single Gaussian the flow map is also closed form: ``x_t = t mu + sqrt(var(t)) z`` with
``z = x_0``, so ``x_1 = mu + s x_0`` -- an exact reference for solver-order tests.

Shape legend: ``M`` mixture components, ``*E`` event shape (e.g. ``H A``), ``*B`` batch shape.
"""

from __future__ import annotations

import torch

from flowvla.typing import Float, Tensor, typechecked

__all__ = ["GaussianMixtureFlow", "smooth_chunk_mixture"]


class GaussianMixtureFlow:
    """Exact marginal velocity towards a diagonal Gaussian mixture (see module docs).

    Args:
        means: ``[M, *E]`` component means.
        stds: ``[M]`` (isotropic) or ``[M, *E]`` (diagonal) positive standard deviations.
        weights: ``[M]`` non-negative mixture weights (normalised here); uniform if omitted.
    """

    @typechecked
    def __init__(
        self,
        means: Float[Tensor, " M *E"],
        stds: Float[Tensor, " M"] | Float[Tensor, " M *E"],
        weights: Float[Tensor, " M"] | None = None,
    ) -> None:
        if not bool((stds > 0).all()):
            raise ValueError("stds: every standard deviation must be positive")
        m = means.shape[0]
        if weights is None:
            weights = torch.full((m,), 1.0 / m, dtype=means.dtype, device=means.device)
        if not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError("weights: must be non-negative with a positive sum")
        self.event_shape = tuple(means.shape[1:])
        self.means = means.reshape(m, -1)
        self.stds = (stds.reshape(m, 1) if stds.dim() == 1 else stds.reshape(m, -1)).expand_as(self.means)
        self.log_weights = torch.log(weights / weights.sum())

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move the mixture's parameters (returns ``self``)."""
        self.means = self.means.to(device=device, dtype=dtype)
        self.stds = self.stds.to(device=device, dtype=dtype)
        self.log_weights = self.log_weights.to(device=device, dtype=dtype)
        return self

    def _flatten(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        e = len(self.event_shape)
        if tuple(x.shape[x.dim() - e :]) != self.event_shape:
            raise ValueError(
                f"x: trailing shape must be the event shape {self.event_shape}, got {tuple(x.shape)}"
            )
        batch_shape = tuple(x.shape[: x.dim() - e])
        return x.reshape(-1, self.means.shape[1]), batch_shape

    @typechecked
    def velocity(self, x: Float[Tensor, "..."], t: Float[Tensor, "*T"]) -> Float[Tensor, "..."]:
        """``v(x, t)`` for ``x`` ``[*B, *E]``; ``t`` scalar or per-sample ``[*B]``."""
        flat, batch_shape = self._flatten(x)
        tt = t.to(flat.dtype).reshape(-1, 1, 1) if t.dim() > 0 else t.to(flat.dtype)
        mu, var_data = self.means.to(flat.dtype), self.stds.to(flat.dtype).square()
        var_t = (1 - tt).square() + tt.square() * var_data  # [N|1, M, E]
        diff = flat[:, None, :] - tt * mu  # [N, M, E]
        log_lik = -0.5 * (diff.square() / var_t + var_t.log()).sum(-1)  # [N, M]
        w = torch.softmax(log_lik + self.log_weights.to(flat.dtype), dim=-1)
        cond_v = mu + (tt * var_data - (1 - tt)) / var_t * diff  # [N, M, E]
        v = torch.einsum("nm,nme->ne", w, cond_v)
        return v.reshape(*batch_shape, *self.event_shape)

    __call__ = velocity

    @typechecked
    def sample_data(self, n: int, *, generator: torch.Generator | None = None) -> Float[Tensor, "..."]:
        """``n`` draws from the target mixture, ``[n, *E]``."""
        idx = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(
            n, self.means.shape[1], generator=generator, dtype=self.means.dtype, device=self.means.device
        )
        return (self.means[idx] + self.stds[idx] * eps).reshape(n, *self.event_shape)

    @typechecked
    def exact_flow(self, x0: Float[Tensor, "..."], t: float = 1.0) -> Float[Tensor, "..."]:
        """Closed-form flow map ``x_0 -> x_t`` (single-Gaussian targets only)."""
        if self.num_components != 1:
            raise ValueError(
                f"exact_flow: only a single Gaussian has a closed-form flow, got M={self.num_components}"
            )
        flat, batch_shape = self._flatten(x0)
        mu, s = self.means[0].to(flat.dtype), self.stds[0].to(flat.dtype)
        std_t = ((1 - t) ** 2 + t**2 * s.square()).sqrt()
        return (t * mu + std_t * flat).reshape(*batch_shape, *self.event_shape)


def smooth_chunk_mixture(
    horizon: int = 16, action_dim: int = 7, *, dtype: torch.dtype = torch.float64
) -> GaussianMixtureFlow:
    """A hard action-chunk target: 8 modes of smooth ``[horizon, action_dim]`` chunks, stds 0.05-0.3.

    Each mode's mean is a random offset plus a random walk over the horizon (smooth chunks, as
    actions are); three of its modes are narrow (std 0.05). The flow bends early (the mode is chosen
    near ``t = 0``) and late (the narrow modes sharpen near ``t = 1``), which is what separates ODE
    solvers. Seeded: the same mixture on every call, so the solver benchmarks' numbers stay comparable.
    """
    if horizon < 1 or action_dim < 1:
        raise ValueError(f"horizon, action_dim: expected positive sizes, got {horizon}, {action_dim}")
    g = torch.Generator().manual_seed(0)
    increments = torch.randn(8, horizon, action_dim, generator=g, dtype=torch.float64) * 0.15
    means = torch.randn(8, 1, action_dim, generator=g, dtype=torch.float64) * 0.6 + increments.cumsum(1)
    stds = torch.tensor([0.05, 0.05, 0.08, 0.1, 0.2, 0.3, 0.05, 0.15], dtype=torch.float64)
    weights = torch.tensor([3, 1, 2, 1, 2, 1, 1, 2.0], dtype=torch.float64)
    return GaussianMixtureFlow(means.to(dtype), stds.to(dtype), weights.to(dtype))
