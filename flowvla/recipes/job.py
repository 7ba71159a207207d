"""The phases of the LIBERO recipe's main job, each resumable, with their wall times, and what reads a
finished run (a solver, a grid or a shortcut student fitted to its policy).

``data -> parity -> train -> eval -> sensitivity -> report``; see
[`run_recipe`][flowvla.recipes.libero.run_recipe].
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flowvla.cli import say
from flowvla.io import write_json_atomic
from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.parts import build_dataset, build_val_dataset, default_cache_dir
from flowvla.recipes.settings import flat_settings, load_recipe, load_run_policy, save_recipe

__all__ = ["check_resumable", "ensure_demos", "load_run", "run_job"]

RUN_FILE = "run.json"


def ensure_demos(
    cfg: RecipeConfig,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    episode_fn: Any = None,
) -> tuple[list[Path], dict[str, Any]]:
    """The task files of ``cfg``'s demonstrations, generated into the cache on first use.

    Returns ``(files in task order, generation summary)``; with several suites, suite by suite, each
    generated into its own folder ([`suite_data_key`][flowvla.recipes.config.RecipeConfig.suite_data_key]),
    and the summary's ``tasks`` and ``attempts_this_call`` over all of them. Generation resumes
    where an earlier, interrupted one stopped; when every file is complete this costs nothing.
    ``episode_fn``: the generator's expert episode (see
    [`generate`][flowvla.recipes.generate.generate]; tests inject episodes through it).

    A task the expert could not give its demonstrations for stops here (``data.unsolved_tasks ==
    "error"``), or is left out of the files and named in the summary's ``left_out`` (``{task: why}``,
    the task as ``"suite/index"`` when there are several suites, with ``"train_without"``).

    Raises:
        RuntimeError: a task without its demonstrations (naming it and why), or no task with them.
    """
    from flowvla.recipes.generate import generate

    data = cfg.data
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    several = len(data.suites) > 1
    files: list[Path] = []
    left_out: dict[Any, str] = {}
    summary: dict[str, Any] = {"tasks": {}, "complete": True, "demos": 0, "attempts_this_call": 0}
    for suite in data.suites:
        folder = root / cfg.suite_data_key(suite)
        gen_cfg = data.generate_config(
            str(folder), depth=cfg.needs_depth, seed=cfg.seed, progress=progress, suite=suite
        )
        part = generate(gen_cfg, episode_fn=episode_fn)
        summary = {
            "tasks": {**summary["tasks"], **part["tasks"]},
            "complete": summary["complete"] and part.get("complete", True),
            "demos": summary["demos"] + part.get("demos", 0),
            "attempts_this_call": summary["attempts_this_call"] + part["attempts_this_call"],
        }
        for t in data.tasks:
            s = part["tasks"][f"{suite}/{t}"]
            if not s.get("supported", True):
                why = f"the scripted expert cannot solve it ({s['reason']})"
            elif s["demos"] < data.demos_needed:
                why = (
                    f"only {s['demos']} of {data.demos_needed} demonstrations after {s['attempts']} "
                    f"attempts (expert success {s['expert_success_rate']:.0%})"
                )
            else:
                files.append(folder / suite / s["dataset"])
                continue
            if data.unsolved_tasks == "error":
                raise RuntimeError(
                    f"{suite} task {t}: {why}; data.unsolved_tasks=train_without trains without it"
                )
            left_out[f"{suite}/{t}" if several else t] = why
    if not files:
        raise RuntimeError(f"{data.suite}: no task of {data.tasks} has its demonstrations: {left_out}")
    return files, {**summary, "left_out": left_out}


#: Settings that decide how fast a run goes, never what it computes: a run resumes with others (on a
#: machine with more cores, say).
SPEED_SETTINGS = frozenset({"data.workers", "eval.workers", "eval.envs_per_worker"})


def check_resumable(cfg: RecipeConfig, out: Path) -> None:
    """Refuse to run ``cfg`` into a folder holding a run of another recipe (naming the settings that
    differ; those of ``SPEED_SETTINGS`` may). A run saved before a setting existed holds that setting's
    default."""
    recipe_file = Path(out) / "recipe.json"
    if not recipe_file.is_file():
        return
    before = flat_settings(load_recipe(out))
    ours = flat_settings(cfg)
    changed = sorted(k for k in ours if k not in SPEED_SETTINGS and before.get(k) != ours[k])
    if changed:
        raise ValueError(
            f"out={str(out)!r} holds a run of another recipe (settings {changed} differ); "
            "use a new out folder, or the same settings to resume"
        )


def _load_run(out: Path) -> dict[str, Any]:
    path = out / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {"phases": {}}


def load_run(out: str | Path) -> dict[str, Any]:
    """What a run folder's ``run.json`` holds: ``phases`` (each phase's ``seconds`` summed over every
    call that worked on it, ``calls``, ``note``), and the results of the phases done so far
    (``parity``, ``train``, ``success``, ``eval_summary``, ``sensitivity``); ``finished`` once the
    report of a complete run was written. ``{"phases": {}}`` for a folder without one."""
    return _load_run(Path(out))


def _training_done(run: dict[str, Any], out: Path) -> bool:
    """Whether an earlier call finished training: its report says it stopped at its steps or its
    budget, and the checkpoint is there (a call cut short writes no report)."""
    from flowvla.training import latest_checkpoint

    stopped = run.get("train", {}).get("stopped")
    return stopped in ("steps", "max_minutes") and latest_checkpoint(out) is not None


def run_job(
    cfg: RecipeConfig,
    out: Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    parity: bool = True,
    trained: Path | None = None,
    episode_fn: Any = None,
    expert_episode_fn: Any = None,
) -> dict[str, Any]:
    """Run (or resume) every phase; see [`run_recipe`][flowvla.recipes.libero.run_recipe].

    Nothing finished is done again: a call into a finished run returns it; otherwise each phase whose
    result ``run.json`` holds (parity, training, sensitivity) is skipped, and the evaluation runs
    only the episodes missing from its records. The demonstrations are read (generated into the
    cache when missing) only when a phase left to do needs them, so a run folder carried to a new
    machine with its training done evaluates without regenerating any data. Each phase's ``seconds``
    add up over every call that worked on it.

    Args:
        cfg: the recipe.
        out: the run folder.
        cache_dir: the demonstration cache (default:
            [`default_cache_dir`][flowvla.recipes.parts.default_cache_dir]).
        progress: show progress bars.
        parity: run the train/eval parity check before training.
        trained: a checkpoint of this recipe's training trained elsewhere (e.g. by another variant of
            a sweep that differs only in how it is evaluated); the training phase then loads it.
        episode_fn: the evaluation's episode (see [`evaluate`][flowvla.envs.rollout.evaluate]);
            tests inject episodes through it.
        expert_episode_fn: the generator's expert episode (see
            [`generate`][flowvla.recipes.generate.generate]).
    """
    import torch

    out.mkdir(parents=True, exist_ok=True)
    check_resumable(cfg, out)
    save_recipe(cfg, out)
    run = _load_run(out)
    if run.get("finished"):
        say(f"{out}: finished earlier; nothing to do (report: {out / 'report.md'})")
        return run
    run["recipe"] = cfg.to_dict()

    def done(name: str, seconds: float, note: str = "", *, calls: int | None = None, **extra: Any) -> None:
        # ``calls`` given: ``seconds`` is already the total of that many calls (a call cut off never
        # got here to add its share, but the training log kept it).
        before = run["phases"].get(name, {}) if calls is None else {"seconds": 0.0, "calls": calls - 1}
        calls = before.get("calls", 1 if before else 0) + 1
        total = before.get("seconds", 0.0) + seconds
        run["phases"][name] = {"seconds": total, "calls": calls, "note": note, **extra}
        write_json_atomic(out / RUN_FILE, run)

    files: list[Path] | None = None

    def demos() -> list[Path]:
        # 1. demonstrations, read only when a phase left to do needs them
        nonlocal files
        if files is None:
            t0 = time.perf_counter()
            d = cfg.data
            say(f"[1/6] demonstrations: {d.demos_per_task} per task for {d.suite} tasks {d.tasks}")
            files, gen = ensure_demos(cfg, cache_dir, progress=progress, episode_fn=expert_episode_fn)
            made = gen["attempts_this_call"]
            note = f"generated ({made} attempts)" if made else "reused from the cache"
            left_out = gen.get("left_out", {})
            if left_out:
                note += f"; trained without tasks {sorted(left_out)} (no demonstrations)"
                say(f"      no demonstrations, trained without: {left_out}")
            extra = {"left_out": {str(t): why for t, why in left_out.items()}} if left_out else {}
            done("data", time.perf_counter() - t0, note, files=[str(f) for f in files], **extra)
        return files

    # 2. parity (before any training)
    if parity and not run.get("parity", {}).get("passed"):
        from flowvla.recipes.parity import check_parity

        first = demos()[0]
        t0 = time.perf_counter()
        say("[2/6] train/eval parity check")
        report = check_parity(first, episode=0, cameras=cfg.data.cameras)
        report.save(out / "parity.json")
        run["parity"] = report.to_dict()
        done("parity", time.perf_counter() - t0, "passed" if report.passed else "FAILED")
        report.raise_if_failed()

    # 3. training
    torch.set_num_threads(cfg.train.threads)
    from flowvla.recipes.train import load_trained, train_policy, training_call_seconds

    if trained is not None:
        t0 = time.perf_counter()
        say(f"[3/6] training: reusing {trained}")
        policy, run["train"] = load_trained(cfg, Path(trained))
        done("train", time.perf_counter() - t0, f"reused {trained}")
    elif _training_done(run, out):
        from flowvla.policy import VLAPolicy

        say(f"[3/6] training: done earlier (step {run['train'].get('step')}, {run['train']['stopped']})")
        policy = VLAPolicy.from_pretrained(out / "checkpoint", weights=cfg.eval.weights)
    else:
        dataset = build_dataset(cfg, demos())
        val = build_val_dataset(cfg, demos())
        t0 = time.perf_counter()
        say(f"[3/6] training ({cfg.train.steps} steps, batch {cfg.train.batch_size})")
        policy, report = train_policy(cfg, dataset, out, progress=progress, val_dataset=val)
        if report["step"] == report.get("resumed_from") and "train" in run:
            # Finished earlier (all steps, or the budget spent): keep the report of the call that trained.
            say(f"      already trained: step {report['step']} ({report['stopped']})")
        else:
            run["train"] = report
            per_call = training_call_seconds(out / "log.jsonl")
            if per_call:
                done("train", sum(per_call), f"{report['step']} steps", calls=len(per_call))
            else:
                done("train", time.perf_counter() - t0, f"{report['step']} steps")

    # 4. evaluation on the official init states (resumes from its records)
    t0 = time.perf_counter()
    n = cfg.eval.init_states * len(cfg.data.tasks) * len(cfg.data.suites)
    say(f"[4/6] evaluation: {n} episodes on official init states 0-{cfg.eval.init_states - 1}")
    summary = evaluate_policy(cfg, policy, out / "eval", progress=progress, episode_fn=episode_fn)
    from flowvla.recipes.report import format_success_table, success_table

    table = success_table(summary)
    write_json_atomic(out / "success.json", table)
    run["success"] = table
    keys = ("mean_steps", "mean_episode_s", "mean_second_diff", "mean_third_diff")
    from flowvla.envs.rollout import SEAM_SMOOTHNESS

    keys += tuple(f"mean_{k}" for k in SEAM_SMOOTHNESS)
    run["eval_summary"] = {k: summary[k] for k in keys if k in summary}
    done("eval", time.perf_counter() - t0, f"{n} episodes, {cfg.eval.workers} workers")
    print(format_success_table(table))

    # 5. sensitivity of the trained policy
    if "sensitivity" not in run:
        batch = sensitivity_batch(cfg, demos())
        t0 = time.perf_counter()
        say("[5/6] sensitivity check")
        from flowvla.diagnostics import sensitivity_report

        sens = sensitivity_report(policy, batch, seed=cfg.seed)
        write_json_atomic(out / "sensitivity.json", sens)
        run["sensitivity"] = sens
        done("sensitivity", time.perf_counter() - t0)

    # 6. report
    say("[6/6] report")
    from flowvla.recipes.report import loss_curve_png, write_report

    if (out / "log.jsonl").is_file():
        loss_curve_png(out / "log.jsonl", out / "loss.png")
    run["finished"] = True
    path = write_report(out, run)
    write_json_atomic(out / RUN_FILE, run)
    say(f"report: {path}  (total {sum(p['seconds'] for p in run['phases'].values()) / 60:.1f} min)")
    return run


def evaluate_policy(
    cfg: RecipeConfig, policy: Any, out: Path, *, progress: bool = True, episode_fn: Any = None
) -> dict[str, Any]:
    """Roll ``policy`` out on ``cfg``'s tasks and official init states; returns the summary. With
    several suites, each is evaluated by its own protocol (its step limit) into the same records, and
    the summary is over all of them (its tasks keyed ``"suite/index"`` as always).
    ``episode_fn``: how one episode is run (default: in LIBERO; see
    [`evaluate`][flowvla.envs.rollout.evaluate])."""
    from flowvla.envs.rollout import evaluate, summarize

    summaries = []
    for suite in cfg.data.suites:
        rollout = cfg.eval.rollout_config(
            policy,
            suite=suite,
            tasks=cfg.data.tasks,
            cameras=cfg.data.cameras,
            out_dir=str(out),
            seed=cfg.seed,
            progress=progress,
        )
        summaries.append(evaluate(policy.eval(), rollout, episode_fn=episode_fn))
    if len(summaries) == 1:
        return summaries[0]
    from flowvla.envs.ledger import load_records

    wanted = {(s, t, i) for s in cfg.data.suites for t in cfg.data.tasks for i in range(cfg.eval.init_states)}
    rows = [
        r
        for r in load_records(out / "episodes.jsonl")
        if (r["suite"], r["task_index"], r["init_state"]) in wanted
    ]
    summary = {**summarize(rows), "policy": summaries[0]["policy"]}
    summary["config"] = {s["config"]["suite"]: s["config"] for s in summaries}
    write_json_atomic(out / "summary.json", summary)
    return summary


def sensitivity_batch(cfg: RecipeConfig, files: list[Path], per_task: int = 2) -> dict[str, Any]:
    """Observations from the middle of the first demonstrations of each task, unaugmented."""
    return observation_batch(cfg, files, per_task=per_task, points=(1 / 3,))


def observation_batch(
    cfg: RecipeConfig,
    files: list[Path],
    *,
    per_task: int,
    points: tuple[float, ...],
    with_actions: bool = False,
) -> dict[str, Any]:
    """Policy inputs from the first ``per_task`` training demonstrations of each task, at each fraction
    ``points`` of the way through the episode (unaugmented): observations like the ones the policy
    meets, e.g. to fit a solver to its field on. ``with_actions`` adds the demonstrated chunks
    (``actions``, ``action_mask``)."""
    from flowvla.data.batch import collate

    if per_task < 1 or not points or not all(0 <= p < 1 for p in points):
        raise ValueError(f"per_task must be >= 1 and points in [0, 1), got {per_task}, {points}")
    # Only the first demonstrations are read: no need to load every frame of a 500-demo suite.
    dataset = build_dataset(cfg, files, augment=False, episodes_per_task=per_task, preload=False)
    items, seen = [], {}
    for e in range(len(dataset.source)):
        task = dataset.source.instruction(e)
        if seen.get(task, 0) >= per_task:
            continue
        seen[task] = seen.get(task, 0) + 1
        first, last = dataset._starts[e], dataset._starts[e + 1]
        # + 1e-9: a third of 9 items is item 3, not the 2 that 9 * (1 / 3) = 2.9999999999999996 floors to.
        items.extend(dataset[first + int((last - first) * p + 1e-9)] for p in points)
    batch = collate(items)
    keys = ("images", "instruction", "state", "depth", "intrinsics", "extrinsics")
    keys += ("actions", "action_mask") if with_actions else ()
    return {k: batch[k] for k in keys if k in batch}


def fit_run_solver(
    run_dir: str | Path,
    *,
    steps: int,
    base: str = "euler",
    per_task: int = 4,
    points: tuple[float, ...] = (0.1, 0.35, 0.6, 0.85),
    **fit_kwargs: Any,
) -> Any:
    """A bespoke solver fitted to the trained policy of a recipe run (``run_dir/checkpoint``, the
    weights its recipe evaluates) on observations from its own training demonstrations; see
    [`fit_policy_solver`][flowvla.policy.solver_fit.fit_policy_solver]."""
    from flowvla.policy.solver_fit import fit_policy_solver

    policy, batch = _run_policy_and_batch(run_dir, per_task, points, with_actions=False)
    solver = fit_policy_solver(policy, batch, steps=steps, base=base, **fit_kwargs)
    solver.info.update(
        run=str(run_dir), weights=policy.loaded_weights, points=list(points), per_task=per_task
    )
    return solver


def fit_run_grid(
    run_dir: str | Path,
    *,
    solver: str,
    steps: int,
    target: str = "ode",
    per_task: int = 4,
    points: tuple[float, ...] = (0.1, 0.35, 0.6, 0.85),
    **fit_kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """A time grid for ``solver`` fitted to the trained policy of a recipe run, on observations (and,
    for ``target="demos"``, the demonstrated chunks) of its own training demonstrations; see
    [`fit_policy_grid`][flowvla.policy.solver_fit.fit_policy_grid]. Returns ``(grid, info)``."""
    from flowvla.policy.solver_fit import fit_policy_grid

    policy, batch = _run_policy_and_batch(run_dir, per_task, points, with_actions=True)
    grid, info = fit_policy_grid(policy, batch, solver=solver, steps=steps, target=target, **fit_kwargs)
    info.update(run=str(run_dir), weights=policy.loaded_weights, points=list(points), per_task=per_task)
    return grid, info


def distill_run_shortcut(
    run_dir: str | Path,
    *,
    per_task: int = 8,
    points: tuple[float, ...] = (0.05, 0.175, 0.3, 0.425, 0.55, 0.675, 0.8, 0.925),
    **distill_kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """A shortcut student of the trained policy of a recipe run, distilled on observations and
    demonstrated chunks of its own training demonstrations; see
    [`distill_policy_shortcut`][flowvla.policy.shortcut_distill.distill_policy_shortcut]. Returns
    ``(student, info)``."""
    from flowvla.policy.shortcut_distill import distill_policy_shortcut

    policy, batch = _run_policy_and_batch(run_dir, per_task, points, with_actions=True)
    student, info = distill_policy_shortcut(policy, batch, **distill_kwargs)
    info.update(run=str(run_dir), weights=policy.loaded_weights, points=list(points), per_task=per_task)
    return student, info


def _run_policy_and_batch(
    run_dir: str | Path, per_task: int, points: tuple[float, ...], *, with_actions: bool
) -> tuple[Any, dict[str, Any]]:
    """A recipe run's evaluated policy and an observation batch from its training demonstrations."""
    run_dir = Path(run_dir)
    policy, cfg = load_run_policy(run_dir)
    files = [Path(f) for f in _load_run(run_dir)["phases"]["data"]["files"]]
    batch = observation_batch(cfg, files, per_task=per_task, points=points, with_actions=with_actions)
    return policy, batch


__all__ += [
    "distill_run_shortcut",
    "evaluate_policy",
    "fit_run_grid",
    "fit_run_solver",
    "observation_batch",
    "sensitivity_batch",
]
