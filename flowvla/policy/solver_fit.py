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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flowvla.solvers import DormandPrince54Solver, get_solver
from flowvla.solvers.bespoke import BespokeSolver, fit_bespoke_solver

__all__ = ["fit_policy_solver"]


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
        g = torch.Generator().manual_seed(seed)
        fit_noise = torch.randn((samples, *shape), generator=g, dtype=torch.float32).to(device)
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
            noise = torch.randn(
                (held_out_samples, *shape),
                generator=torch.Generator().manual_seed(seed + 1),
                dtype=torch.float32,
            ).to(device)
            with torch.no_grad():
                ref = DormandPrince54Solver(atol=1e-7, rtol=1e-7, max_nfe=100_000).solve(
                    policy.head, noise, [0.0, 1.0], **kwargs
                )
                uniform = torch.linspace(0, 1, steps + 1).tolist()
                euler10 = torch.linspace(0, 1, 11).tolist()
                info.update(
                    held_out_error=_rms(solver.solve(policy.head, noise, uniform, **kwargs).x, ref.x),
                    held_out_base_error=_rms(
                        get_solver(base).solve(policy.head, noise, uniform, **kwargs).x, ref.x
                    ),
                    held_out_euler10_error=_rms(
                        get_solver("euler").solve(policy.head, noise, euler10, **kwargs).x, ref.x
                    ),
                )
        solver.info.update(info)
        return solver
    finally:
        for p in frozen:
            p.requires_grad_(True)
        policy.train(was_training)
