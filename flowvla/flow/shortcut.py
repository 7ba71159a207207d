"""Shortcut distillation: a student field that takes the step size as an input, for 1-2 NFE sampling.

After Frans et al., *One Step Diffusion via Shortcut Models* (2024), distilled from a teacher
field instead of trained from data pairs. The student ``s(x, t, d)`` predicts the average velocity
over a step of size ``d`` from ``(x, t)``, so ``x + d s(x, t, d)`` is one step of any size. It is
trained on points of the linear path ``x_t = (1 - t) z + t a`` (``t = 0`` noise, ``t = 1`` data)
with two targets:

* ``d = 0``: the teacher's velocity ``v(x_t, t)`` (distillation; for an exact field, the exact
  marginal velocity, not the noisy ``a - z``);
* ``d > 0``: self-consistency, two half steps make one step::

      x'     = x_t + (d / 2) s(x_t, t, d / 2)
      target = (s(x_t, t, d / 2) + s(x', t + d / 2, d / 2)) / 2     (no gradient)

  with the teacher in place of the student once ``d / 2`` is below the finest step ``d_min``.

Step sizes are ``d = 2^-u``, ``u`` uniform on ``[0, log2(1 / d_min)]`` (continuous, so any step
count samples well, not only powers of two), and ``t`` uniform on ``[0, 1 - d]``.
[`shortcut_sample`][flowvla.flow.shortcut.shortcut_sample] samples with ``steps`` equal steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowvla.flow.paths import VelocityFn
from flowvla.typing import Float, Tensor, typechecked

__all__ = [
    "ShortcutDraw",
    "ShortcutMLP",
    "StudentFn",
    "distill_shortcut",
    "shortcut_loss",
    "shortcut_sample",
    "shortcut_targets",
]


class ShortcutMLP(nn.Module):
    """A residual MLP ``s(x, t, d)`` on flattened action chunks.

    Args:
        dim: flattened event size ``D`` (e.g. ``H * A``).
        hidden: width of the hidden layers.
        depth: residual blocks.
        frequencies: Fourier features per scalar input (``t`` and ``d``).
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, frequencies: int = 16) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth), ("frequencies", frequencies)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        self.dim = dim
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32) / 4)
        self.inp = nn.Linear(dim + 4 * frequencies, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
            )
            for _ in range(depth)
        )
        self.out = nn.Linear(hidden, dim)

    def _features(self, s: Tensor) -> Tensor:
        a = s[:, None].to(self.freqs.dtype) * self.freqs
        return torch.cat([a.sin(), a.cos()], dim=-1)

    @typechecked
    def forward(
        self, x: Float[Tensor, "B D"], t: Float[Tensor, " B"], d: Float[Tensor, " B"]
    ) -> Float[Tensor, "B D"]:
        """Average velocity over ``[t, t + d]`` from ``x`` (``d = 0``: the instantaneous velocity)."""
        feats = torch.cat([x, self._features(t).to(x.dtype), self._features(d).to(x.dtype)], dim=-1)
        h = self.inp(feats)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


#: A shortcut student as a function: ``(x [B, *E], t [B], d [B], **cond) -> [B, *E]``.
StudentFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _student(model: nn.Module | StudentFn) -> StudentFn:
    """``model`` as a function of event-shaped states (a [`ShortcutMLP`][flowvla.flow.shortcut.ShortcutMLP]
    works on flattened ones and takes no conditioning)."""
    if isinstance(model, ShortcutMLP):
        return lambda x, t, d, **cond: model(x.reshape(x.shape[0], -1), t, d).reshape(x.shape)
    return model


