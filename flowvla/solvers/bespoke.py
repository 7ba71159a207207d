"""Bespoke solvers: a few-step Runge–Kutta solver whose step times and scales are learned for one field.

After Shaul et al., *Bespoke Solvers for Generative Flow Models* (ICLR 2024). A smooth time
reparametrisation ``t = t(r)`` and state scaling ``xbar(r) = s(r) x(t(r))`` (``s(0) = 1``)
turn ``dx/dt = u(x, t)`` into another ODE with the same end point ``x(1) = xbar(1) / s(1)``::

    dxbar/dr = (s'(r) / s(r)) xbar + t'(r) s(r) u(xbar / s(r), t(r))

A base explicit Runge–Kutta step applied to this transformed ODE, with ``t, t', s, s'`` free
at every stage of every step, is a solver with a handful of parameters per step (Euler: 4,
midpoint: 8), trained by [`fit_bespoke_solver`][flowvla.solvers.bespoke.fit_bespoke_solver] to
minimise the end-point error against an accurate solve of the same field on training noise. At
sampling time it costs exactly the base solver's NFE; the learned coefficients are Python floats,
so a step costs the field evaluations plus a few fused ``add`` kernels, like the base solver.

With the identity transform (``t`` = the base grid's stage times, ``t' = 1``, ``s = 1``,
``s' = 0``) the solver *is* the base solver on that grid, bit for bit: that is where the fit starts.

Step ``i`` (step size ``h_i`` of the base grid, stages ``j`` of the tableau)::

    xbar_0      = x_0
    y_ij        = xbar_i + h_i sum_{l<j} a_jl k_il
    k_ij        = (ds_ij / s_ij) y_ij + dt_ij s_ij u(y_ij / s_ij, t_ij)
    xbar_{i+1}  = xbar_i + h_i sum_j b_j k_ij
    x(1)       ~= xbar_n / S_n

where the first stage's scale ``s_i0`` is the running scale ``S_i`` (``S_0 = 1``) and the other
stage scales and ``S_1 .. S_n`` are learned.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from flowvla.io import write_json_atomic
from flowvla.solvers.adaptive import DormandPrince54Solver
from flowvla.solvers.base import ODESolution, Solver, VelocityFn, as_time_list
from flowvla.solvers.grids import grid_times
from flowvla.solvers.runge_kutta import EULER, MIDPOINT, ButcherTableau, linear_combination
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["BASE_TABLEAUS", "BespokeParams", "BespokeSolver", "fit_bespoke_solver"]

BASE_TABLEAUS: dict[str, ButcherTableau] = {"euler": EULER, "midpoint": MIDPOINT}
"""Base methods a bespoke solver can be built on (by name)."""

FORMAT = "flowvla.bespoke_solver/1"


@dataclass(frozen=True)
class BespokeParams:
    """The learned coefficients of a bespoke solver (all Python floats; ``n`` steps, ``s`` stages).

    Attributes:
        base: the base method's name (a key of ``BASE_TABLEAUS``).
        h: ``[n]`` step sizes of the base grid the transform is relative to.
        t: ``[n][s]`` stage times.
        dt: ``[n][s]`` time derivatives ``t'``.
        s: ``[n][s]`` stage scales (``s[i][0]`` must equal ``scale[i]``).
        ds: ``[n][s]`` scale derivatives ``s'``.
        scale: ``[n + 1]`` running scales at the step boundaries, ``scale[0] = 1``.
    """

    base: str
    h: list[float]
    t: list[list[float]]
    dt: list[list[float]]
    s: list[list[float]]
    ds: list[list[float]]
    scale: list[float]

    def __post_init__(self) -> None:
        if self.base not in BASE_TABLEAUS:
            raise ValueError(
                f"base: unknown base method {self.base!r}; choose one of {sorted(BASE_TABLEAUS)}"
            )
        n, stages = len(self.h), BASE_TABLEAUS[self.base].stages
        if n < 1:
            raise ValueError("h: a bespoke solver needs at least one step")
        for name in ("t", "dt", "s", "ds"):
            rows = getattr(self, name)
            if len(rows) != n or any(len(r) != stages for r in rows):
                raise ValueError(f"{name}: expected {n} steps x {stages} stages, got {rows}")
        if len(self.scale) != n + 1:
            raise ValueError(f"scale: expected {n + 1} boundary scales, got {len(self.scale)}")
        values = [*self.h, *self.scale] + [
            v for name in ("t", "dt", "s", "ds") for r in getattr(self, name) for v in r
        ]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("params: every coefficient must be finite")
        if self.scale[0] != 1.0:
            raise ValueError(f"scale: scale[0] must be 1, got {self.scale[0]}")
        if any(v <= 0 for v in self.scale) or any(v <= 0 for r in self.s for v in r):
            raise ValueError("s, scale: scales must be positive")
        if any(r[0] != self.scale[i] for i, r in enumerate(self.s)):
            raise ValueError("s: the first stage scale of step i must equal scale[i]")

    @property
    def steps(self) -> int:
        return len(self.h)

    @property
    def num_parameters(self) -> int:
        """Free coefficients (the step sizes ``h`` are fixed by the base grid)."""
        stages = BASE_TABLEAUS[self.base].stages
        return self.steps * (3 * stages + (stages - 1)) + self.steps

    @classmethod
    def identity(cls, base: str, times: Sequence[float]) -> BespokeParams:
        """The identity transform: the base method on ``times`` (``steps + 1`` times from 0 to 1)."""
        if base not in BASE_TABLEAUS:
            raise ValueError(f"base: unknown base method {base!r}; choose one of {sorted(BASE_TABLEAUS)}")
        times = _check_unit_grid(times, "init_grid")
        tab = BASE_TABLEAUS[base]
        n = len(times) - 1
        hs = [times[i + 1] - times[i] for i in range(n)]
        return cls(
            base=base,
            h=hs,
            t=[[times[i] + c * hs[i] for c in tab.c] for i in range(n)],
            dt=[[1.0] * tab.stages for _ in range(n)],
            s=[[1.0] * tab.stages for _ in range(n)],
            ds=[[0.0] * tab.stages for _ in range(n)],
            scale=[1.0] * (n + 1),
        )


def _check_unit_grid(times: Sequence[float] | Tensor, name: str) -> list[float]:
    times = as_time_list(times, name=name)
    if times[0] != 0.0 or times[-1] != 1.0 or times[1] < times[0]:
        raise ValueError(f"{name}: expected increasing times from 0 to 1, got {times}")
    return times


def _transformed_velocity(
    velocity_fn: VelocityFn, y: Tensor, t: Tensor, s: float, dt: float, ds: float, fn_kwargs: dict
) -> Tensor:
    """``(ds / s) y + dt s u(y / s, t)``, skipping the no-op factors (so the identity is exact)."""
    x = y if s == 1.0 else y / s
    u = Solver._evaluate(velocity_fn, x, t, fn_kwargs)
    beta = dt * s
    if beta != 1.0:
        u = u * beta
    alpha = ds / s
    return u if alpha == 0.0 else torch.add(u, y, alpha=alpha)


class BespokeSolver(Solver):
    """A base Runge–Kutta method on a learned scaled-time transform (see module docs).

    It samples through the same path as every registered solver (``solver.solve(fn, x0, grid)``,
    [`integrate`][flowvla.solvers.registry.integrate], ``predict_action(solver=...)``): the grid only
    fixes the number of steps (it must have ``steps + 1`` times from 0 to 1); the learned times are
    used. Save with [`save`][flowvla.solvers.bespoke.BespokeSolver.save], reload with
    [`load`][flowvla.solvers.bespoke.BespokeSolver.load].

    Args:
        params: the learned coefficients.
        info: free-form metadata kept with the solver (fit errors, training cost, ...).
    """

    name = "bespoke"

    def __init__(self, params: BespokeParams, info: dict | None = None) -> None:
        self.params = params
        self.tableau = BASE_TABLEAUS[params.base]
        self.info = dict(info or {})

    @property
    def order(self) -> int:  # type: ignore[override]
        return self.tableau.order

    @property
    def steps(self) -> int:
        return self.params.steps

    @property
    def nfe(self) -> int:
        """Field evaluations per solve."""
        return self.params.steps * self.tableau.stages

    @classmethod
    def identity(cls, base: str = "euler", steps: int = 2) -> BespokeSolver:
        """The untrained solver: ``base`` on a uniform grid of ``steps`` steps."""
        return cls(BespokeParams.identity(base, grid_times("uniform", steps)))

    def _solve(
        self,
        velocity_fn: VelocityFn,
        x0: Tensor,
        times: list[float],
        return_trajectory: bool,
        fn_kwargs: dict,
    ) -> ODESolution:
        if len(times) - 1 != self.steps or times[0] != 0.0 or times[-1] != 1.0:
            raise ValueError(
                f"grid: this bespoke solver was fitted for {self.steps} steps from 0 to 1; got "
                f"{len(times) - 1} steps from {times[0]} to {times[-1]} (pass steps={self.steps})"
            )
        p, tab = self.params, self.tableau
        stage_t = self._time_tensors([tij for row in p.t for tij in row], x0)
        traj = self._new_trajectory(x0, times, return_trajectory)
        xbar = x0
        for i in range(self.steps):
            h = p.h[i]
            ks: list[Tensor] = []
            for j in range(tab.stages):
                y = linear_combination(xbar, tuple(h * a for a in tab.a[j]), ks)
                t = stage_t[i * tab.stages + j]
                ks.append(
                    _transformed_velocity(velocity_fn, y, t, p.s[i][j], p.dt[i][j], p.ds[i][j], fn_kwargs)
                )
            xbar = linear_combination(xbar, tuple(h * b for b in tab.b), ks)
            if traj is not None:
                traj[i + 1] = xbar if p.scale[i + 1] == 1.0 else xbar / p.scale[i + 1]
        x = xbar if p.scale[-1] == 1.0 else xbar / p.scale[-1]
        return ODESolution(x=x, nfe=self.nfe, grid=tuple(times), trajectory=traj, steps=self.steps)

    def to_dict(self) -> dict:
        """The solver's identity as JSON values: its name and learned coefficients (what an evaluation
        record stores, so records of two different fits never pass for each other)."""
        return {"solver": self.name, "params": asdict(self.params)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the solver as JSON (atomically); floats round-trip exactly."""
        return write_json_atomic(path, {"format": FORMAT, "params": asdict(self.params), "info": self.info})

    @classmethod
    def load(cls, path: str | os.PathLike) -> BespokeSolver:
        """Read a solver written by [`save`][flowvla.solvers.bespoke.BespokeSolver.save]."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"path: {path} is not a bespoke solver file (expected format {FORMAT!r})")
        return cls(BespokeParams(**data["params"]), info=data.get("info"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BespokeSolver) and self.params == other.params

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BespokeSolver(base={self.params.base!r}, steps={self.steps}, nfe={self.nfe})"


@dataclass
class _Trainable:
    """The coefficients as leaf tensors: raw times, log-scales, derivatives."""

    base: str
    h: list[float]
    t: Tensor  # [n, s]
    dt: Tensor  # [n, s]
    log_s: Tensor  # [n, s - 1]  stage scales j >= 1
    ds: Tensor  # [n, s]
    log_scale: Tensor  # [n]  scales S_1..S_n
    tensors: list[Tensor] = field(default_factory=list)

    @classmethod
    def from_params(cls, p: BespokeParams) -> _Trainable:
        def leaf(v):
            return torch.tensor(v, dtype=torch.float64).requires_grad_(True)

        out = cls(
            base=p.base,
            h=list(p.h),
            t=leaf(p.t),
            dt=leaf(p.dt),
            log_s=torch.tensor([[math.log(v) for v in r[1:]] for r in p.s], dtype=torch.float64)
            .reshape(p.steps, -1)
            .requires_grad_(True),
            ds=leaf(p.ds),
            log_scale=leaf([math.log(v) for v in p.scale[1:]]),
        )
        out.tensors = [out.t, out.dt, out.log_s, out.ds, out.log_scale]
        return out

    def solve(self, velocity_fn: VelocityFn, x0: Tensor, fn_kwargs: dict) -> Tensor:
        """Differentiable solve in ``x0``'s dtype (times in at least float32)."""
        tab = BASE_TABLEAUS[self.base]
        dtype = x0.dtype
        tdtype = torch.promote_types(dtype, torch.float32)
        scale = torch.cat([torch.ones(1, dtype=torch.float64), self.log_scale.exp()])
        xbar = x0
        for i, h in enumerate(self.h):
            ks: list[Tensor] = []
            for j in range(tab.stages):
                y = xbar
                for a, k in zip(tab.a[j], ks, strict=False):
                    if a != 0.0:
                        y = y + (h * a) * k
                s = scale[i] if j == 0 else self.log_s[i, j - 1].exp()
                t = self.t[i, j].clamp(0.0, 1.0).to(tdtype)
                u = velocity_fn(y / s.to(dtype), t, **fn_kwargs).to(dtype)
                ks.append((self.ds[i, j] / s).to(dtype) * y + (self.dt[i, j] * s).to(dtype) * u)
            for b, k in zip(tab.b, ks, strict=False):
                if b != 0.0:
                    xbar = xbar + (h * b) * k
        return xbar / scale[-1].to(dtype)

    def params(self) -> BespokeParams:
        with torch.no_grad():
            n = len(self.h)
            scale = [1.0, *(float(v) for v in self.log_scale.exp())]
            s = [[scale[i], *(float(v) for v in self.log_s[i].exp())] for i in range(n)]
            return BespokeParams(
                base=self.base,
                h=list(self.h),
                t=[[min(max(float(v), 0.0), 1.0) for v in r] for r in self.t],
                dt=self.dt.tolist(),
                s=s,
                ds=self.ds.tolist(),
                scale=scale,
            )


