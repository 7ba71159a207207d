"""A few-step solver fitted to a trained policy's own flow field, on observations it will see.

A flow head defines one velocity field per observation. A
[`BespokeSolver`][flowvla.solvers.bespoke.BespokeSolver] learns per-step times and scales (4 numbers
a step on Euler, 8 on midpoint) that make ``steps`` steps land where an accurate solve of that field
lands; [`fit_policy_solver`][flowvla.policy.solver_fit.fit_policy_solver] fits one to the head of a
[`VLAPolicy`][flowvla.policy.VLAPolicy], conditioned on a batch of real observations (the backbone runs
once; the head is the field), with several noise draws per observation. The network is untouched: the
solver is sampled through ``predict_action(solver=fitted)`` and saved as a small JSON file.

The returned solver's ``info`` reports, on noise held out of the fit, the RMS end-point error of the
fitted solver, of the base method on the uniform grid at the same NFE, and of Euler with 10 steps,
all against a Dormand-Prince solve of the same field (in normalised action units).

[`fit_policy_grid`][flowvla.policy.solver_fit.fit_policy_grid] fits only where the steps of a named
solver fall ([`fit_time_grid`][flowvla.solvers.grid_fit.fit_time_grid]), either to the same accurate
solve (``target="ode"``) or to the demonstrated chunks of the batch (``target="demos"``, an offline
task metric); the grid is sampled through ``predict_action(grid=fitted)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flowvla.data.batch import ACTION_MASK, ACTIONS
from flowvla.flow.objective import masked_mse
from flowvla.solvers import DormandPrince54Solver, FittedGrid, create_solver, fit_time_grid, grid_times
from flowvla.solvers.bespoke import BespokeSolver, fit_bespoke_solver

__all__ = ["fit_policy_grid", "fit_policy_solver"]


def _noise(n: int, shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """``n`` standard normal draws of ``shape``, seeded on the CPU (the same on every device)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g, dtype=torch.float32).to(device)


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().mean().sqrt())


