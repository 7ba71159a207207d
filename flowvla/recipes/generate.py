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

The parts: [`generate_config`][flowvla.recipes.generate_config] (what to generate, attempt seeds),
[`demo_files`][flowvla.recipes.demo_files] (an episode rendered and written), the shared
[`WorkerPool`][flowvla.envs.pool.WorkerPool] and [`RecordLedger`][flowvla.envs.ledger.RecordLedger].

Command line (``flowvla-generate`` is the same command)::

    python -m flowvla.recipes.generate --suites libero_object --tasks 0-3,7 --demos-per-task 50 \\
        --out data/scripted
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.cli import fail, index_list
from flowvla.envs.ledger import RecordLedger
from flowvla.envs.libero import DEFAULT_CAMERAS, LIBERO_SUITES, LiberoEnv
from flowvla.envs.libero_setup import LiberoSetupError, set_libero_verbose
from flowvla.envs.perturb import Perturbation, scatter_objects
from flowvla.envs.pool import WorkerPool, cached_env, worker_state
from flowvla.envs.progress import Progress
from flowvla.extras import MissingExtraError
from flowvla.io import folder_lock, write_json_atomic
from flowvla.recipes.demo_files import render_episode, write_demo
from flowvla.recipes.generate_config import GenerateConfig, attempt_seed, init_state_distance
from flowvla.recipes.generate_tasks import check_task, finish_task, latest, task_dir, usable

__all__ = [
    "ExpertEpisodeFn",
    "GenerateConfig",
    "attempt_seed",
    "generate",
    "init_state_distance",
    "main",
    "render_episode",
    "run_attempt",
    "write_demo",
]


#: ``episode_fn(env, expert, init_state, *, seed, max_steps, settle_steps, action_noise, noise_bursts)``
#: -> an expert episode (``success``, ``stable``, ``settle_drift``, ``steps``, ``retries``, ``phases``,
#: ``actions``, ``states``, ``init_state``, ``executed_actions`` and, optionally, ``stages``): how
#: [`generate`][flowvla.recipes.generate.generate] runs the scripted expert (default:
#: [`run_expert_episode`][flowvla.envs.experts.episode.run_expert_episode]); a module-level function
#: when ``workers > 1``.
ExpertEpisodeFn = Callable[..., Any]


def _env_for(cfg: GenerateConfig, suite: str, task: int) -> LiberoEnv:
    """This process's env of ``task`` (construction takes seconds; attempts of a task reuse it)."""
    return cached_env(
        (suite, task),
        lambda: LiberoEnv(
            suite,
            task,
            image_size=cfg.image_size,
            cameras=cfg.cameras or DEFAULT_CAMERAS,
            depth=cfg.depth,
            render=cfg.images,
            hard_reset=cfg.hard_reset,
        ),
    )


def _stage_attrs(episode: Any) -> dict[str, Any]:
    """The demo attributes naming the expert's stages (``stage_names``, ``stage_starts``: the step
    each begins at), when its episode says (``episode.stages``: ``(name, first step)`` pairs)."""
    stages = getattr(episode, "stages", None)
    if not stages:
        return {}
    return {
        "stage_names": [str(name) for name, _ in stages],
        "stage_starts": np.asarray([int(start) for _, start in stages], dtype=np.int64),
    }


