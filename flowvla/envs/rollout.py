"""Evaluate any policy on LIBERO: chunked execution, re-planning, success rates, records, videos.

The runner talks to a policy through one method (the contract of ``flowvla.policy``)::

    actions, debug_info = policy.predict_action(batch, **predict_kwargs)

``batch`` is a [`collate`][flowvla.data.batch.collate] d observation with ``B = 1`` (images
``[1, V, 3, H, W]`` uint8, ``instruction`` list, ``state [1, S]``, optional depth/cameras);
``actions`` is ``[1, H, 7]`` (numpy or torch) in LIBERO's action space, ``debug_info`` a dict (may be
empty). The runner executes the first ``replan_every`` actions of each chunk with physics only, then
renders and asks again, until the task succeeds or the suite's step limit is reached.

Each episode is appended to ``<out_dir>/episodes.jsonl`` as soon as it ends (so an interrupted run
resumes where it stopped), and ``<out_dir>/summary.json`` holds per-task and overall success rates
with Wilson 95% intervals, the policy's identity and the settings used (the real step limit).

A record names the policy that produced it (``RolloutConfig.policy_id``, e.g. a weights hash from
``flowvla.policy.policy_identity``) and the settings that decide an episode's outcome. Records are
reused only when both match this run: an ``out_dir`` written by another policy, or with another step
limit, is refused or (``on_mismatch="restart"``) moved aside, never silently mixed in.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowvla.cli import as_index_list
from flowvla.data.batch import STATE, STATE_MASK, collate, pad_state
from flowvla.envs.libero import ACTION_DIM, DEFAULT_CAMERAS, LIBERO_SUITES, LiberoEnv
from flowvla.envs.libero_setup import prepare_libero
from flowvla.envs.outcome import OutcomeTracker
from flowvla.envs.perturb import Perturbation
from flowvla.envs.video import tile_views, write_video
from flowvla.io import write_json_atomic

__all__ = [
    "SEAM_SMOOTHNESS",
    "ConstantPolicy",
    "EpisodeRecord",
    "Policy",
    "Progress",
    "RandomPolicy",
    "RolloutConfig",
    "StaleRecordsError",
    "action_smoothness",
    "evaluate",
    "gripper_toggles",
    "load_records",
    "run_episode",
    "smoothness_columns",
    "summarize",
    "wilson_interval",
]


@runtime_checkable
class Policy(Protocol):
    """Anything with ``predict_action(batch, **kwargs) -> (actions [B, H, A], debug_info)``."""

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]: ...


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%); ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside ``[0, 1]`` and is sensible at 0 / n successes,
    which is where LIBERO success rates live.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp the float round-off at 0 / n successes so the interval contains p exactly.
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


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
        video_every: frames for the video are the policy's own observations; with ``k`` set, also
            render every ``k`` steps in between (costs a render per frame).
        video_format: ``"mp4"`` (falls back to GIF without imageio-ffmpeg) or ``"gif"``.
        out_dir: where records, summary and videos go (default: no files).
        workers: processes (each builds its own environments); 1 runs in this process.
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
        hard_reset: rebuild the MuJoCo model at every reset, as LIBERO's evaluation does.
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
    video_format: str = "mp4"
    out_dir: str | None = None
    workers: int = 1
    seed: int = 0
    predict_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    temporal_ensemble: float | None = None
    replan_at_gripper: bool = False
    hard_reset: bool = True
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
        if self.video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format={self.video_format!r}: choose mp4 or gif")
        if self.video != "none" and self.out_dir is None:
            raise ValueError("video needs out_dir to write into")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.perturbation is not None and not isinstance(self.perturbation, Perturbation):
            raise TypeError(f"perturbation: expected a Perturbation, got {type(self.perturbation).__name__}")
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
            "predict_kwargs": _jsonable(self.predict_kwargs),
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


class StaleRecordsError(ValueError):
    """``out_dir`` holds episodes of another policy or other settings; the message says which."""


@dataclasses.dataclass
class EpisodeRecord:
    """One evaluated episode (one line of ``episodes.jsonl``). Times in seconds."""

    suite: str
    task_index: int
    task_name: str
    instruction: str
    init_state: int
    seed: int
    success: bool
    steps: int
    step_limit: int
    replans: int
    time_total: float
    time_policy: float
    time_render: float
    time_physics: float
    time_reset: float
    video: str | None = None
    debug: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None
    smoothness: dict[str, float] | None = None
    perturbation: dict[str, Any] | None = None

    def key(self) -> tuple[str, int, int]:
        return self.suite, self.task_index, self.init_state


def _as_numpy_actions(actions: Any) -> np.ndarray:
    if hasattr(actions, "detach"):
        actions = actions.detach().float().cpu().numpy()
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 1 or a.shape[2] != ACTION_DIM or a.shape[1] < 1:
        raise ValueError(
            f"predict_action must return actions of shape [1, H, {ACTION_DIM}] for a batch of "
            f"one, got {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("predict_action returned NaN or Inf actions")
    return a[0]


def _jsonable(x: Any) -> Any:
    """Scalars and small arrays of the policy's debug_info, made JSON-safe (large arrays summarised)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else {"shape": list(x.shape), "mean": float(x.mean())}
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if callable(getattr(x, "to_dict", None)):  # e.g. a fitted solver: its coefficients, not its repr
        return _jsonable(x.to_dict())
    return repr(x)