@typechecked
def shortcut_sample(
    model: nn.Module | StudentFn, x0: Float[Tensor, "B ..."], steps: int, **cond: Any
) -> Float[Tensor, "B ..."]:
    """Sample ``x(1)`` from noise ``x0`` ``[B, *E]`` in ``steps`` equal shortcut steps (``steps`` NFE).

    ``cond`` (e.g. ``goal=`` ``[B, ...]``) is passed to every call ``model(x, t, d, **cond)``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}")
    b, d = x0.shape[0], 1.0 / steps
    student = _student(model)
    x = x0
    dd = torch.full((b,), d, dtype=x0.dtype, device=x0.device)
    for i in range(steps):
        t = torch.full((b,), i * d, dtype=x0.dtype, device=x0.device)
        x = x + d * student(x, t, dd, **cond)
    return x


@dataclass(frozen=True)
class ShortcutDraw:
    """One batch of shortcut training points and their targets (see
    [`shortcut_targets`][flowvla.flow.shortcut.shortcut_targets]).

    Attributes:
        x: path points ``x_t`` ``[B, *E]``.
        t: times ``[B]``.
        d: step sizes ``[B]`` (0 on the distillation share).
        target: the student's target at ``(x, t, d)``, ``[B, *E]`` (no gradient).
        teacher_evaluations: teacher calls times samples spent on the targets.
    """

    x: Tensor
    t: Tensor
    d: Tensor
    target: Tensor
    teacher_evaluations: int


@typechecked
def shortcut_targets(
    student: nn.Module | StudentFn,
    teacher: VelocityFn,
    data: Float[Tensor, "B ..."],
    noise: Float[Tensor, "B ..."],
    *,
    min_step: float = 1 / 128,
    consistency_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> ShortcutDraw:
    """Draw path points, times and step sizes for one batch and compute the shortcut targets.

    Every network call sees the whole batch (the rows that need another target are chosen with
    ``torch.where``), so ``student`` and ``teacher`` may be conditional fields that hold one context
    per row (a policy head and its context cache).

    Args:
        student: ``s(x [B, *E], t [B], d [B])``, or a
            [`ShortcutMLP`][flowvla.flow.shortcut.ShortcutMLP].
        teacher: the teacher field ``v(x [B, *E], t [B])``, per-sample times.
        data: target samples ``a`` ``[B, *E]``.
        noise: noise ``z`` ``[B, *E]``.
        min_step: the finest step ``d_min``; below it the teacher gives the half-step velocity.
        consistency_fraction: share of the batch trained on the self-consistency target.
        generator: seeds ``t`` and ``d``.
    """
    if data.shape != noise.shape:
        raise ValueError(f"noise: expected the data's shape {tuple(data.shape)}, got {tuple(noise.shape)}")
    if not 0 < min_step <= 1:
        raise ValueError(f"min_step: must be in (0, 1], got {min_step}")
    if not 0 <= consistency_fraction <= 1:
        raise ValueError(f"consistency_fraction: must be in [0, 1], got {consistency_fraction}")
    fn = _student(student)
    b, dev, dt = data.shape[0], data.device, data.dtype
    bc = round(consistency_fraction * b)
    levels = math.log2(1.0 / min_step)
    u = torch.rand(b, generator=generator, dtype=dt).to(dev) * levels
    d = torch.where(torch.arange(b, device=dev) < bc, 2.0 ** (-u), torch.zeros_like(u))
    t = torch.rand(b, generator=generator, dtype=dt).to(dev) * (1 - d)
    shape = (b,) + (1,) * (data.dim() - 1)
    x = (1 - t.reshape(shape)) * noise + t.reshape(shape) * data
    calls = 0
    with torch.no_grad():
        base = (d == 0).reshape(shape)
        target = torch.zeros_like(data)
        if bool(base.any()):
            target = torch.where(base, teacher(x, t).to(dt), target)
            calls += b
        if not bool(base.all()):
            half = d / 2
            fine = (half < min_step).reshape(shape)
            h = half.reshape(shape)

            def half_step(xs: Tensor, ts: Tensor) -> Tensor:
                nonlocal calls
                out = fn(xs, ts, half)
                if bool((fine & ~base).any()):
                    out = torch.where(fine, teacher(xs, ts).to(dt), out)
                    calls += b
                return out

            s1 = half_step(x, t)
            s2 = half_step(x + h * s1, t + half)
            target = torch.where(base, target, (s1 + s2) / 2)
    return ShortcutDraw(x=x, t=t, d=d, target=target, teacher_evaluations=calls)


@typechecked
def shortcut_loss(
    model: nn.Module | StudentFn,
    teacher: VelocityFn,
    data: Float[Tensor, "B ..."],
    noise: Float[Tensor, "B ..."],
    *,
    min_step: float = 1 / 128,
    consistency_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, int]:
    """One batch of the shortcut distillation objective (see module docs and
    [`shortcut_targets`][flowvla.flow.shortcut.shortcut_targets]).

    Returns:
        ``(loss, teacher_evaluations)``: the mean squared error, and the teacher calls times samples.
    """
    draw = shortcut_targets(
        model,
        teacher,
        data,
        noise,
        min_step=min_step,
        consistency_fraction=consistency_fraction,
        generator=generator,
    )
    pred = _student(model)(draw.x, draw.t, draw.d)
    return (pred - draw.target).square().mean(), draw.teacher_evaluations


@typechecked
def distill_shortcut(
    teacher: VelocityFn,
    sample_data: Callable[[int], Tensor | tuple[Tensor, dict[str, Tensor]]],
    event_shape: tuple[int, ...],
    *,
    student: nn.Module | None = None,
    iterations: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 256,
    depth: int = 3,
    min_step: float = 1 / 128,
    consistency_fraction: float = 0.5,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, dict]:
    """Distil ``teacher`` into a shortcut student (AdamW, one-cycle lr).

    Conditional fields work too: ``sample_data`` then returns the targets with their conditioning,
    ``(a [n, *E], {"goal": [n, ...], ...})``, and every call is ``teacher(x, t, **cond)`` and
    ``student(x, t, d, **cond)`` with that batch's rows.

    Args:
        teacher: the teacher field ``v(x [B, *E], t [B], **cond)`` (per-sample times).
        sample_data: ``sample_data(n)`` -> ``[n, *E]`` draws of the target (a data set's actions,
            or the teacher's own samples), or ``(draws, cond)`` for a conditional field.
        event_shape: ``E``, the action-chunk shape.
        student: the model to train, called ``student(x [B, *E], t [B], d [B], **cond)``; trained in
            place. A student started as a copy of the teacher whose step input does nothing yet
            (``d``'s weights zero) starts from the teacher's Euler. Default: a new
            [`ShortcutMLP`][flowvla.flow.shortcut.ShortcutMLP] (``hidden``, ``depth``, ``dtype``;
            unconditional fields only).
        iterations: AdamW steps.
        batch_size: path points per step.
        lr: peak learning rate.
        hidden: the default student's hidden width.
        depth: the default student's residual blocks.
        min_step: see [`shortcut_loss`][flowvla.flow.shortcut.shortcut_loss].
        consistency_fraction: see [`shortcut_loss`][flowvla.flow.shortcut.shortcut_loss].
        seed: seeds the default student's initialisation, the noise, ``t`` and ``d``.
        dtype: the default student's dtype and that of the noise.

    Returns:
        ``(student, info)``; ``info`` holds ``seconds``, ``teacher_evaluations`` (teacher calls x
        samples), ``final_loss``, ``parameters`` (trainable) and ``iterations``.
    """
    if iterations < 1:
        raise ValueError(f"iterations: must be >= 1, got {iterations}")
    if batch_size < 2:
        raise ValueError(f"batch_size: must be >= 2, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: must be positive and finite, got {lr}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = (
        ShortcutMLP(math.prod(event_shape), hidden=hidden, depth=depth).to(dtype)
        if student is None
        else student
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("student: has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    fn = _student(model)
    teacher_evals, loss = 0, torch.tensor(float("nan"))
    model.train()
    for _ in range(iterations):
        drawn = sample_data(batch_size)
        data, cond = drawn if isinstance(drawn, tuple) else (drawn, {})
        if tuple(data.shape) != (batch_size, *event_shape):
            raise ValueError(
                f"sample_data: returned shape {tuple(data.shape)}, expected {(batch_size, *event_shape)}"
            )
        data = data.to(dtype)
        noise = torch.randn(data.shape, generator=gen, dtype=dtype)
        loss, calls = shortcut_loss(
            lambda x, t, d, c=cond: fn(x, t, d, **c),
            lambda x, t, c=cond: teacher(x, t, **c),
            data,
            noise,
            min_step=min_step,
            consistency_fraction=consistency_fraction,
            generator=gen,
        )
        teacher_evals += calls
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    info = {
        "seconds": time.perf_counter() - start,
        "teacher_evaluations": teacher_evals,
        "final_loss": float(loss.detach()),
        "parameters": sum(p.numel() for p in params),
        "iterations": iterations,
    }
    return model, info