def run_attempt(
    cfg: GenerateConfig, suite: str, task: int, attempt: int, episode_fn: ExpertEpisodeFn | None = None
) -> dict[str, Any]:
    """Plan, verify, render and write one attempt (in this process's env of the task); return its log
    record. ``episode_fn``: how the expert's episode is run (see
    `ExpertEpisodeFn`)."""
    from flowvla.envs.experts import make_expert, run_expert_episode

    episode_fn = run_expert_episode if episode_fn is None else episode_fn

    env = _env_for(cfg, suite, task)
    expert = make_expert(env)
    seed = attempt_seed(cfg.seed, suite, task, attempt)
    t0 = time.perf_counter()
    scattered: dict[str, list[float]] = {}
    perturbed: dict[str, Any] = {}
    layout, appearance = (cfg.perturbation or Perturbation()).split()
    scatter = None
    if cfg.object_scatter_m or layout.active:
        # Its own stream, so the layout's draw does not shift the expert's noise draws.
        rng = np.random.default_rng([seed, 1])

        def scatter(e: LiberoEnv) -> None:
            if cfg.object_scatter_m:
                scattered.update(scatter_objects(e, cfg.object_scatter_m, rng))
            perturbed.update(layout.apply(e, rng))

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
        **({"perturbation": perturbed} if perturbed else {}),
    }
    if dist < cfg.official_tol:
        rec["reason"] = "layout overlaps an official init state"
        rec["time_total"] = time.perf_counter() - t0
        return rec
    ep = episode_fn(
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
        if appearance.active:
            # The expert's episode reset the env again (undoing model changes): camera, lights and
            # materials go in now, before rendering; the physics never reads them.
            rec.setdefault("perturbation", {}).update(appearance.apply(env, np.random.default_rng([seed, 2])))
        path = task_dir(cfg, suite, env.task.name) / f"attempt_{attempt:06d}.hdf5"
        write_demo(
            path,
            env,
            ep.actions,
            ep.states,
            ep.init_state,
            images=cfg.images,
            attrs={"seed": seed, "attempt": attempt, "expert_retries": ep.retries, **_stage_attrs(ep)},
            image_convention=cfg.image_convention,
            compression=cfg.compression,
            image_stride=cfg.image_stride,
            executed_actions=ep.executed_actions,
        )
        rec.update(kept=True, file=path.name, time_render=time.perf_counter() - t1)
    rec["time_total"] = time.perf_counter() - t0
    return rec


def _setup(cfg: GenerateConfig, episode_fn: ExpertEpisodeFn | None) -> None:
    worker_state().update(cfg=cfg, episode_fn=episode_fn)


def _attempt(suite: str, task: int, attempt: int) -> dict[str, Any]:
    state = worker_state()
    return run_attempt(state["cfg"], suite, task, attempt, state["episode_fn"])


def _ledger(cfg: GenerateConfig, suite: str, task_name: str) -> RecordLedger:
    return RecordLedger(task_dir(cfg, suite, task_name) / "attempts.jsonl")


def _attempt_task(
    cfg: GenerateConfig,
    pool: WorkerPool,
    suite: str,
    task: int,
    done: dict[int, dict[str, Any]],
    ledger: RecordLedger,
    progress: Progress,
    budget: float,
) -> int:
    """Run attempts of one task (``workers`` at a time) until it has its demonstrations, runs out of
    attempts or budget, or its first ``give_up_after`` attempts all failed; record each in ``done``
    and the ledger as it ends. Returns the attempts run."""
    pending: dict[Any, int] = {}
    next_attempt = ran = 0

    def kept() -> int:
        return sum(r["kept"] for r in done.values())

    while True:
        while (
            kept() + len(pending) < cfg.demos_per_task
            and len(pending) < cfg.workers
            and ran < budget
            and next_attempt < cfg.max_attempts
            and not (kept() == 0 and len(done) >= cfg.give_up_after)
        ):
            if next_attempt not in done:
                pending[pool.submit(_attempt, suite, task, next_attempt)] = next_attempt
                ran += 1
            next_attempt += 1
        if not pending:
            return ran
        for future in pool.wait_first(pending):
            pending.pop(future)
            rec = future.result()
            done[int(rec["attempt"])] = rec
            ledger.append(rec)
            if rec["kept"] and kept() <= cfg.demos_per_task:
                progress.update(True)


# ------------------------------------------------------------------------------------------------ driver
def generate(cfg: GenerateConfig, *, episode_fn: ExpertEpisodeFn | None = None) -> dict[str, Any]:
    """Generate (or resume) the datasets ``cfg`` asks for; return the overall summary.

    The output folder is locked for the call ([`folder_lock`][flowvla.io.folder_lock]): a second job
    generating into the same folder (two recipes sharing the demonstration cache) waits for the first
    and then resumes from what it wrote, or refuses when ``cfg.wait_for_lock`` is False.

    ``episode_fn`` replaces the scripted expert's episode (see
    `ExpertEpisodeFn`; tests inject episodes this way).

    Raises:
        UnsupportedGoalError: a task named in ``cfg.tasks`` has a goal the expert cannot reach.
        FolderBusyError: another job holds the folder and ``cfg.wait_for_lock`` is False.
    """
    with folder_lock(cfg.out_dir, wait=cfg.wait_for_lock, on_wait=_say_waiting):
        return _generate(cfg, episode_fn)


def _say_waiting(message: str) -> None:
    print(f"flowvla-generate: {message}", file=sys.stderr, flush=True)


def _generate(cfg: GenerateConfig, episode_fn: ExpertEpisodeFn | None) -> dict[str, Any]:
    from flowvla.envs.experts import UnsupportedGoalError

    out = Path(cfg.out_dir)
    plan: list[tuple[str, Any, str]] = []
    summaries: dict[str, Any] = {}
    for suite in cfg.suites:
        indices = cfg.tasks if cfg.tasks is not None else range(LIBERO_SUITES[suite].num_tasks)
        for i in indices:
            task, why, goal = check_task(suite, i)
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
        rows = _ledger(cfg, suite, task.name).load()
        done = {a: r for a, r in latest(rows).items() if usable(cfg, suite, task.name, r)}
        logs[(suite, task.index)] = done
    remaining = sum(max(0, cfg.demos_per_task - sum(r["kept"] for r in d.values())) for d in logs.values())
    progress = Progress(remaining, cfg.progress, "demos")
    budget = cfg.max_episodes if cfg.max_episodes is not None else float("inf")

    made = 0  # attempts run by this call (the rest were read back from the logs)
    try:
        with WorkerPool(cfg.workers, _setup, (cfg, episode_fn)) as pool:
            for suite, task, goal in plan:
                done = logs[(suite, task.index)]
                ledger = _ledger(cfg, suite, task.name)
                ledger.rewrite(done[a] for a in sorted(done))  # without a line cut short by a crash
                ran = _attempt_task(cfg, pool, suite, task.index, done, ledger, progress, budget)
                made, budget = made + ran, budget - ran
                summaries[f"{suite}/{task.index}"] = finish_task(cfg, suite, task, goal, done)
    finally:
        progress.close()
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


def _perturbation(text: str) -> Perturbation:
    import json

    try:
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object of Perturbation fields, got {text!r}")
        return Perturbation.from_dict(fields)
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise argparse.ArgumentTypeError(str(e)) from None


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
    p.add_argument(
        "--perturbation",
        type=_perturbation,
        metavar="JSON",
        help='other axes drawn per attempt, as Perturbation fields, e.g. \'{"light_intensity": 0.3, '
        '"camera_shift_m": 0.02, "robot_joint_offset_rad": 0.05}\'',
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
            perturbation=a.perturbation,
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
