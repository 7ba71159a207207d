"""Sampling a trained policy in closed loop: ODE solver and NFE against success, with no retraining.

One trained checkpoint, several ``solver@steps`` settings, every setting evaluated by the library's
rollout runner on the same official init states with the same seeds, so the only thing that changes
between rows is how the action chunk is integrated from noise. Per setting it reports success with
its Wilson interval and the change against the first (reference) setting, the NFE, the latency of one
chunk inside the control loop (``time_policy / replans`` of the episode records: batching, backbone
and all solver steps), the episode length, the smoothness of the executed arm actions (mean squared
2nd / 3rd differences, [`action_smoothness`][flowvla.envs.rollout.action_smoothness]) and how the
failures ended.

    python benchmarks/libero/sampling.py --policy RUN/checkpoint --tasks 0,1 --init-states 25 \\
        --settings euler@10,euler@1,euler@2,euler@4,midpoint@5,ab2@4,dpm++2m@4 \\
        --out benchmarks/results/libero_sampling

``--bespoke euler@1,euler@2`` adds bespoke solvers (learned step times and scales, issue 16's learned
solver route) fitted to the policy's own field on observations from its run's training demonstrations
([`fit_run_solver`][flowvla.recipes.job.fit_run_solver]); each is kept as
``<out>/bespoke-<base>@<steps>.json`` and its held-out end-point error printed.

``--fitted-grid ab2@4:ode,ab2@4:demos`` adds named solvers on time grids fitted to the same field
([`fit_run_grid`][flowvla.recipes.job.fit_run_grid]): ``ode`` fits the end point of an accurate solve,
``demos`` the demonstrated chunks (an offline task metric); each is kept as
``<out>/grid-<solver>@<steps>-<target>.json`` beside its held-out errors (``.info.json``).

``--shortcut 1,2,4`` adds a shortcut student (issue 16's self-distillation route): the policy's flow
head given a step-size input and distilled from the policy on its run's training demonstrations
([`distill_run_shortcut`][flowvla.recipes.job.distill_run_shortcut]), sampled with
``solver="shortcut"`` at each step count. The student is kept as ``<out>/shortcut-student/`` (a
policy folder, with ``distill.json``: its held-out errors and settings) and distilled again when
those settings differ.

Prints the table and writes ``<out>/sampling.json``; each setting's episode records stay under
``<out>/<solver>@<steps>/`` and a re-run resumes them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flowvla.cli import index_list
from flowvla.io import write_json_atomic


def parse_settings(text: str) -> list[tuple[str, int]]:
    """``"euler@10,ab2@4"`` -> ``[("euler", 10), ("ab2", 4)]``, solver names checked."""
    from flowvla.solvers import available_solvers

    out = []
    for item in text.split(","):
        name, sep, steps = item.strip().partition("@")
        if not sep or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--settings: {item!r} is not SOLVER@STEPS (e.g. euler@10)")
        if name not in available_solvers():
            raise SystemExit(f"--settings: unknown solver {name!r}; choose from {available_solvers()}")
        out.append((name, int(steps)))
    return out


def base_config(policy: Any, args: argparse.Namespace) -> Any:
    """The rollout settings every row shares (same episodes, seeds and step limit); each row sets its
    own solver in ``predict_kwargs``."""
    from flowvla.envs.libero import DEFAULT_CAMERAS
    from flowvla.policy import policy_identity
    from flowvla.recipes.config import EvalConfig

    how = EvalConfig(
        init_states=args.init_states,
        replan_every=args.replan_every,
        replan_at_gripper=args.replan_at_gripper,
        solver=policy.config.solver,
        solver_steps=policy.config.steps,
        video="none",
        workers=args.workers,
        max_steps=args.max_steps,
    )
    return how.rollout_config(
        policy,
        suite=args.suite,
        tasks=args.tasks,
        cameras=list(DEFAULT_CAMERAS),
        out_dir=None,
        seed=args.seed,
        progress=not args.quiet,
        policy_id=policy_identity(policy, args.policy),
    )


def eval_options(p: argparse.ArgumentParser) -> None:
    """The options of a closed-loop comparison (shared with ``robustness.py``)."""
    p.add_argument("--policy", required=True, help="a directory written by save_pretrained")
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", type=index_list, default=[0, 1])
    p.add_argument("--init-states", type=int, default=25)
    p.add_argument("--replan-every", type=int, default=8)
    p.add_argument(
        "--replan-at-gripper",
        action="store_true",
        help="cut each chunk before its first gripper toggle and re-plan there",
    )
    p.add_argument(
        "--weights",
        choices=("auto", "raw", "ema"),
        default="auto",
        help="which weights of the checkpoint (auto: EMA when saved)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, help="episode step limit (default: the suite's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace, variants: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """Load the policy, compare ``variants`` on the same episodes, print the table, write JSON."""
    import torch

    from flowvla.envs.variants import compare_variants, format_table
    from flowvla.policy import VLAPolicy

    torch.set_num_threads(args.threads)
    policy = VLAPolicy.from_pretrained(args.policy, weights=args.weights).eval()
    base = base_config(policy, args)
    rows = compare_variants(policy, base, variants, args.out)
    print(format_table(rows))
    result = {
        "policy": str(args.policy),
        "suite": args.suite,
        "tasks": args.tasks,
        "init_states": args.init_states,
        "replan_every": args.replan_every,
        "replan_at_gripper": args.replan_at_gripper,
        "weights": policy.loaded_weights,
        "seed": args.seed,
        "rows": rows,
    }
    write_json_atomic(Path(args.out) / f"{name}.json", result)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    eval_options(p)
    p.add_argument("--settings", default="euler@10,euler@1,euler@2,euler@4")
    p.add_argument(
        "--bespoke",
        help="bespoke solvers to fit to the policy's field and evaluate, BASE@STEPS (euler or midpoint), "
        "e.g. euler@1,euler@2; fitted on the run's training demonstrations (--policy RUN/checkpoint)",
    )
    p.add_argument(
        "--fitted-grid",
        help="named solvers on time grids fitted to the policy's field, SOLVER@STEPS:TARGET with TARGET "
        "ode or demos, e.g. ab2@4:ode,ab2@4:demos (fitted on the run's training demonstrations)",
    )
    p.add_argument("--fit-iterations", type=int, default=300, help="Adam steps of each bespoke fit")
    p.add_argument(
        "--shortcut",
        help="step counts at which to evaluate a shortcut student distilled from the policy, e.g. 1,2,4",
    )
    p.add_argument("--shortcut-iterations", type=int, default=2000, help="Adam steps of the distillation")
    p.add_argument("--fit-samples", type=int, default=8, help="noise draws per observation in a fit")
    p.add_argument("--out", default="benchmarks/results/libero_sampling")
    args = p.parse_args(argv)
    variants = {
        f"{solver}@{steps}": {
            "predict_kwargs": {"seed": args.seed, "diagnostics": False, "solver": solver, "steps": steps}
        }
        for solver, steps in parse_settings(args.settings)
    }
    for base, steps in parse_bespoke(args.bespoke):
        solver = bespoke_solver(args, base, steps)
        variants[f"bespoke-{base}@{steps}"] = {
            "predict_kwargs": {"seed": args.seed, "diagnostics": False, "solver": solver, "steps": steps}
        }
    for solver, steps, target in parse_fitted_grids(args.fitted_grid):
        grid = fitted_grid(args, solver, steps, target)
        variants[f"{solver}@{steps}-fitted-{target}"] = {
            "predict_kwargs": {"seed": args.seed, "diagnostics": False, "solver": solver, "grid": grid.times}
        }
    if args.shortcut:
        from flowvla.policy import policy_identity

        student, student_dir = shortcut_student(args)
        student_id = policy_identity(student, student_dir)
        for steps in index_list(args.shortcut):
            variants[f"shortcut@{steps}"] = {
                "policy": student,
                "policy_id": student_id,
                "predict_kwargs": {
                    "seed": args.seed,
                    "diagnostics": False,
                    "solver": "shortcut",
                    "steps": steps,
                },
            }
    return run(args, variants, "sampling")


def shortcut_student(args: argparse.Namespace) -> tuple[Any, Path]:
    """The shortcut student of ``--policy``'s run, distilled once and kept as a policy folder
    ``<out>/shortcut-student/`` (``distill.json`` beside it); distilled again when the kept one came
    from another policy or other settings."""
    import json

    import torch

    from flowvla.policy import VLAPolicy
    from flowvla.recipes.job import distill_run_shortcut

    path = Path(args.out) / "shortcut-student"
    settings = {
        "policy": str(Path(args.policy).resolve()),
        "iterations": args.shortcut_iterations,
        "seed": args.seed,
    }
    info_path = path / "distill.json"
    if info_path.is_file():
        kept = json.loads(info_path.read_text())
        if kept.get("settings") == settings:
            return VLAPolicy.from_pretrained(path).eval(), path
        print(f"{path}: distilled with {kept.get('settings')}, not {settings}; distilling again")
    run_dir = Path(args.policy).parent
    if not (run_dir / "recipe.json").is_file():
        raise SystemExit(f"--shortcut: {run_dir} is not a recipe run folder (give --policy RUN/checkpoint)")
    torch.set_num_threads(args.threads)
    student, info = distill_run_shortcut(run_dir, iterations=args.shortcut_iterations, seed=args.seed)
    student.save_pretrained(path)
    info["settings"] = settings
    write_json_atomic(info_path, info)
    errors = {k: round(v, 4) for k, v in info.get("held_out_error", {}).items()}
    euler = {k: round(v, 4) for k, v in info.get("held_out_teacher_euler", {}).items()}
    print(
        f"shortcut student: distilled in {info['seconds']:.0f} s; held-out error by steps {errors} "
        f"(teacher Euler {euler})"
    )
    return student.eval(), path


def parse_fitted_grids(text: str | None) -> list[tuple[str, int, str]]:
    """``"ab2@4:ode,euler@2:demos"`` -> ``[("ab2", 4, "ode"), ("euler", 2, "demos")]``."""
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        setting, sep, target = item.strip().rpartition(":")
        if not sep or target not in ("ode", "demos"):
            raise SystemExit(f"--fitted-grid: {item!r} is not SOLVER@STEPS:ode or SOLVER@STEPS:demos")
        try:
            ((solver, steps),) = parse_settings(setting)
        except (SystemExit, ValueError):
            raise SystemExit(
                f"--fitted-grid: {item!r} is not SOLVER@STEPS:TARGET with a known solver"
            ) from None
        out.append((solver, steps, target))
    return out


def fitted_grid(args: argparse.Namespace, solver: str, steps: int, target: str) -> Any:
    """The grid for ``--policy``'s run, fitted once and kept as ``<out>/grid-<solver>@<steps>-<target>.json``
    (its held-out errors and fit settings in ``.info.json``); refitted when those settings differ."""
    import json

    from flowvla.io import write_json_atomic
    from flowvla.recipes.job import fit_run_grid
    from flowvla.solvers import FittedGrid

    path = Path(args.out) / f"grid-{solver}@{steps}-{target}.json"
    info_path = path.with_suffix(".info.json")
    fit = {"policy": str(Path(args.policy).resolve()), "samples": args.fit_samples, "seed": args.seed}
    if path.is_file() and info_path.is_file():
        if json.loads(info_path.read_text()).get("fit_settings") == fit:
            return FittedGrid.load(path)
        print(f"{path}: fitted with other settings than {fit}; fitting again")
    run_dir = Path(args.policy).parent
    if not (run_dir / "recipe.json").is_file():
        raise SystemExit(
            f"--fitted-grid: {run_dir} is not a recipe run folder (give --policy RUN/checkpoint)"
        )
    grid, info = fit_run_grid(
        run_dir, solver=solver, steps=steps, target=target, samples=args.fit_samples, seed=args.seed
    )
    info["fit_settings"] = fit
    errors = ", ".join(
        f"to the {k} {info[f'held_out_{k}_error']:.4f} (uniform {info[f'held_out_{k}_error_uniform']:.4f})"
        for k in ("ode", "demo")
    )
    times = [round(t, 3) for t in grid.times]
    print(f"{solver}@{steps} grid fitted to {target} in {info['seconds']:.0f} s: {times}; held out, {errors}")
    grid.save(path)
    write_json_atomic(info_path, info)
    return grid


def parse_bespoke(text: str | None) -> list[tuple[str, int]]:
    """``"euler@2,midpoint@1"`` -> ``[("euler", 2), ("midpoint", 1)]`` (the bases a bespoke solver has)."""
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        base, sep, steps = item.strip().partition("@")
        if base not in ("euler", "midpoint") or not sep or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--bespoke: {item!r} is not euler@STEPS or midpoint@STEPS")
        out.append((base, int(steps)))
    return out


def bespoke_solver(args: argparse.Namespace, base: str, steps: int) -> Any:
    """The bespoke solver for ``--policy``'s run, fitted once and kept as
    ``<out>/bespoke-<base>@<steps>.json``; refitted when the kept one was fitted to another policy or
    with other fit settings."""
    from flowvla.recipes.job import fit_run_solver
    from flowvla.solvers import BespokeSolver

    path = Path(args.out) / f"bespoke-{base}@{steps}.json"
    fit = {
        "policy": str(Path(args.policy).resolve()),
        "iterations": args.fit_iterations,
        "samples": args.fit_samples,
        "seed": args.seed,
    }
    if path.is_file():
        kept = BespokeSolver.load(path)
        if kept.info.get("fit_settings") == fit:
            return kept
        print(f"{path}: fitted with {kept.info.get('fit_settings')}, not {fit}; fitting again")
    run_dir = Path(args.policy).parent
    if not (run_dir / "recipe.json").is_file():
        raise SystemExit(f"--bespoke: {run_dir} is not a recipe run folder (give --policy RUN/checkpoint)")
    solver = fit_run_solver(
        run_dir,
        steps=steps,
        base=base,
        iterations=args.fit_iterations,
        samples=args.fit_samples,
        seed=args.seed,
    )
    solver.info["fit_settings"] = fit
    i = solver.info
    print(
        f"bespoke-{base}@{steps}: fitted in {i['seconds']:.0f} s; held-out error {i['held_out_error']:.4f} "
        f"(plain {base}@{steps} {i['held_out_base_error']:.4f}, euler@10 {i['held_out_euler10_error']:.4f})"
    )
    solver.save(path)
    return solver


if __name__ == "__main__":
    main()
