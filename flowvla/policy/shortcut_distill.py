"""A shortcut student of a trained policy: its flow head, distilled to sample in 1-2 steps.

[`distill_policy_shortcut`][flowvla.policy.shortcut_distill.distill_policy_shortcut] copies a
[`VLAPolicy`][flowvla.policy.VLAPolicy], gives the copy's head a step-size input
([`add_step_conditioning`][flowvla.dit.head.FlowActionHead.add_step_conditioning]: it starts as the
same field for every step size) and trains that head with the shortcut objective
([`shortcut_targets`][flowvla.flow.shortcut.shortcut_targets], after Frans et al., 2024): at step
size 0 it matches the teacher head's velocity, and one step of size ``d`` matches two of size
``d / 2``. The backbone, router and geometry branch are shared with the teacher and frozen, so their
outputs are computed once per observation. The student samples through the same
``predict_action(solver="shortcut", steps=n)`` and saves and loads like any policy (its config
records ``head.step_conditioning``); other solvers still see its step-0 field, the teacher's.

The path points are the demonstrated chunks of ``batch`` (normalised like in training) mixed with
noise, so the student learns the field where the policy's samples go. ``info`` reports, on noise
held out of the training, the RMS end-point error (normalised action units) of the student at 1, 2
and 4 steps and of the teacher with Euler at 1, 2 and 10 steps, all against a Dormand-Prince solve
of the teacher's field on the same observations.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from flowvla.data.batch import ACTION_MASK, ACTIONS
from flowvla.flow.objective import masked_mse
from flowvla.flow.shortcut import shortcut_targets
from flowvla.policy.solver_fit import _noise, _rms
from flowvla.solvers import DormandPrince54Solver, create_solver
from flowvla.typing import Tensor

__all__ = ["distill_policy_shortcut"]

#: Student step counts and teacher Euler step counts compared in ``info``.
STUDENT_STEPS = (1, 2, 4)
TEACHER_EULER_STEPS = (1, 2, 10)


def _rows(contexts: Any, idx: Tensor) -> Any:
    """The rows ``idx`` of the batch of ``contexts`` (one tensor ``[B, T, C]``, a stack
    ``[K, B, T, C]`` or a list of ``[B, T, C]``)."""
    if isinstance(contexts, Tensor):
        return contexts[idx] if contexts.dim() == 3 else contexts[:, idx]
    return [c[idx] for c in contexts]


@torch.no_grad()
def _encode_all(policy: Any, batch: Mapping[str, Any], chunk: int) -> dict[str, Any]:
    """The frozen part of the policy on every observation of ``batch``, ``chunk`` rows at a time."""
    b = policy.check_batch(batch)
    parts: list[tuple[Any, Tensor, Tensor]] = []
    for lo in range(0, b, chunk):
        sub = {k: (v[lo : lo + chunk] if isinstance(v, (Tensor, list)) else v) for k, v in batch.items()}
        enc = policy._encode(sub)
        state = policy._conditioning(policy._state(sub), enc)
        parts.append((enc.routed.contexts, enc.mask, state))
    first = parts[0][0]
    if isinstance(first, Tensor):
        dim = 0 if first.dim() == 3 else 1
        contexts: Any = torch.cat([p[0] for p in parts], dim=dim)
    else:
        contexts = [torch.cat([p[0][k] for p in parts]) for k in range(len(first))]
    return {
        "contexts": contexts,
        "mask": torch.cat([p[1] for p in parts]),
        "state": torch.cat([p[2] for p in parts]),
    }


def _normalised_actions(policy: Any, batch: Mapping[str, Any], device: torch.device) -> Tensor:
    actions = batch[ACTIONS].to(device, torch.float32)
    if "actions" in policy._normalizers:
        actions = policy._normalizers["actions"].normalize(actions)
    return actions


def distill_policy_shortcut(
    policy: Any,
    batch: Mapping[str, Any],
    *,
    iterations: int = 2000,
    batch_size: int = 64,
    lr: float = 3e-4,
    min_step: float = 1 / 64,
    consistency_fraction: float = 0.5,
    held_out_samples: int = 2,
    encode_chunk: int = 64,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Distil ``policy``'s flow head into a shortcut student on the observations of ``batch``.

    Args:
        policy: a trained [`VLAPolicy`][flowvla.policy.VLAPolicy] (the teacher; not changed).
        batch: observations with their demonstrated chunks (``actions`` ``[N, H, A]``, optionally
            ``action_mask``), e.g. frames of the training demonstrations.
        iterations: Adam steps.
        batch_size: observations per step (drawn with replacement).
        lr: peak learning rate (5% linear warm-up, then cosine); the student starts as the
            teacher, so a fine-tuning rate.
        min_step: the finest step size; below it the teacher gives the half-step velocity.
        consistency_fraction: share of each batch on the self-consistency target (the rest match
            the teacher's velocity at step size 0).
        held_out_samples: noise draws per observation for the errors in ``info`` (0: none).
        encode_chunk: observations per pass of the frozen backbone.
        seed: seeds the draws (training and held-out noise come from different streams).
        progress: called as ``progress(iteration, loss)`` after every step.

    Returns:
        ``(student, info)``: the student policy (a copy; ``config.head.step_conditioning`` set) and
        ``seconds``, ``iterations``, ``observations``, ``teacher_evaluations`` (teacher calls times
        samples), ``final_loss`` (mean of the last 10% of steps), ``parameters`` (trained), and with
        held-out noise ``held_out_error`` (student steps -> RMS error) and ``held_out_teacher_euler``
        (Euler steps -> RMS error).
    """
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations: must be a positive integer, got {iterations!r}")
    if batch_size < 2:
        raise ValueError(f"batch_size: must be >= 2, got {batch_size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: must be positive and finite, got {lr}")
    if ACTIONS not in batch:
        raise ValueError("batch: needs 'actions' (the demonstrated chunks the path points are drawn around)")
    if policy.head.step_conditioning:
        raise ValueError("policy: its head is a shortcut student already; distil from the original policy")
    start = time.perf_counter()
    teacher = policy.head
    was_training = policy.training
    policy.eval()
    try:
        frozen = _encode_all(policy, batch, encode_chunk)
        device = frozen["state"].device
        data = _normalised_actions(policy, batch, device)
        mask = batch.get(ACTION_MASK)
        mask = None if mask is None else mask.to(device)
        n = data.shape[0]

        student = copy.deepcopy(policy)
        student.head.add_step_conditioning()
        student.config.head.step_conditioning = True
        for p in student.parameters():
            p.requires_grad_(False)
        params = list(student.head.parameters())
        for p in params:
            p.requires_grad_(True)
        head = student.head
        head.train()
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        warmup = max(1, iterations // 20)

        def schedule(i: int) -> float:  # linear warm-up over 5%, then cosine to 0
            if i < warmup:
                return (i + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, iterations - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        gen = torch.Generator().manual_seed(seed)
        teacher_evals, losses = 0, []
        for it in range(iterations):
            idx = torch.randint(n, (batch_size,), generator=gen).to(device)
            contexts, cmask, state = _rows(frozen["contexts"], idx), frozen["mask"][idx], frozen["state"][idx]
            with torch.no_grad():
                tcache = teacher.encode_context(contexts, cmask)
            scache = head.encode_context(contexts, cmask)

            def teacher_fn(x: Tensor, t: Tensor, tcache: Any = tcache, state: Tensor = state) -> Tensor:
                return teacher(x, t, cache=tcache, state=state)

            def student_fn(
                x: Tensor, t: Tensor, d: Tensor, scache: Any = scache, state: Tensor = state
            ) -> Tensor:
                return head(x, t, cache=scache, state=state, step=d)

            rows = data[idx]
            noise = torch.randn(rows.shape, generator=gen).to(device)
            draw = shortcut_targets(
                student_fn,
                teacher_fn,
                rows,
                noise,
                min_step=min_step,
                consistency_fraction=consistency_fraction,
                generator=gen,
            )
            teacher_evals += draw.teacher_evaluations
            pred = student_fn(draw.x, draw.t, draw.d)
            loss, _ = masked_mse(pred, draw.target, None if mask is None else mask[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(it + 1, losses[-1])
        head.eval()
        for p in params:
            p.requires_grad_(False)
        tail = losses[-max(1, len(losses) // 10) :]
        info: dict[str, Any] = {
            "iterations": iterations,
            "observations": n,
            "teacher_evaluations": teacher_evals,
            "final_loss": sum(tail) / len(tail),
            "parameters": sum(p.numel() for p in params),
        }
        if held_out_samples:
            info.update(_held_out_errors(teacher, head, frozen, data.shape, held_out_samples, seed + 1))
        info["seconds"] = time.perf_counter() - start
        return student, info
    finally:
        policy.train(was_training)


@torch.no_grad()
def _held_out_errors(
    teacher: Any, student: Any, frozen: dict[str, Any], shape: tuple[int, ...], samples: int, seed: int
) -> dict[str, Any]:
    noise = _noise(samples, tuple(shape), seed, frozen["state"].device)
    tcache = teacher.encode_context(frozen["contexts"], frozen["mask"])
    scache = student.encode_context(frozen["contexts"], frozen["mask"])
    tk = {"cache": tcache, "state": frozen["state"]}
    sk = {"cache": scache, "state": frozen["state"]}
    ref = DormandPrince54Solver(atol=1e-6, rtol=1e-6, max_nfe=100_000).solve(teacher, noise, [0.0, 1.0], **tk)

    def uniform(k: int) -> list[float]:
        return torch.linspace(0, 1, k + 1).tolist()

    shortcut, euler = create_solver("shortcut"), create_solver("euler")
    return {
        "held_out_samples": samples,
        "held_out_error": {
            k: _rms(shortcut.solve(student, noise, uniform(k), **sk).x, ref.x) for k in STUDENT_STEPS
        },
        "held_out_teacher_euler": {
            k: _rms(euler.solve(teacher, noise, uniform(k), **tk).x, ref.x) for k in TEACHER_EULER_STEPS
        },
    }