def _wants_video(cfg: RolloutConfig, first_of_task: bool) -> bool:
    # Frames must be collected before the outcome is known, so "failures" / "successes" collect them
    # for every episode and decide at the end.
    return cfg.video in ("all", "failures", "successes") or (cfg.video == "first" and first_of_task)


def _render_frame(env: LiberoEnv) -> np.ndarray:
    return tile_views(np.stack([env.render_camera(c)[0].transpose(2, 0, 1) for c in env.cameras]))


def ensemble_action(chunks: Sequence[tuple[int, np.ndarray]], step: int, m: float) -> np.ndarray:
    """ACT's temporal ensemble: the mean of every chunk's action for ``step``, the ``i``-th oldest
    chunk weighted by ``exp(-m * i)``.

    Args:
        chunks: ``(first step, [H, A] actions)`` of the predicted chunks, oldest first.
        step: the episode step to act at.
        m: the weight decay (0: a plain mean; large: the oldest prediction).

    Raises:
        ValueError: no chunk covers ``step``.
    """
    rows = [c[step - s0] for s0, c in chunks if 0 <= step - s0 < len(c)]
    if not rows:
        raise ValueError(f"step {step}: no predicted chunk covers it")
    w = np.exp(-m * np.arange(len(rows)))
    return (w[:, None] * np.stack(rows)).sum(0) / w.sum()


def run_episode(
    env: LiberoEnv, policy: Policy, cfg: RolloutConfig, init_state: int, record_video: bool = False
) -> tuple[EpisodeRecord, list[np.ndarray]]:
    """Run one episode of ``env``'s task from ``init_state``; return its record and video frames."""
    seed = cfg.seed + init_state
    t_start = time.perf_counter()
    applied: dict[str, Any] = {}
    perturb = None
    if cfg.perturbation is not None and cfg.perturbation.active:
        rng = np.random.default_rng([seed, 0x5E7])  # its own stream: LIBERO's numpy draws stay as they were

        def perturb(e: LiberoEnv) -> None:
            applied.update(cfg.perturbation.apply(e, rng))

    env.reset(init_state=init_state, seed=seed, settle_steps=cfg.settle_steps, perturb=perturb)
    t_reset = time.perf_counter() - t_start
    instruction = (cfg.instructions or {}).get(env.task.index, env.instruction)
    tracker = OutcomeTracker(env)
    limit = cfg.step_limit
    frames: list[np.ndarray] = []
    queue: list[np.ndarray] = []
    running: list[tuple[int, np.ndarray]] = []  # (first step, chunk), for temporal ensembling
    t_policy = t_render = t_physics = 0.0
    replans = steps = 0
    success = False
    last_debug: dict[str, Any] = {}
    executed: list[np.ndarray] = []
    chunk_starts: list[int] = []  # steps whose action is the first of a fresh chunk
    fresh = False  # the next queued action is the first of a chunk just predicted
    while steps < limit:
        if cfg.replan_at_gripper and queue and executed and not fresh:
            if gripper_toggles(executed[-1], queue[0]):
                queue = []
        if not queue:
            t0 = time.perf_counter()
            obs = env.observe()
            t1 = time.perf_counter()
            if cfg.state_dim is not None:
                obs[STATE], obs[STATE_MASK] = pad_state(obs[STATE], cfg.state_dim)
            obs["instruction"] = instruction
            actions, debug = policy.predict_action(collate([obs]), **cfg.predict_kwargs)
            t2 = time.perf_counter()
            t_render += t1 - t0
            t_policy += t2 - t1
            chunk = _as_numpy_actions(actions)
            queue = list(chunk[: cfg.replan_every or len(chunk)])
            if cfg.temporal_ensemble is not None:
                running = [(s0, c) for s0, c in running if s0 + len(c) > steps] + [(steps, chunk)]
            replans += 1
            fresh = True
            last_debug = debug if isinstance(debug, dict) else {}
            if record_video:
                frames.append(tile_views(obs["images"]))
        elif record_video and cfg.video_every and steps % cfg.video_every == 0:
            t0 = time.perf_counter()
            frames.append(_render_frame(env))
            t_render += time.perf_counter() - t0
        t0 = time.perf_counter()
        action = queue.pop(0)
        if cfg.temporal_ensemble is not None:
            action = ensemble_action(running, steps, cfg.temporal_ensemble)
        result = env.step(action)
        t_physics += time.perf_counter() - t0
        tracker.update(action)
        if fresh:
            chunk_starts.append(steps)
        executed.append(np.asarray(action, dtype=np.float64))
        fresh = False
        steps += 1
        if result.success:
            success = True
            break
    if record_video:
        frames.append(_render_frame(env))
    rec = EpisodeRecord(
        suite=cfg.suite,
        task_index=env.task.index,
        task_name=env.task.name,
        instruction=instruction,
        init_state=init_state,
        seed=seed,
        success=success,
        steps=steps,
        step_limit=limit,
        replans=replans,
        time_total=time.perf_counter() - t_start,
        time_policy=t_policy,
        time_render=t_render,
        time_physics=t_physics,
        time_reset=t_reset,
        debug=_jsonable(last_debug),
        policy=cfg.policy_id,
        settings=cfg.outcome_settings(),
        outcome=tracker.summary(success),
        smoothness=action_smoothness(np.stack(executed), chunk_starts) if executed else None,
        perturbation=applied or None,
    )
    return rec, frames


