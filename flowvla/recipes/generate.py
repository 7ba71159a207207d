"""Generate LIBERO demonstration datasets with a scripted expert; interrupted runs resume.

For each task, attempts ``0, 1, 2, ...`` each draw a fresh initial layout from LIBERO's own BDDL
region sampler (seeded from ``(seed, suite, task, attempt)``, never one of the 50 official init
states, which are kept for evaluation), let the expert solve it with physics only, and keep the
episode only if the environment scores it successful. Kept episodes are then replayed state by state
(``set_sim_state`` on each recorded state, so the frames belong exactly to the recorded actions) to
render the observations, and written in LIBERO's original HDF5 layout.

Files under ``out_dir``::

    <suite>/<task_name>_demo.hdf5          the task's dataset (first N kept attempts), LIBERO layout
    <suite>/<task_name>_summary.json       attempts, expert success, episode length, timings
    <suite>/<task_name>/attempts.jsonl     one line per finished attempt (the resume log)
    <suite>/<task_name>/attempt_000123.hdf5  one kept episode (merged into the dataset)
    summary.json                           every task's summary

An attempt is logged only after its episode file is complete, so a run killed at any point resumes
with nothing lost and nothing duplicated: finished attempts are skipped, an unfinished one is run
again with the same seed. The dataset is always the first ``demos_per_task`` kept attempts in
attempt order, so the result does not depend on ``workers`` or on interruptions.

Command line (``flowvla-generate`` is the same command)::

    python -m flowvla.recipes.generate --suites libero_object --tasks 0-3,7 --demos-per-task 50 \\
        --out data/scripted
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.checks import check_nonnegative
from flowvla.cli import as_index_list, fail, index_list
from flowvla.data.hdf5 import view_name
from flowvla.envs.experts.episode import NoiseBursts
from flowvla.envs.libero import DEFAULT_CAMERAS, LIBERO_SUITES, LiberoEnv
from flowvla.envs.libero_setup import LiberoSetupError, set_libero_verbose
from flowvla.envs.perturb import scatter_objects
from flowvla.envs.rollout import Progress, load_records, wilson_interval
from flowvla.extras import MissingExtraError
from flowvla.io import folder_lock, write_json_atomic
from flowvla.typing import Float, typechecked

__all__ = [
    "GenerateConfig",
    "attempt_seed",
    "generate",
    "init_state_distance",
    "main",
    "render_episode",
    "write_demo",
]

_SUITE_IDS = {name: i for i, name in enumerate(LIBERO_SUITES)}


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
            ([`attempt_seed`][flowvla.recipes.generate.attempt_seed]).
        max_steps: step limit per episode (default: the suite's evaluation limit).
        settle_steps: dummy steps after reset, not recorded (as LIBERO evaluations).
        official_tol: a fresh layout within this distance (m, any qpos entry) of an official init
            state is discarded.
        hard_reset: rebuild the MuJoCo model at every reset, as LIBERO's evaluation does. The
            default reuses it, which saves about 2 s of each reset; the recorded actions differ from a
            hard-reset run by about 1e-6 and replay to success under a hard reset (the parity check
            verifies this on every recipe run).
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


# ---------------------------------------------------------------------------------------- one episode
@typechecked
def render_episode(
    env: LiberoEnv, states: Float[np.ndarray, "T D"], images: bool = True, image_stride: int = 1
) -> dict[str, np.ndarray]:
    """Observations of a recorded episode, rendered by restoring each state in turn.

    Args:
        env: the task's env; it renders with its own ``cameras``, ``image_size`` and ``depth``.
        states: ``[T, D]`` recorded simulator states.
        images: render views (else proprioception only).
        image_stride: render views at steps ``0, k, 2k, ...`` only (proprioception at every step).

    Returns:
        ``obs`` arrays for [`add_demo`][flowvla.data.hdf5.LiberoHDF5Writer.add_demo] (``<view>_rgb [T, H,
        W, 3]``, ``ee_states [T, 6]``, ``gripper_states [T, 2]``, ``joint_states [T, 7]``, with depth
        ``<view>_depth``, ``<view>_intrinsics``, ``<view>_extrinsics``) plus ``robot_states [T, 9]``.
    """
    cols: dict[str, list[np.ndarray]] = {}
    for t, s in enumerate(states):
        env.set_sim_state(s)
        p = env.proprio()
        row = {
            "ee_states": np.concatenate([p["eef_pos"], p["eef_axis_angle"]]),
            "gripper_states": p["gripper_qpos"],
            "joint_states": p["joint_pos"],
            "robot_states": np.concatenate([p["gripper_qpos"], p["eef_pos"], p["eef_quat"]]),
        }
        if images and t % image_stride == 0:
            obs = env.observe()
            for v, cam in enumerate(env.cameras):
                key = view_name(cam)
                row[f"{key}_rgb"] = obs["images"][v].transpose(1, 2, 0)
                if "depth" in obs:
                    row[f"{key}_depth"] = obs["depth"][v]
                    row[f"{key}_intrinsics"] = obs["intrinsics"][v]
                    row[f"{key}_extrinsics"] = obs["extrinsics"][v]
        for k, v in row.items():
            cols.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in cols.items()}


@typechecked
def write_demo(
    path: str | os.PathLike,
    env: LiberoEnv,
    actions: Float[np.ndarray, "T 7"],
    states: Float[np.ndarray, "T D"],
    init_state: Float[np.ndarray, " D"],
    *,
    images: bool = True,
    attrs: dict[str, Any] | None = None,
    image_convention: str = "opengl",
    compression: str | None = None,
    image_stride: int = 1,
    executed_actions: Float[np.ndarray, "T 7"] | None = None,
) -> Path:
    """Render a recorded episode ([`render_episode`][flowvla.recipes.generate.render_episode]) and
    write it as a one-demo LIBERO HDF5 file.

    Args:
        path: the file to (over)write, atomically.
        env: the task's env, used for rendering and for the file's task attributes.
        actions: ``[T, 7]`` actions.
        states: ``[T, D]`` simulator state before each action.
        init_state: ``[D]`` the state the episode was reset to (the demo's ``init_state`` attr).
        images: render views (else proprioception only).
        attrs: extra attributes of the demo group.
        image_convention: how images are stored (see
            [`LiberoHDF5Writer`][flowvla.data.hdf5.LiberoHDF5Writer]).
        compression: h5py compression of images.
        image_stride: render views every ``k`` steps (see [`flowvla.data.hdf5`][flowvla.data.hdf5]).
        executed_actions: ``[T, 7]`` what the env executed, where noise made it differ from ``actions``.
    """
    from flowvla.data.hdf5 import LiberoHDF5Writer

    obs = render_episode(env, states, images=images, image_stride=image_stride)
    robot_states = obs.pop("robot_states")
    with LiberoHDF5Writer.for_env(
        path,
        _described_by_task_language(env),
        image_convention=image_convention,
        compression=compression,
        overwrite=True,
    ) as w:
        w.add_demo(
            actions=actions,
            obs=obs,
            states=states,
            robot_states=robot_states,
            model_file=env.model_xml(),
            init_state=init_state,
            attrs=attrs,
            image_stride=image_stride if images else 1,
            executed_actions=executed_actions,
        )
    return Path(path)


def _described_by_task_language(env: LiberoEnv) -> Any:
    """``env`` as [`for_env`][flowvla.data.hdf5.LiberoHDF5Writer.for_env] sees it, but with the task's
    benchmark instruction as ``language_instruction``.

    The BDDL text LIBERO puts in ``problem_info`` differs from the benchmark's task language (what
    evaluations, [`LiberoEnv`][flowvla.envs.libero.LiberoEnv] and LIBERO's own training code use) in 25 of
    the 40 standard tasks ("pick the akita black bowl ..." vs "pick up the black bowl ..."); a policy
    trained on the generated files must read the instruction it will be evaluated with.
    """
    info = {**env.problem_info, "language_instruction": env.instruction}
    return types.SimpleNamespace(env_kwargs=env.env_kwargs, problem_info=info, task=env.task)


def _task_dir(cfg: GenerateConfig, suite: str, task_name: str) -> Path:
    return Path(cfg.out_dir) / suite / task_name


_WORKER: dict[str, Any] = {}


def _env_for(cfg: GenerateConfig, suite: str, task: int) -> LiberoEnv:
    """A per-process cache of one env (construction takes seconds; attempts of a task reuse it)."""
    key = (suite, task)
    if _WORKER.get("key") != key:
        if _WORKER.get("env") is not None:
            _WORKER["env"].close()
            _WORKER["env"] = None
        _WORKER["env"] = LiberoEnv(
            suite,
            task,
            image_size=cfg.image_size,
            cameras=cfg.cameras or DEFAULT_CAMERAS,
            depth=cfg.depth,
            render=cfg.images,
            hard_reset=cfg.hard_reset,
        )
        _WORKER["key"] = key
    return _WORKER["env"]


def _run_attempt(cfg: GenerateConfig, suite: str, task: int, attempt: int) -> dict[str, Any]:
    """Plan, verify, render and write one attempt; return its log record."""
    from flowvla.envs.experts import make_expert, run_expert_episode

    env = _env_for(cfg, suite, task)
    expert = make_expert(env)
    seed = attempt_seed(cfg.seed, suite, task, attempt)
    t0 = time.perf_counter()
    scattered: dict[str, list[float]] = {}
    scatter = None
    if cfg.object_scatter_m:
        # Its own stream, so the layout's draw does not shift the expert's noise draws.
        rng = np.random.default_rng([seed, 1])

        def scatter(e: LiberoEnv) -> None:
            scattered.update(scatter_objects(e, cfg.object_scatter_m, rng))

    fresh = env.reset(seed=seed, perturb=scatter)
    dist = float(init_state_distance(fresh, env.init_states, int(env.sim.model.nq)).min())
    rec: dict[str, Any] = {
        "suite": suite,
        "task_index": task,
        "task_name": env.task.name,
        "attempt": attempt,
        "seed": seed,
        "official_distance": dist,
        "success": False,
        "kept": False,
        "steps": 0,
        "retries": 0,
        "file": None,
        "time_plan": 0.0,
        "time_render": 0.0,
        **({"scatter": scattered} if scattered else {}),
    }
    if dist < cfg.official_tol:
        rec["reason"] = "layout overlaps an official init state"
        rec["time_total"] = time.perf_counter() - t0
        return rec
    ep = run_expert_episode(
        env,
        expert,
        fresh,
        seed=seed,
        max_steps=cfg.max_steps,
        settle_steps=cfg.settle_steps,
        action_noise=cfg.action_noise,
        noise_bursts=cfg.noise_bursts,
    )
    t1 = time.perf_counter()
    rec.update(success=ep.success, steps=ep.steps, retries=ep.retries, phases=ep.phases, time_plan=t1 - t0)
    if not ep.stable:
        rec["reason"] = f"unstable layout: an object moved {100 * ep.settle_drift:.0f} cm while settling"
    if ep.success:
        path = _task_dir(cfg, suite, env.task.name) / f"attempt_{attempt:06d}.hdf5"
        write_demo(
            path,
            env,
            ep.actions,
            ep.states,
            ep.init_state,
            images=cfg.images,
            attrs={"seed": seed, "attempt": attempt, "expert_retries": ep.retries},
            image_convention=cfg.image_convention,
            compression=cfg.compression,
            image_stride=cfg.image_stride,
            executed_actions=ep.executed_actions,
        )
        rec.update(kept=True, file=path.name, time_render=time.perf_counter() - t1)
    rec["time_total"] = time.perf_counter() - t0
    return rec


def _worker_init(cfg: GenerateConfig) -> None:
    import torch

    torch.set_num_threads(1)  # one simulator per core; torch only loads init states here
    _WORKER["cfg"] = cfg


def _worker_job(suite: str, task: int, attempt: int) -> dict[str, Any]:
    return _run_attempt(_WORKER["cfg"], suite, task, attempt)


def _close_worker_env() -> None:
    if _WORKER.get("env") is not None:
        _WORKER["env"].close()
    _WORKER.pop("env", None)
    _WORKER.pop("key", None)


# ------------------------------------------------------------------------------------------ bookkeeping
def _latest(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    # One record per attempt; a re-run attempt (its file lost) supersedes the older line.
    return {int(r["attempt"]): r for r in rows}


def _usable(cfg: GenerateConfig, suite: str, name: str, rec: dict[str, Any]) -> bool:
    return not rec["kept"] or (_task_dir(cfg, suite, name) / rec["file"]).is_file()


def _task_summary(
    cfg: GenerateConfig, suite: str, task: Any, goal: str, done: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    rows = [done[a] for a in sorted(done)]
    planned = [r for r in rows if "reason" not in r]
    kept = [r for r in rows if r["kept"]][: cfg.demos_per_task]
    k, n = sum(r["success"] for r in planned), len(planned)
    lo, hi = wilson_interval(k, n)
    seconds = sum(r["time_total"] for r in rows)
    return {
        "suite": suite,
        "task_index": task.index,
        "task_name": task.name,
        "instruction": task.instruction,
        "goal": goal,
        "supported": True,
        "demos": len(kept),
        "demos_wanted": cfg.demos_per_task,
        "complete": len(kept) >= cfg.demos_per_task,
        "attempts": len(rows),
        "expert_successes": k,
        "expert_success_rate": k / n if n else float("nan"),
        "expert_success_ci95": [lo, hi],
        "layouts_skipped": len(rows) - n,
        "layouts_skipped_why": sorted({r["reason"].split(":")[0] for r in rows if "reason" in r}),
        "mean_steps_kept": float(np.mean([r["steps"] for r in kept])) if kept else float("nan"),
        "seconds_total": seconds,
        "seconds_per_kept_demo": seconds / len(kept) if kept else float("nan"),
        "dataset": f"{task.name}_demo.hdf5" if kept else None,
        "demos_from_attempts": [r["attempt"] for r in kept],
        "config": {
            k2: v
            for k2, v in dataclasses.asdict(cfg).items()
            if k2
            in (
                "image_size",
                "image_stride",
                "cameras",
                "depth",
                "images",
                "seed",
                "settle_steps",
                "max_steps",
            )
        },
    }


def _finish_task(
    cfg: GenerateConfig, suite: str, task: Any, goal: str, done: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    from flowvla.data.hdf5 import merge_hdf5

    summary = _task_summary(cfg, suite, task, goal, done)
    tdir = _task_dir(cfg, suite, task.name)
    files = [tdir / f"attempt_{a:06d}.hdf5" for a in summary["demos_from_attempts"]]
    if files:
        merge_hdf5(files, Path(cfg.out_dir) / suite / summary["dataset"], overwrite=True)
    write_json_atomic(Path(cfg.out_dir) / suite / f"{task.name}_summary.json", summary)
    return summary


def _check_task(suite: str, index: int) -> tuple[Any, str | None, str]:
    """(task, why it is unsupported or None, goal text), from a physics-only build of the task."""
    from flowvla.envs.experts import UnsupportedGoalError, goal_predicates, place_goals

    env = LiberoEnv(suite, index, render=False)
    try:
        goal = " ".join(str(p) for p in goal_predicates(env))
        try:
            place_goals(env)
            return env.task, None, goal
        except UnsupportedGoalError as e:
            return env.task, str(e), goal
    finally:
        env.close()


# ------------------------------------------------------------------------------------------------ driver
def generate(cfg: GenerateConfig) -> dict[str, Any]:
    """Generate (or resume) the datasets ``cfg`` asks for; return the overall summary.

    The output folder is locked for the call ([`folder_lock`][flowvla.io.folder_lock]): a second job
    generating into the same folder (two recipes sharing the demonstration cache) waits for the first
    and then resumes from what it wrote, or refuses when ``cfg.wait_for_lock`` is False.

    Raises:
        UnsupportedGoalError: a task named in ``cfg.tasks`` has a goal the expert cannot reach.
        FolderBusyError: another job holds the folder and ``cfg.wait_for_lock`` is False.
    """
    with folder_lock(cfg.out_dir, wait=cfg.wait_for_lock, on_wait=_say_waiting):
        return _generate(cfg)


def _say_waiting(message: str) -> None:
    print(f"flowvla-generate: {message}", file=sys.stderr, flush=True)


def _generate(cfg: GenerateConfig) -> dict[str, Any]:
    from flowvla.envs.experts import UnsupportedGoalError

    out = Path(cfg.out_dir)
    plan: list[tuple[str, Any, str]] = []
    summaries: dict[str, Any] = {}
    for suite in cfg.suites:
        indices = cfg.tasks if cfg.tasks is not None else range(LIBERO_SUITES[suite].num_tasks)
        for i in indices:
            task, why, goal = _check_task(suite, i)
            if why is not None:
                if cfg.tasks is not None:
                    raise UnsupportedGoalError(f"{suite} task {i} ({task.name}): {why}")
                summaries[f"{suite}/{i}"] = {
                    "suite": suite, "task_index": i, "task_name": task.name, "goal": goal,
                    "supported": False, "reason": why,
                }  # fmt: skip
                continue
            plan.append((suite, task, goal))

    # Resume: read every task's log first so the progress bar knows what is left.
    logs: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for suite, task, _ in plan:
        path = _task_dir(cfg, suite, task.name) / "attempts.jsonl"
        rows = load_records(path)
        done = {a: r for a, r in _latest(rows).items() if _usable(cfg, suite, task.name, r)}
        logs[(suite, task.index)] = done
    remaining = sum(max(0, cfg.demos_per_task - sum(r["kept"] for r in d.values())) for d in logs.values())
    progress = Progress(remaining, cfg.progress, "demos")
    budget = cfg.max_episodes if cfg.max_episodes is not None else float("inf")

    made = 0  # attempts run by this call (the rest were read back from the logs)
    pool = None
    if cfg.workers > 1:
        pool = cf.ProcessPoolExecutor(
            max_workers=cfg.workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(cfg,),
        )
    try:
        for suite, task, goal in plan:
            done = logs[(suite, task.index)]
            log_path = _task_dir(cfg, suite, task.name) / "attempts.jsonl"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "w") as f:  # rewrite without any line cut short by a crash
                f.writelines(json.dumps(done[a]) + "\n" for a in sorted(done))
            pending: dict[Any, int] = {}
            next_attempt = 0

            def record(rec: dict[str, Any], done=done, log_path=log_path) -> None:
                nonlocal made
                made += 1
                done[int(rec["attempt"])] = rec
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                if rec["kept"] and sum(r["kept"] for r in done.values()) <= cfg.demos_per_task:
                    progress.update(True)

            while True:
                kept = sum(r["kept"] for r in done.values())
                while (
                    kept + len(pending) < cfg.demos_per_task
                    and len(pending) < cfg.workers
                    and budget > 0
                    and next_attempt < cfg.max_attempts
                    and not (kept == 0 and len(done) >= cfg.give_up_after)
                ):
                    if next_attempt in done:
                        next_attempt += 1
                        continue
                    budget -= 1
                    if pool is None:
                        record(_run_attempt(cfg, suite, task.index, next_attempt))
                        kept = sum(r["kept"] for r in done.values())
                    else:
                        pending[pool.submit(_worker_job, suite, task.index, next_attempt)] = next_attempt
                    next_attempt += 1
                if not pending:
                    break
                finished, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    pending.pop(fut)
                    record(fut.result())
            summaries[f"{suite}/{task.index}"] = _finish_task(cfg, suite, task, goal, done)
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        _close_worker_env()
    overall = {
        "tasks": summaries,
        "complete": all(s.get("complete", True) for s in summaries.values()),
        "demos": sum(s.get("demos", 0) for s in summaries.values()),
        "attempts_this_call": made,
    }
    write_json_atomic(out / "summary.json", overall)
    return overall


def _burst_pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not LENGTH,GAP (e.g. 6,30)")
    return int(parts[0]), int(parts[1])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowvla.recipes.generate --suites libero_object --demos-per-task 50 --out DIR``."""
    p = argparse.ArgumentParser(
        prog="flowvla-generate",
        description="Generate LIBERO demonstrations with a scripted expert (resumable).",
        allow_abbrev=False,  # one spelling per option: what the docs show is what parses
    )
    p.add_argument("--out", required=True, help="output folder (re-run with the same folder to resume)")
    p.add_argument("--suites", default="libero_object", help="comma-separated suite names")
    p.add_argument(
        "--tasks",
        type=index_list,
        default=None,
        help="task indices, e.g. 0,1 or 0-3,7 (default: every supported task)",
    )
    p.add_argument("--demos-per-task", type=int, default=50)
    p.add_argument("--max-attempts", type=int, default=None, help="per task (default: 3 x demos)")
    p.add_argument("--max-episodes", type=int, default=None, help="stop this run after N attempts")
    p.add_argument("--give-up-after", type=int, default=20, help="drop a task whose first N attempts failed")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--image-stride", type=int, default=1, help="render views every k-th step only")
    p.add_argument("--cameras", default=",".join(DEFAULT_CAMERAS), help="comma-separated camera names")
    p.add_argument("--depth", action="store_true", help="also store metric depth and camera matrices")
    p.add_argument("--no-images", action="store_true", help="actions, states and proprioception only")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the suite's)")
    p.add_argument("--hard-reset", action="store_true", help="rebuild the model at every reset (slower)")
    p.add_argument(
        "--action-noise", type=float, default=0.0, help="DART noise std on executed translation actions"
    )
    p.add_argument(
        "--noise-bursts",
        metavar="LENGTH,GAP",
        type=_burst_pair,
        help="inject the noise in bursts of LENGTH steps about GAP steps apart (default: every step)",
    )
    p.add_argument(
        "--object-scatter",
        type=float,
        default=0.0,
        metavar="M",
        help="move each object of every fresh layout to a random point within M metres (wider layouts)",
    )
    p.add_argument("--image-convention", default="opengl", choices=["opengl", "opencv"])
    p.add_argument("--compression", default=None, choices=["gzip", "lzf"])
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--verbose", action="store_true", help="show robosuite's and LIBERO's start-up messages")
    a = p.parse_args(argv)
    set_libero_verbose(a.verbose)
    from flowvla.envs.experts import UnsupportedGoalError

    try:
        cfg = GenerateConfig(
            out_dir=a.out,
            suites=[s.strip() for s in a.suites.split(",") if s.strip()],
            tasks=a.tasks,
            demos_per_task=a.demos_per_task,
            max_attempts=a.max_attempts,
            max_episodes=a.max_episodes,
            give_up_after=a.give_up_after,
            image_size=a.image_size,
            image_stride=a.image_stride,
            cameras=[c.strip() for c in a.cameras.split(",") if c.strip()],
            depth=a.depth,
            images=not a.no_images,
            workers=a.workers,
            seed=a.seed,
            max_steps=a.max_steps,
            image_convention=a.image_convention,
            compression=a.compression,
            hard_reset=a.hard_reset,
            action_noise=a.action_noise,
            noise_bursts=a.noise_bursts,
            object_scatter_m=a.object_scatter,
            progress=not a.no_progress,
        )
        summary = generate(cfg)
    except (ValueError, UnsupportedGoalError, MissingExtraError, LiberoSetupError) as e:
        return fail(p.prog, e)
    for key, s in summary["tasks"].items():
        if not s.get("supported", True):
            print(f"{key:18s} skipped: {s['reason']}")
        else:
            print(
                f"{key:18s} {s['demos']:4d}/{s['demos_wanted']} demos  expert {s['expert_successes']}/"
                f"{s['attempts']}  {s['mean_steps_kept']:.0f} steps  {s['seconds_per_kept_demo']:.1f} s/demo"
            )
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