def _rms(a: Tensor, b: Tensor) -> Tensor:
    return (a - b.to(a.dtype)).square().mean().sqrt()


@typechecked
def fit_bespoke_solver(
    velocity_fn: VelocityFn,
    x0: Float[Tensor, "N ..."],
    *,
    base: str = "euler",
    steps: int,
    reference: Float[Tensor, "N ..."] | None = None,
    init_grid: str | Sequence[float] | Tensor = "uniform",
    iterations: int = 300,
    lr: float = 5e-3,
    batch_size: int | None = None,
    seed: int = 0,
    **fn_kwargs: object,
) -> BespokeSolver:
    """Fit a bespoke solver of ``steps`` steps of ``base`` to ``velocity_fn`` (see module docs).

    Minimises the RMS end-point error against ``reference`` on the training noise ``x0`` with Adam,
    differentiating through the solve (the field must be differentiable in its input; freeze a
    module field's own parameters, ``requires_grad_(False)``, or they accumulate gradients). The
    returned solver is the best iterate on the whole training set, so it is never worse there than
    its initialisation (the base method on ``init_grid``).

    Args:
        velocity_fn: the field, ``velocity_fn(x, t, **fn_kwargs)``; for a policy head, a closure
            with the conditioning of the fitting batch.
        x0: training noise ``[N, *E]`` (hold out other noise to evaluate).
        base: the base method, ``"euler"`` (1 NFE per step) or ``"midpoint"`` (2).
        steps: steps of the solver (NFE = steps x stages).
        reference: the accurate ``x(1)`` for ``x0`` ``[N, *E]``; if omitted, Dormand–Prince 5(4) at
            ``atol = rtol = 1e-7`` computes it.
        init_grid: the base grid the transform starts from: a grid name or ``steps + 1`` times
            (e.g. a [`FittedGrid`][flowvla.solvers.grid_fit.FittedGrid]'s ``times``).
        iterations: Adam steps.
        lr: Adam learning rate.
        batch_size: noise samples per Adam step (default: all of ``x0``).
        seed: seeds the minibatch draws.

    Returns:
        The fitted solver; ``info`` holds ``fit_error``, ``init_error`` (on ``x0``), ``seconds``,
        ``teacher_nfe`` (field evaluations x samples spent on the reference and the fit) and ``iterations``.
    """
    if base not in BASE_TABLEAUS:
        raise ValueError(f"base: unknown base method {base!r}; choose one of {sorted(BASE_TABLEAUS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}")
    if iterations < 0:
        raise ValueError(f"iterations: must be >= 0, got {iterations}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: must be positive and finite, got {lr}")
    n = x0.shape[0]
    if batch_size is not None and not (1 <= batch_size <= n):
        raise ValueError(f"batch_size: must be in [1, {n}], got {batch_size}")
    times = (
        grid_times(init_grid, steps)
        if isinstance(init_grid, str)
        else _check_unit_grid(init_grid, "init_grid")
    )
    if len(times) != steps + 1:
        raise ValueError(f"init_grid: expected {steps + 1} times for {steps} steps, got {len(times)}")
    start = time.perf_counter()
    teacher_nfe = 0
    if reference is None:
        ref = DormandPrince54Solver(atol=1e-7, rtol=1e-7, max_nfe=100_000).solve(
            velocity_fn, x0.detach(), [0.0, 1.0], **fn_kwargs
        )
        reference, teacher_nfe = ref.x, ref.nfe * n
    elif reference.shape != x0.shape:
        raise ValueError(f"reference: expected shape {tuple(x0.shape)}, got {tuple(reference.shape)}")
    x0, reference = x0.detach(), reference.detach()
    stages = BASE_TABLEAUS[base].stages
    model = _Trainable.from_params(BespokeParams.identity(base, times))

    def full_error() -> float:
        nonlocal teacher_nfe
        teacher_nfe += steps * stages * n
        with torch.no_grad():
            return float(_rms(model.solve(velocity_fn, x0, fn_kwargs), reference))

    best_err = init_err = full_error()
    best = model.params()
    opt = torch.optim.Adam(model.tensors, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    check_every = max(1, iterations // 20)
    for it in range(iterations):
        if batch_size is None or batch_size == n:
            xb, rb = x0, reference
        else:
            idx = torch.randperm(n, generator=gen)[:batch_size].to(x0.device)
            xb, rb = x0[idx], reference[idx]
        loss = _rms(model.solve(velocity_fn, xb, fn_kwargs), rb)
        teacher_nfe += steps * stages * xb.shape[0]
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (it + 1) % check_every == 0 or it + 1 == iterations:
            err = full_error()
            if err < best_err:
                best_err, best = err, model.params()
    info = {
        "fit_error": best_err,
        "init_error": init_err,
        "init_grid": [float(v) for v in times],
        "iterations": iterations,
        "seconds": time.perf_counter() - start,
        "teacher_nfe": teacher_nfe,
        "num_parameters": best.num_parameters,
    }
    return BespokeSolver(best, info=info)