def gripper_toggles(previous: np.ndarray, action: np.ndarray) -> bool:
    """Whether ``action`` switches the gripper against ``previous`` (closed: last dimension > 0)."""
    return bool((previous[-1] > 0) != (action[-1] > 0))


#: The keys [`action_smoothness`][flowvla.envs.rollout.action_smoothness] adds when it knows the re-plans.
SEAM_SMOOTHNESS = ("second_diff_within", "second_diff_across", "third_diff_within", "third_diff_across")


def action_smoothness(actions: np.ndarray, chunk_starts: Sequence[int] | None = None) -> dict[str, float]:
    """Mean squared 2nd and 3rd finite differences over time of executed ``[T, 7]`` actions.

    Only the six arm dimensions count: the gripper command is a step (-1 -> +1) whose differences
    would swamp the arm's. A difference needs 3 (4) actions; shorter episodes give 0.

    Args:
        actions: ``[T, 7]`` executed actions.
        chunk_starts: the steps at which a freshly predicted chunk began (re-plans). When given, each
            difference is also counted as *within* one chunk or *across* a re-plan (its window holds a
            chunk's first action after its own first one): a chunk-smoothness loss can only act
            within, the seams between chunks are the re-planning's.

    Returns:
        ``second_diff`` and ``third_diff``; with ``chunk_starts`` also ``second_diff_within``,
        ``second_diff_across``, ``third_diff_within`` and ``third_diff_across`` (0 where no window of
        that kind exists).
    """
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"actions: expected [T, {ACTION_DIM}], got {list(actions.shape)}")
    arm = actions[:, : ACTION_DIM - 1]
    seam = np.zeros(len(arm), dtype=bool)
    if chunk_starts is not None:
        starts = np.asarray(list(chunk_starts), dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() >= len(arm)):
            raise ValueError(f"chunk_starts: steps must lie in [0, {len(arm)}), got {starts.tolist()}")
        seam[starts] = True
    out: dict[str, float] = {}
    for name, n in (("second_diff", 2), ("third_diff", 3)):
        sq = np.square(np.diff(arm, n=n, axis=0)).sum(-1)  # [T - n]
        out[name] = float(sq.mean()) if len(sq) else 0.0
        if chunk_starts is not None:
            # Window t covers steps t..t+n; a seam at t+1..t+n means two chunks meet inside it.
            across = np.zeros(0, dtype=bool)
            if len(sq):  # a window view needs at least one whole window
                across = np.lib.stride_tricks.sliding_window_view(seam[1:], n).any(-1)
            for part, mask in (("within", ~across), ("across", across)):
                out[f"{name}_{part}"] = float(sq[mask].mean()) if mask.any() else 0.0
    return out


