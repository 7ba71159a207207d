"""What [`generate`][flowvla.recipes.generate.generate] makes
([`GenerateConfig`][flowvla.recipes.generate_config.GenerateConfig]), and which layout each attempt
draws: its seed ([`attempt_seed`][flowvla.recipes.generate_config.attempt_seed]) and its distance to the
official init states, which are kept for evaluation
([`init_state_distance`][flowvla.recipes.generate_config.init_state_distance])."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flowvla.checks import check_nonnegative
from flowvla.cli import as_index_list
from flowvla.envs.experts.episode import NoiseBursts
from flowvla.envs.libero import DEFAULT_CAMERAS, LIBERO_SUITES
from flowvla.envs.perturb import Perturbation
from flowvla.typing import Float, typechecked

__all__ = ["GenerateConfig", "attempt_seed", "demo_perturbation", "init_state_distance"]

_SUITE_IDS = {name: i for i, name in enumerate(LIBERO_SUITES)}


def demo_perturbation(
    perturbation: Perturbation | Mapping[str, Any] | None, object_scatter_m: float = 0.0
) -> Perturbation | None:
    """``perturbation`` (or its fields, as [`Perturbation.to_dict`][flowvla.envs.perturb.Perturbation.to_dict]
    writes them) checked as one demonstrations may be recorded under; ``None`` when nothing is on.

    Raises:
        ValueError: unknown fields or bad amounts; ``changed_task`` (an evaluation axis: a
            demonstration is recorded under its own task's instruction); its ``object_shift_m`` or
            ``object_scatter_m`` together with ``object_scatter_m`` (both move the objects).
    """
    if perturbation is None:
        return None
    if isinstance(perturbation, Mapping):
        perturbation = Perturbation.from_dict(perturbation)
    if not isinstance(perturbation, Perturbation):
        raise ValueError(f"perturbation: expected a Perturbation, got {type(perturbation).__name__}")
    if perturbation.changed_task:
        raise ValueError(
            "perturbation: changed_task is an evaluation axis; a demonstration is recorded "
            "under its own task's instruction"
        )
    moves = [n for n in ("object_shift_m", "object_scatter_m") if getattr(perturbation, n)]
    if moves and object_scatter_m:
        raise ValueError(f"perturbation: {moves[0]} and object_scatter_m both move the objects: give one")
    return perturbation if perturbation.active else None


@dataclasses.dataclass
class GenerateConfig:
    """What to generate.

    Attributes:
        out_dir: where datasets, logs and summaries go.
        suites: LIBERO suite names.
        tasks: task indices, applied to every suite (default: every task whose goal the expert
            supports; tasks named here that it does not support raise ``UnsupportedGoalError``).
        demos_per_task: kept demonstrations wanted per task.
        max_attempts: give up on a task after this many attempts (default: ``3 * demos_per_task``).
        max_episodes: stop this run after this many attempts in total (the rest resumes later).
        give_up_after: stop a task whose first this-many attempts all failed (the expert does not
            solve it; no point burning ``max_attempts`` episodes).
        image_size: rendered height = width.
        image_stride: render views at every ``k``-th step only (rendering is most of a demo's cost).
        cameras: views rendered, in order.
        depth: also store metric depth with per-frame intrinsics / extrinsics.
        images: render observations at all (``False``: actions, states and proprioception only).
        workers: processes (each with its own simulators); 1 runs in this process.
        seed: base seed; attempt seeds derive from it
            ([`attempt_seed`][flowvla.recipes.generate_config.attempt_seed]).
        max_steps: step limit per episode (default: the suite's evaluation limit).
        settle_steps: dummy steps after reset, not recorded (as LIBERO evaluations).
        official_tol: a fresh layout within this distance (m, any qpos entry) of an official init
            state is discarded.
        hard_reset: rebuild the MuJoCo model at every reset, as LIBERO's evaluation does. The
            default reuses it, which saves about 2 s of each reset; the recorded actions equal a
            hard-reset run's to 1e-13 (libero_object 0; 1e-6 before the kept model's gripper command
            was cleared) and replay to success under a hard reset (the parity check verifies this on
            every recipe run).
        image_convention: ``"opengl"`` (as the official files) or ``"opencv"`` (upright).
        action_noise: DART-style noise on the executed translation actions while the expert's clean
            actions are recorded as labels (see
            [`run_expert_episode`][flowvla.envs.experts.episode.run_expert_episode]); 0: off.
        noise_bursts: ``(length, gap)``: inject that noise in bursts of ``length`` steps about
            ``gap`` steps apart, the expert's recovery executed clean in between (``None``: at every
            step).
        object_scatter_m: move every free object of each fresh layout to a random point within
            this distance (m) before the expert starts (see
            [`scatter_objects`][flowvla.envs.perturb.scatter_objects]): layouts wider than LIBERO's
            placement regions, so a policy must find objects rather than remember where they lie.
            0: LIBERO's own layouts.
        perturbation: what else to change in every attempt (see
            [`Perturbation`][flowvla.envs.perturb.Perturbation]), drawn from the attempt's seed: the
            layout axes (objects moved or swapped, the robot's joints) before the expert starts, the
            appearance axes (camera, lights, table and walls, pixel noise) before the kept episode is
            rendered. ``changed_task`` is an evaluation axis (a demonstration is recorded under its
            own task's instruction) and is refused. ``None``: nothing.
        compression: h5py compression of images (``None``, ``"gzip"``, ``"lzf"``).
        progress: show a progress bar.
        wait_for_lock: when another job is generating into ``out_dir`` (a shared cache), wait for it
            to finish, then resume what it left (False: refuse at once with
            [`FolderBusyError`][flowvla.io.FolderBusyError]).
    """

    out_dir: str
    suites: Sequence[str] = ("libero_object",)
    tasks: Sequence[int] | None = None
    demos_per_task: int = 50
    max_attempts: int | None = None
    max_episodes: int | None = None
    give_up_after: int = 20
    image_size: int = 128
    image_stride: int = 1
    cameras: Sequence[str] = DEFAULT_CAMERAS
    depth: bool = False
    images: bool = True
    workers: int = 1
    seed: int = 0
    max_steps: int | None = None
    settle_steps: int = 10
    official_tol: float = 1e-3
    hard_reset: bool = False
    image_convention: str = "opengl"
    action_noise: float = 0.0
    noise_bursts: tuple[int, int] | None = None
    object_scatter_m: float = 0.0
    perturbation: Perturbation | None = None
    compression: str | None = None
    progress: bool = True
    wait_for_lock: bool = True

    def __post_init__(self) -> None:
        self.suites = [self.suites] if isinstance(self.suites, str) else list(self.suites)
        bad = [s for s in self.suites if s not in LIBERO_SUITES]
        if bad or not self.suites:
            raise ValueError(
                f"suites {bad or self.suites} are not LIBERO suites; choose from {sorted(LIBERO_SUITES)}"
            )
        if self.tasks is not None:
            self.tasks = as_index_list(self.tasks, "tasks")
            for s in self.suites:
                n = LIBERO_SUITES[s].num_tasks
                out = [t for t in self.tasks if not 0 <= t < n]
                if out:
                    raise ValueError(f"tasks {out} out of range for {s} ({n} tasks)")
        if self.demos_per_task < 1:
            raise ValueError(f"demos_per_task must be >= 1, got {self.demos_per_task}")
        if self.max_attempts is None:
            self.max_attempts = 3 * self.demos_per_task
        if self.max_attempts < self.demos_per_task:
            raise ValueError(f"max_attempts={self.max_attempts} < demos_per_task={self.demos_per_task}")
        if self.max_episodes is not None and self.max_episodes < 0:
            raise ValueError(f"max_episodes must be >= 0, got {self.max_episodes}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.image_stride < 1:
            raise ValueError(f"image_stride must be >= 1, got {self.image_stride}")
        check_nonnegative("action_noise", self.action_noise)
        check_nonnegative("object_scatter_m", self.object_scatter_m, "metres")
        self.perturbation = demo_perturbation(self.perturbation, self.object_scatter_m)
        if self.noise_bursts is not None:
            # The schedule checks itself; built here so a bad one fails before any episode runs.
            length, gap = (int(v) for v in self.noise_bursts)
            NoiseBursts(length, gap, np.random.default_rng(0))
            self.noise_bursts = (length, gap)
        if self.image_convention not in ("opengl", "opencv"):
            raise ValueError(f"image_convention={self.image_convention!r}: choose 'opengl' or 'opencv'")
        self.cameras = list(self.cameras)
        if self.images and not self.cameras:
            raise ValueError("cameras is empty; pass images=False for a dataset without images")


def attempt_seed(seed: int, suite: str, task: int, attempt: int) -> int:
    """The sampler seed of one attempt: distinct across suites, tasks and attempts, stable across runs."""
    ss = np.random.SeedSequence([seed, _SUITE_IDS[suite], task, attempt])
    return int(ss.generate_state(1, dtype=np.uint32)[0])


@typechecked
def init_state_distance(
    state: Float[np.ndarray, " D"], others: Float[np.ndarray, "N D"], nq: int
) -> Float[np.ndarray, " N"]:
    """Largest absolute ``qpos`` difference (m or rad) between ``state`` and each of ``others``.

    Flattened states are ``[time, qpos (nq), qvel]``; time and velocities say nothing about the
    layout, so only ``qpos`` is compared. A fresh layout from the region sampler differs from every
    official init state by centimetres; a distance near 0 means the same layout.

    Args:
        state: ``[D]`` one flattened state.
        others: ``[N, D]`` states to compare with (e.g. a task's official init states).
        nq: the model's number of position coordinates.
    """
    if not 1 + nq <= state.shape[0]:
        raise ValueError(f"nq={nq} does not fit a state of size {state.shape[0]}")
    return np.abs(others[:, 1 : 1 + nq] - state[None, 1 : 1 + nq]).max(axis=1)
