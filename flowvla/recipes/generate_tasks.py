"""The per-task bookkeeping of demonstration generation: whether a task is supported (some expert
takes its goal), which logged attempts still count, and the task's summary and merged dataset."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.envs.libero import LiberoEnv
from flowvla.envs.metrics import wilson_interval
from flowvla.io import write_json_atomic
from flowvla.recipes.generate_config import GenerateConfig

__all__ = ["check_task", "finish_task", "latest", "task_dir", "task_summary", "usable"]


def task_dir(cfg: GenerateConfig, suite: str, task_name: str) -> Path:
    """Where a task's attempts and their log live: ``<out_dir>/<suite>/<task_name>``."""
    return Path(cfg.out_dir) / suite / task_name


def latest(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """``attempt -> record``: one record per attempt, a re-run attempt (its file lost) superseding
    the older line."""
    return {int(r["attempt"]): r for r in rows}


def usable(cfg: GenerateConfig, suite: str, name: str, rec: dict[str, Any]) -> bool:
    """Whether a logged attempt still counts: a failure, or a kept one whose episode file is there."""
    return not rec["kept"] or (task_dir(cfg, suite, name) / rec["file"]).is_file()


def task_summary(
    cfg: GenerateConfig, suite: str, task: Any, goal: str, done: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """A task's summary from its attempt records ``done``: demonstrations kept (the first
    ``demos_per_task`` in attempt order), the expert's success rate with its Wilson interval,
    skipped layouts and timings."""
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


def finish_task(
    cfg: GenerateConfig, suite: str, task: Any, goal: str, done: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    """Merge a task's kept demonstrations into its dataset (their demo attributes, the expert's
    stages included, go along) and write its summary; returns the summary."""
    from flowvla.data.hdf5 import merge_hdf5

    summary = task_summary(cfg, suite, task, goal, done)
    tdir = task_dir(cfg, suite, task.name)
    files = [tdir / f"attempt_{a:06d}.hdf5" for a in summary["demos_from_attempts"]]
    if files:
        merge_hdf5(files, Path(cfg.out_dir) / suite / summary["dataset"], overwrite=True)
    write_json_atomic(Path(cfg.out_dir) / suite / f"{task.name}_summary.json", summary)
    return summary


def check_task(suite: str, index: int) -> tuple[Any, str | None, str]:
    """(task, why it is unsupported or None, goal text), from a physics-only build of the task: the
    task is supported when some expert takes its goal (``make_expert`` raises otherwise)."""
    from flowvla.envs.experts import UnsupportedGoalError, goal_predicates, make_expert

    env = LiberoEnv(suite, index, render=False)
    try:
        goal = " ".join(str(p) for p in goal_predicates(env))
        try:
            make_expert(env)
            return env.task, None, goal
        except UnsupportedGoalError as e:
            return env.task, str(e), goal
    finally:
        env.close()
