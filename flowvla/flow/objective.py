"""The conditional flow-matching objective with padding masks and repeated time draws.

For clean chunks ``a`` ``[B, H, A]`` the objective draws ``z ~ N(0, I)`` and ``t`` from a
[`TimeSampler`][flowvla.flow.time_samplers.TimeSampler], forms ``x_t = (1 - t) z + t a`` and regresses the
model's velocity on ``a - z``::

    loss = sum(mask * (v_theta(x_t, t) - (a - z))^2) / sum(mask)

i.e. the mean over valid entries only: padded horizon steps (episode ends) and padded action
dims do not count, and they do not dilute the mean either.

With ``repeats = R > 1`` (starVLA's ``repeated_diffusion_steps``) each chunk gets R independent
``(t, z)`` draws. The velocity function then receives ``x_t`` ``[R, B, H, A]`` and ``t`` ``[R, B]``;
it broadcasts its ``[B, ...]`` conditioning over the leading ``R`` (``expand``, not ``repeat``), so
the expensive VLM context is computed and stored once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowvla.flow.paths import LinearPath, PathSample, VelocityFn
from flowvla.flow.time_samplers import BetaTimeSampler, TimeSampler
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["FlowMatchingLoss", "FlowMatchingObjective", "masked_mse"]


@dataclass(frozen=True)
class FlowMatchingLoss:
    """Output of [`FlowMatchingObjective`][flowvla.flow.objective.FlowMatchingObjective].

    Attributes:
        loss: scalar, mean squared error over all valid entries (float32 or wider).
        per_sample: ``[B]``, each chunk's mean over its valid entries and repeats (0 where a
            chunk has no valid entry), detached, for logging.
        path: the drawn [`PathSample`][flowvla.flow.paths.PathSample] (``x_t``, ``t``, noise, target).
        prediction: the model's velocity, same shape as ``path.x_t``.
    """

    loss: Tensor
    per_sample: Tensor
    path: PathSample
    prediction: Tensor


@typechecked
def masked_mse(
    prediction: Float[Tensor, "*R B H A"],
    target: Float[Tensor, "*R B H A"],
    mask: Bool[Tensor, "B H"] | Bool[Tensor, "B H A"] | None = None,
) -> tuple[Float[Tensor, ""], Float[Tensor, " B"]]:
    """Mean squared error over valid entries, and its per-chunk means.

    Args:
        prediction: ``[*R, B, H, A]`` (``*R``: optional repeat dims).
        target: same shape as ``prediction``.
        mask: ``True`` where an entry counts; ``[B, H]`` (valid horizon steps) or ``[B, H, A]``.

    Returns:
        ``(loss, per_sample)``: scalar mean over valid entries, and ``[B]`` per-chunk means
        (0 for a chunk without valid entries).
    """
    # Reduce in at least float32 (bfloat16 sums lose the loss), never below the input precision.
    dtype = torch.promote_types(torch.promote_types(prediction.dtype, target.dtype), torch.float32)
    err = (prediction.to(dtype) - target.to(dtype)).square()
    batch_dim = err.dim() - 3
    repeat_dims = tuple(range(batch_dim))
    reduce_dims = (*repeat_dims, batch_dim + 1, batch_dim + 2)
    if mask is None:
        per_sample = err.mean(dim=reduce_dims)
        return err.mean(), per_sample.detach()
    m = (mask.unsqueeze(-1) if mask.dim() == 2 else mask).to(err.dtype).expand_as(err)
    sq_sum = (err * m).sum(dim=reduce_dims)
    count = m.sum(dim=reduce_dims)
    per_sample = sq_sum / count.clamp_min(1.0)
    loss = sq_sum.sum() / count.sum().clamp_min(1.0)
    return loss, per_sample.detach()


class FlowMatchingObjective:
    """Draws ``(t, z)``, builds ``x_t`` and scores a velocity function (see module docs).

    Args:
        time_sampler: distribution of ``t``; default ``BetaTimeSampler()`` (pi0/GR00T).
        repeats: independent ``(t, z)`` draws per chunk (``R``); conditioning is shared.
        path: the probability path; only [`LinearPath`][flowvla.flow.paths.LinearPath] is provided.
    """

    def __init__(
        self,
        time_sampler: TimeSampler | None = None,
        repeats: int = 1,
        path: LinearPath | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats: must be >= 1, got {repeats}")
        self.time_sampler = time_sampler if time_sampler is not None else BetaTimeSampler()
        self.repeats = repeats
        self.path = path if path is not None else LinearPath()

    @typechecked
    def sample_path(
        self,
        actions: Float[Tensor, "B H A"],
        *,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "*R B H A"] | None = None,
        t: Float[Tensor, "*R B"] | None = None,
    ) -> PathSample:
        """Draw ``(t, z)`` (unless given) and return the path sample.

        Shapes are ``[B, H, A]`` / ``[B]`` for ``repeats == 1`` and ``[R, B, H, A]`` / ``[R, B]``
        otherwise. Passing ``noise`` / ``t`` makes the draw explicit (tests, analysis).
        """
        lead = (self.repeats,) if self.repeats > 1 else ()
        b = actions.shape[0]
        if t is None:
            t = self._draw_t((*lead, b), generator, actions.device, actions.dtype)
        elif tuple(t.shape) != (*lead, b):
            raise ValueError(
                f"t: expected shape {(*lead, b)} for repeats={self.repeats}, got {tuple(t.shape)}"
            )
        elif bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t: flow times must lie in [0, 1]")
        if noise is None:
            noise = self._draw_noise((*lead, *actions.shape), generator, actions.device, actions.dtype)
        elif tuple(noise.shape) != (*lead, *actions.shape):
            raise ValueError(
                f"noise: expected shape {(*lead, *actions.shape)} for repeats={self.repeats}, "
                f"got {tuple(noise.shape)}"
            )
        return self.path.sample(actions.expand_as(noise), noise, t)

    def _draw_t(self, shape, generator, device, dtype) -> Tensor:
        return self.time_sampler.sample(shape, generator=generator, device=device, dtype=dtype)

    def _draw_noise(self, shape, generator, device, dtype) -> Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    @typechecked
    def draw(
        self,
        batch_size: int,
        horizon: int,
        action_dim: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[Tensor, Tensor]:
        """The ``(noise, t)`` that [`sample_path`][flowvla.flow.objective.FlowMatchingObjective.sample_path]
        would draw for ``batch_size`` chunks of ``[horizon, action_dim]`` (same order of draws).

        Drawing a whole batch once and handing slices of it to
        [`sample_path`][flowvla.flow.objective.FlowMatchingObjective.sample_path] makes every chunk's draw
        independent of how the batch is split (over processes or gradient-accumulation steps).

        Returns:
            ``(noise [*R, B, H, A], t [*R, B])`` with ``R`` present only for ``repeats > 1``.
        """
        if min(batch_size, horizon, action_dim) < 1:
            raise ValueError(
                f"batch_size, horizon, action_dim: must be >= 1, got {batch_size}, {horizon}, {action_dim}"
            )
        lead = (self.repeats,) if self.repeats > 1 else ()
        if generator is not None and device is None:
            device = generator.device
        t = self._draw_t((*lead, batch_size), generator, device, dtype)
        noise = self._draw_noise((*lead, batch_size, horizon, action_dim), generator, device, dtype)
        return noise, t

    @typechecked
    def __call__(
        self,
        velocity_fn: VelocityFn,
        actions: Float[Tensor, "B H A"],
        *,
        action_mask: Bool[Tensor, "B H"] | Bool[Tensor, "B H A"] | None = None,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "*R B H A"] | None = None,
        t: Float[Tensor, "*R B"] | None = None,
        **fn_kwargs: object,
    ) -> FlowMatchingLoss:
        """Score ``velocity_fn(x_t, t, **fn_kwargs)`` against the target velocity ``a - z``."""
        sample = self.sample_path(actions, generator=generator, noise=noise, t=t)
        prediction = velocity_fn(sample.x_t, sample.t, **fn_kwargs)
        if prediction.shape != sample.x_t.shape:
            raise ValueError(
                f"velocity_fn: returned shape {tuple(prediction.shape)}, expected {tuple(sample.x_t.shape)}"
            )
        loss, per_sample = masked_mse(prediction, sample.target, action_mask)
        return FlowMatchingLoss(loss=loss, per_sample=per_sample, path=sample, prediction=prediction)
