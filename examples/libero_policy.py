"""Train the reference flowvla policy on LIBERO and evaluate it: the whole job in one command.

    # everything, with the default recipe (2 libero_object tasks, about an hour on 2 CPU cores)
    python examples/libero_policy.py

    # the same job for all 10 libero_object tasks, into a folder of your choice
    python examples/libero_policy.py run --preset libero_object --out runs/libero_object

    # one standard suite by the field's protocol (also libero_object, libero_goal, libero_10);
    # benchmarks/libero/suites.py runs the four and writes the table
    python examples/libero_policy.py run --preset libero_spatial --out runs/suites/libero_spatial

    # train on demonstrations you already have, then evaluate a saved policy
    python examples/libero_policy.py train --data data/scripted --out runs/mine --steps 3000
    python examples/libero_policy.py eval --policy runs/mine/checkpoint --suite libero_object \\
        --tasks 0,1 --init-states 50 --check-parity data/scripted --out runs/mine/eval

``run`` generates scripted demonstrations (or reuses them from the cache), checks train/eval parity,
trains, evaluates on the official init states, measures the policy's sensitivity and writes a report
(see ``flowvla.recipes``). Every phase resumes when the command is run again with the same ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flowvla.checks import UserError
from flowvla.cli import fail, index_list
from flowvla.envs.libero import DEFAULT_CAMERAS
from flowvla.recipes.libero import PRESETS, parse_settings, preset


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "tasks",
        "demos_per_task",
        "steps",
        "max_minutes",
        "batch_size",
        "init_states",
        "eval_workers",
        "gen_workers",
        "threads",
        "seed",
    )
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    out.update(parse_settings(getattr(args, "set", None) or []))
    return out


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    from flowvla.recipes.libero import run_recipe

    cfg = preset(args.preset, **_overrides(args))
    out = Path(args.out or f"runs/{cfg.name}")
    run = run_recipe(cfg, out, cache_dir=args.cache, progress=not args.quiet, parity=not args.no_parity)
    print(f"report: {out / 'report.md'}")
    return run


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from flowvla.data.hdf5 import find_demo_files
    from flowvla.recipes.libero import build_dataset
    from flowvla.recipes.train import train_policy

    cfg = preset(args.preset, **_overrides(args))
    torch.set_num_threads(cfg.train.threads)
    dataset = build_dataset(cfg, find_demo_files(args.data))
    print(f"{len(dataset.source)} demonstrations, {len(dataset)} training items", file=sys.stderr)
    _, report = train_policy(cfg, dataset, Path(args.out), progress=not args.quiet)
    print(json.dumps(report, indent=2, default=str))
    return report


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from flowvla.envs.rollout import evaluate
    from flowvla.policy import VLAPolicy, policy_identity
    from flowvla.recipes.config import EvalConfig

    torch.set_num_threads(args.threads or torch.get_num_threads())
    policy = VLAPolicy.from_pretrained(args.policy).eval()
    how = EvalConfig(
        init_states=args.init_states,
        replan_every=args.replan_every,
        temporal_ensemble=args.temporal_ensemble,
        replan_at_gripper=args.replan_at_gripper,
        solver=args.solver or policy.config.solver,
        solver_steps=args.solver_steps or policy.config.steps,
        video=args.video,
        workers=args.workers,
        max_steps=args.max_steps,
    )
    if args.check_parity:
        from flowvla.data.hdf5 import find_demo_files
        from flowvla.recipes.parity import check_parity

        report = check_parity(
            find_demo_files([args.check_parity])[0], policy=policy, stats=None, cameras=args.cameras
        )
        print(report.summary(), file=sys.stderr)
        report.raise_if_failed()
    rollout = how.rollout_config(
        policy,
        suite=args.suite,
        tasks=args.tasks,
        cameras=args.cameras,
        out_dir=args.out,
        seed=args.seed,
        progress=not args.quiet,
        # Records name the policy: an --out written by another policy is refused, never reused.
        policy_id=policy_identity(policy, args.policy),
    )
    summary = evaluate(policy, rollout)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return summary


def _recipe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named recipe (default)")
    p.add_argument("--tasks", type=index_list, help="task indices, e.g. 0,1 or 0-9")
    p.add_argument("--demos-per-task", type=int)
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--threads", type=int, help="torch threads for training")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="any other RecipeConfig setting by its path, e.g. --set train.lr=2e-3 eval.replan_every=4 "
        "(JSON values; the flat names of before, lr=2e-3, still work)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python examples/libero_policy.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    sub = ap.add_subparsers(dest="command")
    r = sub.add_parser(
        "run", allow_abbrev=False, help="generate -> parity -> train -> evaluate -> report (the default)"
    )
    _recipe_options(r)
    r.add_argument("--out", help="run folder (default: runs/<preset>)")
    r.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    r.add_argument("--init-states", type=int, help="official init states evaluated per task")
    r.add_argument("--eval-workers", type=int)
    r.add_argument("--gen-workers", type=int)
    r.add_argument("--no-parity", action="store_true", help="skip the train/eval parity check")
    r.set_defaults(fn=cmd_run)
    t = sub.add_parser(
        "train", allow_abbrev=False, help="train (or resume) the recipe's policy on your demonstrations"
    )
    _recipe_options(t)
    t.add_argument("--data", nargs="+", required=True, help="LIBERO HDF5 files or folders holding them")
    t.add_argument("--out", required=True)
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("eval", allow_abbrev=False, help="evaluate a saved policy on official init states")
    e.add_argument("--policy", required=True, help="a directory written by save_pretrained")
    e.add_argument("--suite", default="libero_object")
    e.add_argument(
        "--cameras",
        nargs="+",
        default=list(DEFAULT_CAMERAS),
        help="the views the policy was trained on, in order (a recipe's `cameras`)",
    )
    e.add_argument("--tasks", type=index_list, help="task indices, e.g. 0,1 (default: all)")
    e.add_argument("--init-states", type=int, default=50)
    e.add_argument("--replan-every", type=int, default=8)
    e.add_argument("--temporal-ensemble", type=float, help="ACT's ensembling decay m (default: off)")
    e.add_argument(
        "--replan-at-gripper",
        action="store_true",
        help="cut each chunk before its first gripper toggle and re-plan there",
    )
    e.add_argument("--solver", help="ODE solver, e.g. euler, heun, rk4 (default: the policy's)")
    e.add_argument("--solver-steps", type=int, help="ODE solver steps (default: the policy's)")
    e.add_argument("--max-steps", type=int)
    e.add_argument("--video", default="first")
    e.add_argument("--out", required=True)
    e.add_argument("--workers", type=int, default=1)
    e.add_argument("--threads", type=int)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--check-parity", metavar="DATA", help="first check parity against this dataset")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(fn=cmd_eval)
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the command; a user's mistake (a bad setting, a missing folder) ends it with one line on
    stderr and exit status 2, before any compute."""
    parser = build_parser()
    args = parser.parse_args(["run"] if not (sys.argv[1:] if argv is None else argv) else argv)
    try:
        return args.fn(args)
    except UserError as e:
        raise SystemExit(fail(parser.prog, e)) from None


if __name__ == "__main__":
    main()
