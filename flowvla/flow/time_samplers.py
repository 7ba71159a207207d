"""Training-time distributions over the flow time ``t`` (``t = 0`` noise, ``t = 1`` data).

Every sampler draws through an optional ``torch.Generator``, so a seeded generator gives
bit-identical times. (``torch.distributions.Beta`` cannot take a generator, hence the small Gamma
sampler below.)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch

from flowvla.typing import Float, Tensor, typechecked

__all__ = [
    "TIME_SAMPLERS",
    "BetaTimeSampler",
    "LogitNormalTimeSampler",
    "TimeSampler",
    "UniformTimeSampler",
    "create_time_sampler",
    "get_time_sampler_class",
    "sample_beta",
    "sample_gamma",
]


class TimeSampler(ABC):
    """Draws flow times in ``[0, 1]``."""

    @abstractmethod
    def _draw(self, shape: tuple[int, ...], generator, device, dtype) -> Tensor: ...

    @typechecked
    def sample(
        self,
        shape: tuple[int, ...] | int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Float[Tensor, "..."]:
        """Draw times of the given ``shape`` (e.g. ``(B,)`` or ``(R, B)``)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"shape: sizes must be non-negative, got {shape}")
        if generator is not None and device is None:
            device = generator.device
        # Draw in at least float32, then cast: a bfloat16 uniform would have only 8 bits.
        draw_dtype = torch.promote_types(dtype, torch.float32)
        return self._draw(shape, generator, device, draw_dtype).to(dtype)


class UniformTimeSampler(TimeSampler):
    """``t ~ U(low, high)``."""

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"low, high: need 0 <= low < high <= 1, got low={low}, high={high}")
        self.low, self.high = low, high

    def _draw(self, shape, generator, device, dtype):
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return self.low + (self.high - self.low) * u

    def __repr__(self) -> str:
        return f"UniformTimeSampler(low={self.low}, high={self.high})"


class BetaTimeSampler(TimeSampler):
    """The pi0 / GR00T choice: ``t = s * (1 - u)``, ``u ~ Beta(alpha, beta)``.

    With the defaults (``alpha=1.5, beta=1, s=0.999``) the density of ``t`` rises towards ``t = 0``
    (the noisy end, where the mode choice happens) and ``t`` never exceeds ``s``, so the trivial
    ``t = 1`` (clean data) is never trained on. In openpi's reverse time this is exactly
    ``Beta(1.5, 1) * 0.999 + 0.001``.
    """

    def __init__(self, alpha: float = 1.5, beta: float = 1.0, s: float = 0.999) -> None:
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"alpha, beta: must be positive, got alpha={alpha}, beta={beta}")
        if not 0.0 < s <= 1.0:
            raise ValueError(f"s: must lie in (0, 1], got {s}")
        self.alpha, self.beta, self.s = alpha, beta, s

    def _draw(self, shape, generator, device, dtype):
        u = sample_beta(self.alpha, self.beta, shape, generator=generator, device=device, dtype=dtype)
        return self.s * (1.0 - u)

    def __repr__(self) -> str:
        return f"BetaTimeSampler(alpha={self.alpha}, beta={self.beta}, s={self.s})"


class LogitNormalTimeSampler(TimeSampler):
    """``t = sigmoid(n)``, ``n ~ N(mean, std^2)`` (the SD3 / rectified-flow choice)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"std: must be positive, got {std}")
        self.mean, self.std = mean, std

    def _draw(self, shape, generator, device, dtype):
        n = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.mean + self.std * n)

    def __repr__(self) -> str:
        return f"LogitNormalTimeSampler(mean={self.mean}, std={self.std})"


@typechecked
def sample_gamma(
    concentration: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "..."]:
    """Gamma(concentration, 1) draws through ``generator`` (Marsaglia–Tsang, vectorised).

    For ``concentration < 1`` uses ``Gamma(k) = Gamma(k + 1) * U^(1/k)``.
    """
    if concentration <= 0:
        raise ValueError(f"concentration: must be positive, got {concentration}")
    boost = concentration < 1.0
    k = concentration + 1.0 if boost else concentration
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(shape)
    out = torch.empty(n, device=device, dtype=dtype)
    todo = torch.arange(n, device=device)
    # Acceptance is above 95% for k >= 1, so a handful of rounds suffices; each round redraws only
    # the rejected entries, keeping the result a deterministic function of the generator state.
    while todo.numel() > 0:
        m = todo.numel()
        x = torch.randn(m, generator=generator, device=device, dtype=dtype)
        u = torch.rand(m, generator=generator, device=device, dtype=dtype)
        v = (1.0 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        out[todo[ok]] = (d * v)[ok]
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        out = out * u.pow(1.0 / concentration)
    return out.reshape(shape)


@typechecked
def sample_beta(
    alpha: float,
    beta: float,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Float[Tensor, "..."]:
    """Beta(alpha, beta) draws through ``generator`` as ``X / (X + Y)`` of two Gamma draws."""
    x = sample_gamma(alpha, shape, generator=generator, device=device, dtype=dtype)
    y = sample_gamma(beta, shape, generator=generator, device=device, dtype=dtype)
    # Both draws can underflow to 0 for tiny concentrations; clamping keeps the ratio finite.
    return x / (x + y).clamp_min(torch.finfo(dtype).tiny)


#: Registered names -> time-sampler classes (``"beta"``: pi0 / GR00T).
TIME_SAMPLERS: dict[str, type[TimeSampler]] = {
    "beta": BetaTimeSampler,
    "uniform": UniformTimeSampler,
    "logit_normal": LogitNormalTimeSampler,
}


def get_time_sampler_class(name: str) -> type[TimeSampler]:
    """The time-sampler class registered as ``name``."""
    if name not in TIME_SAMPLERS:
        raise ValueError(f"loss.time_sampler: choose one of {sorted(TIME_SAMPLERS)}, got {name!r}")
    return TIME_SAMPLERS[name]


def create_time_sampler(name: str, **kwargs: Any) -> TimeSampler:
    """The time sampler ``name``, built with ``kwargs``."""
    return get_time_sampler_class(name)(**kwargs)