# ----------------------------------------------------------------------------------- job execution
_WORKER: dict[str, Any] = {}


def _env_for(cfg: RolloutConfig, task: int) -> LiberoEnv:
    """A per-process cache of one env: consecutive episodes of a task reuse it (construction is ~5 s)."""
    key = (cfg.suite, task, cfg.image_size, tuple(cfg.cameras), cfg.depth, cfg.hard_reset)
    if _WORKER.get("env_key") != key:
        if _WORKER.get("env") is not None:
            _WORKER["env"].close()
        _WORKER["env"] = None
        _WORKER["env"] = LiberoEnv(
            cfg.suite,
            task,
            image_size=cfg.image_size,
            cameras=cfg.cameras,
            depth=cfg.depth,
            hard_reset=cfg.hard_reset,
        )
        _WORKER["env_key"] = key
    return _WORKER["env"]


def _video_path(cfg: RolloutConfig, task: int, init_state: int) -> Path:
    assert cfg.out_dir is not None
    name = f"{cfg.suite}_task{task:02d}_init{init_state:02d}.{cfg.video_format}"
    return Path(cfg.out_dir) / "videos" / name


def _run_job(
    policy: Policy, cfg: RolloutConfig, task: int, init_state: int, first_of_task: bool
) -> dict[str, Any]:
    env = _env_for(cfg, task)
    want = _wants_video(cfg, first_of_task)
    rec, frames = run_episode(env, policy, cfg, init_state, record_video=want)
    keep = want and (cfg.video in ("all", "first") or (cfg.video == "failures") != rec.success)
    if keep and frames:
        # Real-time playback: the frames span the episode's steps at LIBERO's 20 Hz control rate.
        fps = min(20.0, max(1.0, 20.0 * len(frames) / max(rec.steps, 1)))
        rec.video = str(write_video(frames, _video_path(cfg, task, init_state), fps=fps))
    return dataclasses.asdict(rec)


class _SavedPolicy:
    """A policy handed to worker processes as a directory it was saved to.

    Some policies cannot be pickled (``transformers`` models carry hook closures), and a saved
    directory is also far smaller to send than a pickled module; anything with ``save_pretrained`` /
    ``from_pretrained`` goes this way.
    """

    def __init__(self, policy: Any, directory: Path) -> None:
        self.cls, self.directory = type(policy), str(directory)
        policy.save_pretrained(directory)

    def load(self) -> Any:
        return self.cls.from_pretrained(self.directory).eval()


def _sendable(policy: Policy, tmp: str) -> Any:
    if callable(getattr(policy, "save_pretrained", None)) and callable(
        getattr(type(policy), "from_pretrained", None)
    ):
        return _SavedPolicy(policy, Path(tmp) / "policy")
    return policy


def _worker_init(policy: Policy, cfg: RolloutConfig) -> None:
    # Each worker is one of `workers` processes on the machine's cores: one thread each avoids
    # oversubscription between torch's intra-op pool and the other simulators.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(policy, _SavedPolicy):
        policy = policy.load()
    _WORKER["policy"], _WORKER["cfg"] = policy, cfg


def _worker_job(task: int, init_state: int, first_of_task: bool) -> dict[str, Any]:
    return _run_job(_WORKER["policy"], _WORKER["cfg"], task, init_state, first_of_task)


# ------------------------------------------------------------------------------------------ summary
def summarize(records: Iterable[EpisodeRecord | dict[str, Any]]) -> dict[str, Any]:
    """Success rate with a Wilson 95% interval, overall and per task, plus mean steps and times."""
    rows = [dataclasses.asdict(r) if isinstance(r, EpisodeRecord) else dict(r) for r in records]

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n, k = len(rs), sum(bool(r["success"]) for r in rs)
        lo, hi = wilson_interval(k, n)
        return {
            "episodes": n,
            "successes": k,
            "success_rate": k / n if n else float("nan"),
            "ci95": [lo, hi],
            "mean_steps": float(np.mean([r["steps"] for r in rs])) if rs else float("nan"),
            "mean_episode_s": float(np.mean([r["time_total"] for r in rs])) if rs else float("nan"),
            **_mean_smoothness(rs),
            # How episodes ended (flowvla.envs.outcome); records written before outcomes count as unknown.
            "outcomes": dict(
                collections.Counter((r.get("outcome") or {}).get("outcome", "unknown") for r in rs)
            ),
        }

    per_task: dict[str, Any] = {}
    for r in rows:
        per_task.setdefault(f"{r['suite']}/{r['task_index']}", []).append(r)
    out = block(rows)
    out["tasks"] = {
        k: {"task_name": v[0]["task_name"], "instruction": v[0]["instruction"], **block(v)}
        for k, v in sorted(per_task.items(), key=lambda kv: (kv[0].split("/")[0], int(kv[0].split("/")[1])))
    }
    return out


