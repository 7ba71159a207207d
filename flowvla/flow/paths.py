"""The linear (rectified-flow / conditional-OT) probability path and its conventions.

flowvla's convention, used everywhere in the library::

    x_t = (1 - t) * z + t * a,     z ~ N(0, I),  a = clean action chunk
    v   = dx_t/dt = a - z          (the regression target)

``t = 0`` is pure noise and ``t = 1`` is data, so sampling integrates ``dx/dt = v(x, t)`` from
``t = 0`` to ``t = 1``. Given a velocity prediction the path also yields the two other common
parametrisations used by multistep solvers::

    a_hat = x + (1 - t) v          (data prediction, "x0-prediction" in diffusion terms)
    z_hat = x - t v                (noise prediction)

Peers such as openpi (pi0, pi0.5) and LeRobot (SmolVLA) use the reverse time ``s = 1 - t`` (``s = 1``
is noise) and regress ``u = z - a = -v``.
[`from_reverse_time_field`][flowvla.flow.paths.from_reverse_time_field] and
[`to_reverse_time_field`][flowvla.flow.paths.to_reverse_time_field] convert velocity fields between the two
conventions.

Shape legend: ``*B`` any leading batch shape, ``H`` horizon, ``A`` action dim (any trailing event
shape works; the path is elementwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowvla.typing import Float, Tensor, typechecked

__all__ = [
    "LinearPath",
    "PathSample",
    "VelocityFn",
    "from_reverse_time_field",
    "to_reverse_time_field",
]

VelocityFn = Callable[..., Tensor]
"""``velocity_fn(x, t, **kwargs) -> v`` with ``v.shape == x.shape``."""


@dataclass(frozen=True)
class PathSample:
    """A point on the path and its regression target.

    Attributes:
        x_t: noisy sample ``(1 - t) z + t a``, ``[*B, H, A]``.
        t: time of each sample, ``[*B]``.
        noise: ``z``, ``[*B, H, A]``.
        target: target velocity ``a - z``, ``[*B, H, A]``.
    """

    x_t: Tensor
    t: Tensor
    noise: Tensor
    target: Tensor


def _expand_time(t: Tensor, like: Tensor) -> Tensor:
    """``t`` of shape ``[*B]`` (or scalar) viewed as ``[*B, 1, ..., 1]`` to broadcast over ``like``."""
    if t.dim() == 0:
        return t
    return t.reshape(t.shape + (1,) * (like.dim() - t.dim()))


class LinearPath:
    """``x_t = (1 - t) z + t a`` with target velocity ``a - z`` (see module docs)."""

    @typechecked
    def sample(
        self,
        actions: Float[Tensor, "*B H A"],
        noise: Float[Tensor, "*B H A"],
        t: Float[Tensor, "*B"],
    ) -> PathSample:
        """Interpolate ``actions`` and ``noise`` at per-sample times ``t``."""
        tt = _expand_time(t.to(actions.dtype), actions)
        x_t = torch.lerp(noise, actions, tt)
        return PathSample(x_t=x_t, t=t, noise=noise, target=actions - noise)

    @staticmethod
    @typechecked
    def data_prediction(
        x: Float[Tensor, "*B H A"], velocity: Float[Tensor, "*B H A"], t: Float[Tensor, "*T"]
    ) -> Float[Tensor, "*B H A"]:
        """``a_hat = x + (1 - t) v``; ``t`` is a scalar or per-sample ``[*B]``."""
        return x + _expand_time(1 - t, x).to(x.dtype) * velocity

    @staticmethod
    @typechecked
    def noise_prediction(
        x: Float[Tensor, "*B H A"], velocity: Float[Tensor, "*B H A"], t: Float[Tensor, "*T"]
    ) -> Float[Tensor, "*B H A"]:
        """``z_hat = x - t v``; ``t`` is a scalar or per-sample ``[*B]``."""
        return x - _expand_time(t, x).to(x.dtype) * velocity

    @staticmethod
    @typechecked
    def velocity_from_data_prediction(
        x: Float[Tensor, "*B H A"], data: Float[Tensor, "*B H A"], t: Float[Tensor, "*T"]
    ) -> Float[Tensor, "*B H A"]:
        """Inverse of [`data_prediction`][flowvla.flow.paths.LinearPath.data_prediction]:
        ``v = (a_hat - x) / (1 - t)``; undefined at ``t = 1``."""
        one_minus_t = _expand_time(1 - t, x).to(x.dtype)
        if bool((one_minus_t == 0).any()):
            raise ValueError("t: velocity_from_data_prediction is undefined at t = 1 (division by 1 - t)")
        return (data - x) / one_minus_t


def from_reverse_time_field(field: VelocityFn) -> VelocityFn:
    """Wrap a reverse-convention field (``s = 1`` noise, ``u = z - a``) as a flowvla field.

    The peer's sample at time ``s`` is ours at ``t = 1 - s``, and ``dx/dt = -dx/ds``, so
    ``v(x, t) = -u(x, 1 - t)``. Use it to sample an openpi/LeRobot-style model with flowvla's
    solvers, or to compare its field with ours.
    """

    def field_in_flowvla_time(x: Tensor, t: Tensor, **kwargs) -> Tensor:
        return -field(x, 1 - t, **kwargs)

    return field_in_flowvla_time


def to_reverse_time_field(field: VelocityFn) -> VelocityFn:
    """Wrap a flowvla field as a reverse-convention one: ``u(x, s) = -v(x, 1 - s)``.

    Inverse of [`from_reverse_time_field`][flowvla.flow.paths.from_reverse_time_field] (the map is an
    involution)."""
    return from_reverse_time_field(field)
