"""What a closed-loop evaluation runs and how: [`RolloutConfig`][flowvla.envs.rollout_config.RolloutConfig]
(tasks, init states, re-planning, rendering, videos, workers, the policy's identity)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from flowvla.cli import as_index_list
from flowvla.envs.libero import DEFAULT_CAMERAS, LIBERO_SUITES
from flowvla.envs.perturb import Perturbation
from flowvla.io import jsonable

__all__ = ["RolloutConfig"]


@dataclasses.dataclass
class RolloutConfig:
    """What to evaluate and how.

    Attributes:
        suite: LIBERO suite name.
        tasks: task indices (default: every task of the suite).
        init_states: init-state indices run for every task (default: all 50), or an int ``n`` for
            the first ``n``.
        replan_every: actions executed from each predicted chunk before re-planning (default: the
            whole chunk).
        max_steps: step limit per episode (default: the suite's, see ``LIBERO_SUITES``).
        settle_steps: dummy steps after reset, not counted (LIBERO evaluations use 10).
        image_size, cameras, depth: what is rendered for the policy.
        state_dim: pad/truncate the 8-D state to this size (default: leave it 8-D).
        video: which episodes get a video: ``"none"``, ``"failures"``, ``"successes"``, ``"all"``, or
            ``"first"`` (the first episode of each task).
        video_every: without ``video_size``, the video's frames are the policy's own observations
            and ``k`` also renders every ``k``-th step in between; with ``video_size``, every ``k``-th
            step is rendered (default: every step). Each costs a render per camera.
        video_size: render the video's frames apart from the policy's observations, at this height
            (each view ``video_size`` square, the views side by side), after every control step (or
            every ``video_every``-th), written at the simulator's 20 Hz (``20 / video_every`` fps)
            with the instruction, the step and the episode's outcome drawn on every frame. The
            policy's observations are not changed. It costs a render of every view at every
            step (about 0.1-0.15 s a view on a CPU), for every episode that may get a video:
            ``"failures"``, ``"successes"`` and ``"all"`` render them all. ``None``: the frames
            are the policy's own observations at each re-plan (cheap, small and fast-forward).
        video_format: ``"mp4"`` (falls back to GIF without imageio-ffmpeg) or ``"gif"``.
        out_dir: where records, summary and videos go (default: no files).
        workers: processes (each builds its own environments); 1 runs in this process.
        envs_per_worker: episodes of one task each process runs at once, in environments of their
            own, their observations planned by one policy call whenever several re-plan together
            (see [`run_episodes`][flowvla.envs.closed_loop.run_episodes]); 1: one at a time. Only for
            the simulator's episodes (a custom ``episode_fn`` runs one at a time). A batched call
            gets an int ``predict_kwargs["seed"]`` as one seed per sample.
        seed: base seed; episode ``i`` of a task seeds numpy with ``seed + init_state``.
        predict_kwargs: passed to ``predict_action`` on every call.
        temporal_ensemble: ACT's temporal ensembling: execute, at each step, the weighted mean of
            every still-running chunk's action for that step, with weight ``exp(-m * i)`` for the
            ``i``-th oldest of them (``m`` is this value, ``i = 0`` the oldest, as in ACT).
            ``None``: execute each chunk's actions as predicted. Combine with a small
            ``replan_every`` (1 re-plans every step, as ACT does).
        replan_at_gripper: cut a chunk just before its first gripper toggle (open <-> close, the
            sign of the last action dimension) and re-plan there, so the gripper only changes as the
            first action of a chunk predicted from the current observation, not from one taken
            ``replan_every`` steps earlier. Costs extra predictions around grasps and releases.
        hard_reset: rebuild the MuJoCo model at every reset, as LIBERO's evaluation does. The default
            keeps it, which runs the same episodes bit for bit (see
            [`LiberoEnv`][flowvla.envs.libero.LiberoEnv]) and saves about 1.7 s of CPU per episode;
            records of either setting count for the other.
        progress: show a progress bar (tqdm when installed).
        policy_id: JSON-safe identity of the evaluated policy (path, weights hash, training step ...),
            written into every record and the summary. Records already in ``out_dir`` are reused
            only if they carry the same identity and outcome settings (step limit, re-planning,
            rendering, seeds, ``predict_kwargs``).
        perturbation: what to change in every episode after its init state is loaded (objects shifted,
            camera jitter; see [`Perturbation`][flowvla.envs.perturb.Perturbation]); drawn from the
            episode's seed. ``None``: the official evaluation.
        instructions: task index -> the instruction the policy is given instead of the task's own
            (paraphrases held out of training); tasks not listed keep theirs.
        on_mismatch: what to do when they do not: ``"error"`` raises
            [`StaleRecordsError`][flowvla.envs.rollout.StaleRecordsError]; ``"restart"`` moves the old
            records, summary and videos to ``<out_dir>/stale-<n>/`` and starts fresh.
    """

    suite: str
    tasks: Sequence[int] | None = None
    init_states: Sequence[int] | int = 50
    replan_every: int | None = None
    max_steps: int | None = None
    settle_steps: int = 10
    image_size: int = 128
    cameras: Sequence[str] = DEFAULT_CAMERAS
    depth: bool = False
    state_dim: int | None = None
    video: str = "none"
    video_every: int | None = None
    video_size: int | None = None
    video_format: str = "mp4"
    out_dir: str | None = None
    workers: int = 1
    envs_per_worker: int = 1
    seed: int = 0
    predict_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    temporal_ensemble: float | None = None
    replan_at_gripper: bool = False
    hard_reset: bool = False
    progress: bool = True
    policy_id: dict[str, Any] | None = None
    perturbation: Perturbation | None = None
    instructions: dict[int, str] | None = None
    on_mismatch: str = "error"

    def __post_init__(self) -> None:
        if self.suite not in LIBERO_SUITES:
            raise ValueError(
                f"suite={self.suite!r} is not a LIBERO suite; choose one of {sorted(LIBERO_SUITES)}"
            )
        n_tasks = LIBERO_SUITES[self.suite].num_tasks
        self.tasks = list(range(n_tasks)) if self.tasks is None else as_index_list(self.tasks, "tasks")
        bad = [t for t in self.tasks if not 0 <= t < n_tasks]
        if bad:
            raise ValueError(f"tasks {bad} out of range for {self.suite} ({n_tasks} tasks)")
        if isinstance(self.init_states, int):
            if not 0 < self.init_states <= 50:
                raise ValueError(f"init_states={self.init_states}: give 1..50 or a list of indices")
            self.init_states = list(range(self.init_states))
        self.init_states = [int(i) for i in self.init_states]
        if not self.init_states or any(not 0 <= i < 50 for i in self.init_states):
            raise ValueError(f"init_states must be non-empty indices in [0, 50), got {self.init_states}")
        if self.replan_every is not None and self.replan_every < 1:
            raise ValueError(f"replan_every must be >= 1, got {self.replan_every}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.temporal_ensemble is not None and self.temporal_ensemble < 0:
            raise ValueError(f"temporal_ensemble must be >= 0 or None, got {self.temporal_ensemble}")
        if self.replan_at_gripper and self.temporal_ensemble is not None:
            raise ValueError(
                "replan_at_gripper with temporal_ensemble: an ensembled action mixes several chunks' "
                "gripper commands, so there is no single toggle to cut at; choose one"
            )
        if self.video not in ("none", "failures", "successes", "all", "first"):
            raise ValueError(f"video={self.video!r}: choose none, failures, successes, all or first")
        if self.video_every is not None and self.video_every < 1:
            raise ValueError(f"video_every must be >= 1 or None, got {self.video_every}")
        if self.video_size is not None and self.video_size < 16:
            raise ValueError(f"video_size must be >= 16 pixels or None, got {self.video_size}")
        if self.video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format={self.video_format!r}: choose mp4 or gif")
        if self.video != "none" and self.out_dir is None:
            raise ValueError("video needs out_dir to write into")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1, got {self.envs_per_worker}")
        if self.perturbation is not None and not isinstance(self.perturbation, Perturbation):
            raise TypeError(f"perturbation: expected a Perturbation, got {type(self.perturbation).__name__}")
        if self.perturbation is not None:
            self.perturbation.check_suite(self.suite)
        if self.instructions is not None:
            self.instructions = {int(t): str(text) for t, text in self.instructions.items()}
            bad = sorted(set(self.instructions) - set(self.tasks))
            if bad:
                raise ValueError(f"instructions: tasks {bad} are not evaluated (tasks={self.tasks})")
            empty = [t for t, text in self.instructions.items() if not text.strip()]
            if empty:
                raise ValueError(f"instructions: tasks {empty} have an empty instruction")
        if self.on_mismatch not in ("error", "restart"):
            raise ValueError(f"on_mismatch={self.on_mismatch!r}: choose 'error' or 'restart'")
        if self.policy_id is not None:
            if not isinstance(self.policy_id, dict):
                raise TypeError(f"policy_id must be a dict or None, got {type(self.policy_id).__name__}")
            try:
                # Records hold it as JSON: compare what a resumed run reads back, not the live object.
                self.policy_id = json.loads(json.dumps(self.policy_id))
            except (TypeError, ValueError) as e:
                raise ValueError(f"policy_id must be JSON-serialisable: {e}") from e

    @property
    def step_limit(self) -> int:
        """The step limit in force: ``max_steps``, else the suite's standard limit."""
        return self.max_steps or LIBERO_SUITES[self.suite].max_steps

    def outcome_settings(self) -> dict[str, Any]:
        """The settings that decide an episode's outcome (besides the policy), as records store them."""
        return {
            "step_limit": self.step_limit,
            "replan_every": self.replan_every,
            "settle_steps": self.settle_steps,
            "image_size": self.image_size,
            "cameras": list(self.cameras),
            "depth": self.depth,
            "state_dim": self.state_dim,
            "seed": self.seed,
            "hard_reset": self.hard_reset,
            "predict_kwargs": jsonable(self.predict_kwargs),
            "temporal_ensemble": self.temporal_ensemble,
            # Only when set, so records of official evaluations written before these existed resume.
            **({"replan_at_gripper": True} if self.replan_at_gripper else {}),
            **({"perturbation": self.perturbation.to_dict()} if self.perturbation else {}),
            **(
                {"instructions": {str(k): v for k, v in self.instructions.items()}}
                if self.instructions
                else {}
            ),
        }