def smoothness_columns(summary: dict[str, Any]) -> dict[str, float | None]:
    """An evaluation summary's executed-action smoothness under the names a results row uses:
    ``second_diff`` and ``third_diff`` (``None`` when absent), then the seam split of
    ``SEAM_SMOOTHNESS`` where the records carried it."""
    out = {k: summary.get(f"mean_{k}") for k in ("second_diff", "third_diff")}
    out.update({k: summary[f"mean_{k}"] for k in SEAM_SMOOTHNESS if f"mean_{k}" in summary})
    return out


def _mean_smoothness(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Episode means of [`action_smoothness`][flowvla.envs.rollout.action_smoothness] (records
    written before it existed are left out)."""
    have = [r["smoothness"] for r in rows if r.get("smoothness")]
    if not have:
        return {}
    keys = [k for k in have[0] if all(k in h for h in have)]  # the seam split: newer records only
    return {f"mean_{k}": float(np.mean([h[k] for h in have])) for k in keys}


def load_records(path: Path) -> list[dict[str, Any]]:
    """The records of an ``episodes.jsonl`` file (``[]`` if absent), up to a line cut by a crash."""
    rows = []
    if path.exists():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut by a crash: everything before it is intact
    return rows


class Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.bar = None
        self.total, self.n, self.ok, self.enabled = total, 0, 0, enabled
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, desc=desc, unit="ep")
            except ImportError:
                self.desc = desc

    def update(self, success: bool) -> None:
        self.n += 1
        self.ok += bool(success)
        if self.bar is not None:
            self.bar.set_postfix(success=f"{self.ok}/{self.n}")
            self.bar.update(1)
        elif self.enabled:
            print(f"{self.desc}: {self.n}/{self.total} episodes, {self.ok} successes", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(
    policy: Policy, cfg: RolloutConfig, on_episode: Callable[[EpisodeRecord], None] | None = None
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``cfg``'s tasks x init states; return the summary (see
    [`summarize`][flowvla.envs.rollout.summarize]).

    With ``cfg.workers > 1`` the policy is pickled once into each worker process (spawned, so
    CUDA and GL state never cross a fork). With ``cfg.out_dir``, finished episodes found in
    ``episodes.jsonl`` are not run again.
    """
    if not callable(getattr(policy, "predict_action", None)):
        raise TypeError(
            f"policy must have a predict_action(batch, **kwargs) method; got {type(policy).__name__}"
        )
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    rec_path = out_dir / "episodes.jsonl" if out_dir else None
    done_rows = load_records(rec_path) if rec_path else []
    reason = _mismatch(done_rows, cfg)
    if reason is not None:
        assert out_dir is not None
        if cfg.on_mismatch == "error":
            raise StaleRecordsError(
                f"out_dir={str(out_dir)!r} holds episodes that this run must not reuse: {reason}. "
                "Evaluate into a new out_dir, or restart (on_mismatch='restart', --restart on the "
                "command line) to move the old records aside."
            )
        moved = _move_aside(out_dir)
        print(
            f"evaluate: {out_dir}: {reason}; starting fresh (old records moved to {moved})", file=sys.stderr
        )
        done_rows = []
    done = {(r["suite"], r["task_index"], r["init_state"]) for r in done_rows}
    if rec_path is not None and done_rows:
        # Rewrite without any truncated tail so appends start on a clean line.
        with open(rec_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in done_rows)
    jobs = [
        (t, i, j == 0)
        for t in cfg.tasks
        for j, i in enumerate(cfg.init_states)
        if (cfg.suite, t, i) not in done
    ]
    rows = [
        r
        for r in done_rows
        if r["suite"] == cfg.suite and r["task_index"] in cfg.tasks and r["init_state"] in cfg.init_states
    ]
    if jobs:
        # Fail on a missing simulator before any output, and choose the GL backend here so that
        # spawned workers inherit it.
        prepare_libero()
    progress = Progress(len(jobs), cfg.progress, f"{cfg.suite}")

    def finish(row: dict[str, Any]) -> None:
        rows.append(row)
        if rec_path is not None:
            rec_path.parent.mkdir(parents=True, exist_ok=True)
            with open(rec_path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        progress.update(row["success"])
        if on_episode is not None:
            on_episode(EpisodeRecord(**row))

    try:
        if cfg.workers == 1 or len(jobs) <= 1:
            for job in jobs:
                finish(_run_job(policy, cfg, *job))
        else:
            import tempfile

            ctx = mp.get_context("spawn")
            with (
                tempfile.TemporaryDirectory(prefix="flowvla-rollout-") as tmp,
                cf.ProcessPoolExecutor(
                    max_workers=min(cfg.workers, len(jobs)),
                    mp_context=ctx,
                    initializer=_worker_init,
                    initargs=(_sendable(policy, tmp), cfg),
                ) as pool,
            ):
                futures = [pool.submit(_worker_job, *job) for job in jobs]
                for fut in cf.as_completed(futures):
                    finish(fut.result())
    finally:
        progress.close()
        if _WORKER.get("env") is not None:
            _WORKER["env"].close()
            _WORKER.clear()
    summary = summarize(rows)
    summary["policy"] = cfg.policy_id
    config = dataclasses.asdict(cfg)
    config.pop("policy_id")
    config["predict_kwargs"] = _jsonable(config["predict_kwargs"])
    config["max_steps"] = cfg.step_limit  # the limit in force, not the None that means "the suite's"
    summary["config"] = config
    if out_dir is not None:
        write_json_atomic(out_dir / "summary.json", summary)
    return summary


def _describe(policy_id: dict[str, Any] | None) -> str:
    return "an unidentified policy" if policy_id is None else json.dumps(policy_id, sort_keys=True)


def _mismatch(rows: list[dict[str, Any]], cfg: RolloutConfig) -> str | None:
    """Why ``rows`` (records already in ``out_dir``) cannot count for ``cfg``, or None if they can."""
    for r in rows:
        if r.get("policy") != cfg.policy_id:
            return (
                f"they were written by {_describe(r.get('policy'))}, this run evaluates "
                f"{_describe(cfg.policy_id)}"
            )
    settings = cfg.outcome_settings()
    for r in rows:
        if r["suite"] != cfg.suite:
            continue  # other suites have other step limits; their records are not reused anyway
        theirs = r.get("settings") or {"step_limit": r["step_limit"]}  # records before settings
        differ = sorted(k for k in theirs if theirs[k] != settings.get(k))
        if differ:
            return ", ".join(f"{k} was {theirs[k]!r}, now {settings.get(k)!r}" for k in differ)
    return None


def _move_aside(out_dir: Path) -> Path:
    """Move the records, summary and videos of ``out_dir`` into a new ``out_dir/stale-<n>``."""
    n = 0
    while (out_dir / f"stale-{n}").exists():
        n += 1
    dest = out_dir / f"stale-{n}"
    dest.mkdir()
    for name in ("episodes.jsonl", "summary.json", "videos"):
        if (out_dir / name).exists():
            os.replace(out_dir / name, dest / name)
    return dest


class ConstantPolicy:
    """Baseline that always predicts the same action (default: stay still, gripper open).

    ``predict_action`` returns a ``[B, horizon, 7]`` float32 array; for smoke tests and timing.
    """

    def __init__(self, horizon: int = 8, action: Sequence[float] | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = horizon
        self.action = np.asarray(action if action is not None else [0.0] * 6 + [-1.0], dtype=np.float32)
        if self.action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have {ACTION_DIM} entries, got shape {self.action.shape}")

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        b = len(batch["instruction"])
        return np.broadcast_to(self.action, (b, self.horizon, ACTION_DIM)).copy(), {"policy": "constant"}


class RandomPolicy:
    """Baseline with uniform random actions in ``[-scale, scale]`` (gripper in ``{-1, 1}``), seeded."""

    def __init__(self, horizon: int = 8, scale: float = 0.5, seed: int = 0) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.scale = horizon, scale
        self.rng = np.random.default_rng(seed)

    def predict_action(self, batch: dict[str, Any], **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        b = len(batch["instruction"])
        a = self.rng.uniform(-self.scale, self.scale, size=(b, self.horizon, ACTION_DIM)).astype(np.float32)
        a[..., -1] = np.sign(a[..., -1]) + (a[..., -1] == 0)
        return a, {"policy": "random"}
