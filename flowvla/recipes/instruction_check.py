"""Whether a recipe run's trained policy reads its instruction: each task told another task's.

In libero_goal every task starts from the same scene, so only the words say which task to do; in
libero_object and libero_10 most scenes hold the objects of other tasks too. A policy that reads the
task off the scene, ignoring the words, scores as well as one that obeys them on the official init
states; two rows of closed-loop episodes on the run's own official init states tell them apart:

- ``changed_task``: the episode is told another task of the suite that its scene allows (drawn from
  the episode's seed, [`Perturbation.changed_task`][flowvla.envs.perturb.Perturbation]) and scored on
  that task. A policy that obeys keeps its success; one that ignores the words drops towards 0. Run
  on the tasks whose scene allows another task
  ([`scorable_task_indices`][flowvla.envs.perturb.scorable_task_indices]); never on libero_spatial,
  whose instructions name the bowl by where it lies, so another task's words describe a bowl that is
  not there.
- ``swapped_instruction``: told the next task's instruction (cyclically over the run's tasks) and
  scored on its own goal: a policy that obeys drops towards 0 where the told task is another one, one
  that ignores the words keeps its official success (the reference row: the run's own evaluation of
  the same episodes).

[`check_instructions`][flowvla.recipes.instruction_check.check_instructions] runs both on a trained run
folder, resumably (each row's episode records stay under ``<run>/instructions/<row>/``), and writes
``<run>/instructions.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from flowvla.checks import SettingError
from flowvla.io import write_json_atomic

__all__ = ["INSTRUCTIONS_FILE", "check_instructions", "instruction_rows", "load_instruction_check"]

INSTRUCTIONS_FILE = "instructions.json"


def instruction_rows(suite: str, tasks: list[int]) -> dict[str, dict[str, Any]]:
    """The rows evaluated for ``suite``'s ``tasks``: name -> ``{"tasks", "scored_on"}`` and either
    ``"instructions"`` (task -> the words it is told) or ``"perturbation"`` (a
    [`Perturbation`][flowvla.envs.perturb.Perturbation]). A row without tasks is left out:
    ``swapped_instruction`` needs two tasks, ``changed_task`` a scene that allows another task."""
    from flowvla.envs.libero import get_task
    from flowvla.envs.perturb import Perturbation, changed_task_refusal, scorable_task_indices

    rows: dict[str, dict[str, Any]] = {}
    if changed_task_refusal(suite) is None:
        allowed = [t for t in tasks if scorable_task_indices(get_task(suite, t))]
        if allowed:
            rows["changed_task"] = {
                "tasks": allowed,
                "scored_on": "the task it was told",
                "perturbation": Perturbation(changed_task=True),
            }
    if len(tasks) > 1:
        told = {t: tasks[(i + 1) % len(tasks)] for i, t in enumerate(tasks)}
        rows["swapped_instruction"] = {
            "tasks": list(tasks),
            "scored_on": "its own goal",
            "told": told,
            "instructions": {t: get_task(suite, told[t]).instruction for t in tasks},
        }
    return rows


def _official(
    run_dir: Path, suite: str, tasks: list[int], init_states: int, weights: str | None
) -> dict[str, Any] | None:
    """Success of the run's own evaluation of the policy whose weights digest is ``weights`` on the
    same tasks and init states, or None if it lacks any of those episodes."""
    from flowvla.envs.ledger import load_records
    from flowvla.envs.metrics import wilson_interval

    wanted = {(t, i) for t in tasks for i in range(init_states)}
    found = {
        (r["task_index"], r["init_state"]): bool(r["success"])
        for r in load_records(run_dir / "eval" / "episodes.jsonl")
        if r["suite"] == suite
        and (r["task_index"], r["init_state"]) in wanted
        and (r.get("policy") or {}).get("weights_sha256") == weights
    }
    if set(found) != wanted:
        return None
    k, n = sum(found.values()), len(found)
    return {"successes": k, "episodes": n, "success_rate": k / n, "ci95": list(wilson_interval(k, n))}


def check_instructions(
    run_dir: str | Path,
    *,
    init_states: int = 10,
    workers: int | None = None,
    video: str = "none",
    progress: bool = True,
    episode_fn: Any = None,
) -> dict[str, Any]:
    """Evaluate a trained recipe run's policy on the rows of
    [`instruction_rows`][flowvla.recipes.instruction_check.instruction_rows] on the first
    ``init_states`` official init states of each task, as its recipe evaluates otherwise (solver,
    re-planning, step limit, the weights it evaluates); returns what it writes to
    ``<run_dir>/instructions.json``: ``init_states``, and per row (``"suite/row"``: a run of several
    suites has each suite's rows) its ``suite``, ``name``, ``tasks``, ``scored_on``, the
    success table ([`success_table`][flowvla.recipes.report.success_table]) and ``official``: the
    run's own success on the same episodes (None before its evaluation holds them).

    A call cut short resumes from the rows' episode records; one after every episode is in costs only
    the reading.

    Args:
        run_dir: a recipe run folder whose training is done (``checkpoint/`` and ``recipe.json``).
        init_states: official init states per task (the first ``n``).
        workers: simulator processes (default: the recipe's ``eval.workers``).
        video: which episodes get a video (``RolloutConfig.video``).
        progress: show progress bars.
        episode_fn: the evaluation's episode (see [`evaluate`][flowvla.envs.rollout.evaluate]); tests
            inject episodes through it.

    Raises:
        MissingPathError: ``run_dir`` holds no trained policy.
        SettingError: ``init_states`` outside ``[1, 50]`` or ``workers < 1``.
    """
    from flowvla.envs.rollout import evaluate
    from flowvla.policy import policy_identity
    from flowvla.recipes.report import success_table
    from flowvla.recipes.settings import load_run_policy

    run_dir = Path(run_dir)
    if not 1 <= init_states <= 50:
        raise SettingError("init_states", f"expected 1-50 official init states per task, got {init_states}")
    if workers is not None and workers < 1:
        raise SettingError("workers", f"expected at least 1 simulator process, got {workers}")
    policy, cfg = load_run_policy(run_dir)
    tasks = list(cfg.data.tasks)
    ev = dataclasses.replace(
        cfg.eval, init_states=init_states, video=video, workers=workers or cfg.eval.workers
    )
    digest = policy_identity(policy)["weights_sha256"]
    result: dict[str, Any] = {"suite": cfg.data.suite, "init_states": init_states, "rows": {}}
    for suite in cfg.data.suites:  # a run of several suites: each by its own rows
        for name, row in instruction_rows(suite, tasks).items():
            extra = {k: row[k] for k in ("instructions", "perturbation") if k in row}
            rollout = ev.rollout_config(
                policy,
                suite=suite,
                tasks=row["tasks"],
                cameras=cfg.data.cameras,
                out_dir=str(run_dir / "instructions" / name),
                seed=cfg.seed,
                progress=progress,
                **extra,
            )
            summary = evaluate(policy, rollout, episode_fn=episode_fn)
            result["rows"][f"{suite}/{name}"] = {
                "suite": suite,
                "name": name,
                "tasks": row["tasks"],
                "scored_on": row["scored_on"],
                **({"told": {str(t): v for t, v in row["told"].items()}} if "told" in row else {}),
                "success": success_table(summary),
                "official": _official(run_dir, suite, row["tasks"], init_states, digest),
            }
    write_json_atomic(run_dir / INSTRUCTIONS_FILE, result)
    return result


def load_instruction_check(run_dir: str | Path) -> dict[str, Any] | None:
    """What [`check_instructions`][flowvla.recipes.instruction_check.check_instructions] wrote into
    ``run_dir``, or None if it has not run there."""
    path = Path(run_dir) / INSTRUCTIONS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