@torch.no_grad()
def _conditioning(policy: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The head's field arguments for ``batch``: the projected context cache and the state vector."""
    policy.check_batch(batch)
    enc = policy._encode(batch)
    state = policy._conditioning(policy._state(batch), enc)
    return {"cache": policy.head.encode_context(enc.routed.contexts, enc.mask), "state": state}


def fit_policy_solver(
    policy: Any,
    batch: Mapping[str, Any],
    *,
    steps: int,
    base: str = "euler",
    samples: int = 8,
    held_out_samples: int = 8,
    iterations: int = 300,
    lr: float = 5e-3,
    reference_tol: float = 1e-6,
    seed: int = 0,
) -> BespokeSolver:
    """Fit a bespoke solver of ``steps`` steps of ``base`` to ``policy``'s flow field on ``batch``.

    Args:
        policy: a [`VLAPolicy`][flowvla.policy.VLAPolicy] (its weights are not changed).
        batch: observations (images, instruction, state, ... as ``predict_action`` takes them); the
            fit covers their fields, so give observations like the ones the solver will meet (e.g.
            frames of the training demonstrations).
        steps: solver steps (NFE = ``steps`` for Euler, ``2 * steps`` for midpoint).
        base: ``"euler"`` or ``"midpoint"``.
        samples: noise draws per observation to fit on.
        held_out_samples: other noise draws per observation for the errors in ``info`` (0: none).
        iterations: Adam steps of the fit.
        lr: Adam learning rate.
        reference_tol: absolute and relative tolerance of the Dormand-Prince solves the errors are
            measured against.
        seed: seeds the noise (fit and held out draw from different streams).

    Returns:
        The solver; ``info`` adds ``observations``, ``samples`` and, with held-out noise,
        ``held_out_error`` (the fitted solver), ``held_out_base_error`` (``base`` on the uniform grid,
        same NFE) and ``held_out_euler10_error``.
    """
    if base not in ("euler", "midpoint"):
        raise ValueError(f"base: choose 'euler' or 'midpoint', got {base!r}")
    if samples < 1 or held_out_samples < 0:
        raise ValueError(f"samples must be >= 1 and held_out_samples >= 0, got {samples}, {held_out_samples}")
    was_training = policy.training
    policy.eval()
    frozen = [p for p in policy.head.parameters() if p.requires_grad]
    try:
        kwargs = _conditioning(policy, batch)
        b = kwargs["state"].shape[0]
        shape = (b, policy.config.horizon, policy.config.action_dim)
        device = kwargs["state"].device
        fit_noise = _noise(samples, shape, seed, device)
        # Gradients flow to the solver's coefficients through the head, never into the head itself.
        for p in frozen:
            p.requires_grad_(False)
        reference = DormandPrince54Solver(atol=reference_tol, rtol=reference_tol, max_nfe=100_000)
        with torch.no_grad():
            fit_ref = reference.solve(policy.head, fit_noise, [0.0, 1.0], **kwargs)
        solver = fit_bespoke_solver(
            policy.head,
            fit_noise,
            base=base,
            steps=steps,
            reference=fit_ref.x,
            iterations=iterations,
            lr=lr,
            seed=seed,
            **kwargs,
        )
        solver.info["teacher_nfe"] += fit_ref.nfe * samples
        info: dict[str, Any] = {"observations": b, "samples": samples}
        if held_out_samples:
            noise = _noise(held_out_samples, shape, seed + 1, device)
            with torch.no_grad():
                ref = DormandPrince54Solver(atol=1e-7, rtol=1e-7, max_nfe=100_000).solve(
                    policy.head, noise, [0.0, 1.0], **kwargs
                )
                uniform = torch.linspace(0, 1, steps + 1).tolist()
                euler10 = torch.linspace(0, 1, 11).tolist()
                info.update(
                    held_out_error=_rms(solver.solve(policy.head, noise, uniform, **kwargs).x, ref.x),
                    held_out_base_error=_rms(
                        create_solver(base).solve(policy.head, noise, uniform, **kwargs).x, ref.x
                    ),
                    held_out_euler10_error=_rms(
                        create_solver("euler").solve(policy.head, noise, euler10, **kwargs).x, ref.x
                    ),
                )
        solver.info.update(info)
        return solver
    finally:
        for p in frozen:
            p.requires_grad_(True)
        policy.train(was_training)


def _masked_rms(x1: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> float:
    """RMS of ``x1 [*R, B, H, A] - target [B, H, A]`` over the valid steps of ``mask [B, H]``."""
    return float(masked_mse(x1, target.expand_as(x1), mask)[0].sqrt())


def fit_policy_grid(
    policy: Any,
    batch: Mapping[str, Any],
    *,
    solver: str,
    steps: int,
    target: str = "ode",
    samples: int = 4,
    held_out_samples: int = 4,
    sweeps: int = 2,
    reference_tol: float = 1e-6,
    seed: int = 0,
) -> tuple[FittedGrid, dict[str, Any]]:
    """Fit the ``steps + 1`` times of ``solver`` to ``policy``'s flow field on ``batch``.

    Args:
        policy: a [`VLAPolicy`][flowvla.policy.VLAPolicy] (not changed).
        batch: observations as ``predict_action`` takes them; with ``target="demos"`` also ``actions``
            ``[B, H, A]`` (the demonstrated chunks, in the dataset's units) and optionally
            ``action_mask`` ``[B, H]``.
        solver: a fixed-step solver's registry name (``"euler"``, ``"midpoint"``, ``"ab2"``, ...).
        steps: solver steps.
        target: ``"ode"``: the end point of an accurate (Dormand-Prince) solve of the same field;
            ``"demos"``: the demonstrated chunks (RMS in normalised units over valid steps). The
            second is an offline task metric: it rewards samples near what the expert did, which on
            a learned field is not always the exact ODE solution. With one demonstration per
            observation it also rewards the conditional mean, i.e. averaging between modes: check a
            demos-fitted grid in closed loop.
        samples: noise draws per observation to fit on.
        held_out_samples: other draws for the errors in the returned info (``>= 1``).
        sweeps: coordinate-descent sweeps of the fit.
        reference_tol: tolerance of the Dormand-Prince solves.
        seed: seeds the noise (fit and held out draw from different streams).

    Returns:
        ``(grid, info)``: the grid, and on held-out noise the RMS to the accurate solve
        (``held_out_ode_error``) and to the demonstrations (``held_out_demo_error``, when the batch has
        actions) of the fitted grid and of the uniform grid (``..._uniform``), plus ``seconds``.
    """
    import time

    if target not in ("ode", "demos"):
        raise ValueError(f"target: choose 'ode' or 'demos', got {target!r}")
    if target == "demos" and ACTIONS not in batch:
        raise ValueError("batch: target='demos' needs the demonstrated chunks under 'actions'")
    if samples < 1 or held_out_samples < 1:
        raise ValueError(f"samples and held_out_samples must be >= 1, got {samples}, {held_out_samples}")
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    try:
        kwargs = _conditioning(policy, batch)
        b = kwargs["state"].shape[0]
        shape = (b, policy.config.horizon, policy.config.action_dim)
        device = kwargs["state"].device
        demos = mask = None
        if ACTIONS in batch:
            demos = batch[ACTIONS].to(device, torch.float32)
            if "actions" in policy._normalizers:
                demos = policy._normalizers["actions"].normalize(demos)
            mask = batch.get(ACTION_MASK)
            mask = None if mask is None else mask.to(device)
        fit_noise = _noise(samples, shape, seed, device)
        test_noise = _noise(held_out_samples, shape, seed + 1, device)
        accurate = DormandPrince54Solver(atol=reference_tol, rtol=reference_tol, max_nfe=100_000)
        with torch.no_grad():
            score = None
            if target == "demos":

                def score(x1: torch.Tensor) -> float:
                    return _masked_rms(x1, demos, mask)

            grid = fit_time_grid(
                policy.head,
                fit_noise,
                solver=solver,
                steps=steps,
                score=score,
                reference_solver=accurate if target == "ode" else None,
                sweeps=sweeps,
                **kwargs,
            )
            ref = accurate.solve(policy.head, test_noise, [0.0, 1.0], **kwargs).x
            info: dict[str, Any] = {"target": target, "observations": b, "samples": samples}
            for name, times in (("", grid.times), ("_uniform", grid_times("uniform", steps))):
                x1 = create_solver(solver).solve(policy.head, test_noise, list(times), **kwargs).x
                info[f"held_out_ode_error{name}"] = _rms(x1, ref)
                if demos is not None:
                    info[f"held_out_demo_error{name}"] = _masked_rms(x1, demos, mask)
        info["seconds"] = time.perf_counter() - t0
        return grid, info
    finally:
        policy.train(was_training)
