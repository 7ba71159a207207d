"""Evaluate a policy on LIBERO with flowvla's rollout runner.

    # a baseline, two init states of tasks 0 and 1, with videos of every episode:
    python examples/libero_eval.py --suite libero_object --tasks 0,1 --init-states 2 --video all \\
        --out runs/demo

    # your own policy: any importable factory returning an object with predict_action(batch, **kw)
    python examples/libero_eval.py --suite libero_spatial --policy mypkg.policies:load_my_policy \\
        --replan-every 8 --workers 2 --out runs/mine

The batch the policy receives and the actions it must return are documented in
``flowvla.envs.rollout``; results go to ``<out>/episodes.jsonl`` and ``<out>/summary.json``. Records
name the policy (its weights hash for a torch module): an ``--out`` written by another policy is
refused, or moved aside with ``--restart``.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from flowvla.checks import UserError
from flowvla.cli import fail, index_list
from flowvla.envs.libero_setup import LiberoSetupError, set_libero_verbose
from flowvla.envs.rollout import ConstantPolicy, RandomPolicy, RolloutConfig, evaluate
from flowvla.extras import MissingExtraError


def load_policy(spec: str) -> tuple[Any, dict[str, Any]]:
    """The policy named by ``--policy`` and its identity for the records."""
    if spec in ("zero", "random"):
        policy = ConstantPolicy(horizon=8) if spec == "zero" else RandomPolicy(horizon=8)
        return policy, {"class": type(policy).__name__, "horizon": 8, "seed": 0}
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--policy {spec!r}: give 'zero', 'random' or 'package.module:factory'")
    # The policy layer (and torch) only for real policies: the baselines run without them.
    from flowvla.policy import policy_identity

    policy = getattr(importlib.import_module(module), attr)()
    return policy, {**policy_identity(policy), "factory": spec}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python examples/libero_eval.py", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--suite", default="libero_object")
    p.add_argument(
        "--tasks", type=index_list, default=None, help="task indices, e.g. 0,1 or 0-3,7 (default: all)"
    )
    p.add_argument("--init-states", type=int, default=50, help="first N official init states per task")
    p.add_argument("--policy", default="random", help="'zero', 'random' or 'package.module:factory'")
    p.add_argument("--replan-every", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="default: the suite's standard limit")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--depth", action="store_true", help="also pass depth and camera matrices")
    p.add_argument("--state-dim", type=int, default=None)
    p.add_argument("--video", default="failures", choices=["none", "failures", "successes", "all", "first"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="runs/libero_eval")
    p.add_argument("--restart", action="store_true", help="move --out's records of another policy aside")
    p.add_argument("--verbose", action="store_true", help="show robosuite's and LIBERO's start-up messages")
    args = p.parse_args(argv)
    set_libero_verbose(args.verbose)
    try:
        policy, identity = load_policy(args.policy)
        cfg = RolloutConfig(
            suite=args.suite,
            tasks=args.tasks,
            init_states=args.init_states,
            replan_every=args.replan_every,
            max_steps=args.max_steps,
            image_size=args.image_size,
            depth=args.depth,
            state_dim=args.state_dim,
            video=args.video,
            out_dir=args.out,
            workers=args.workers,
            policy_id=identity,
            on_mismatch="restart" if args.restart else "error",
        )
        summary = evaluate(policy, cfg)
    except (ValueError, UserError, MissingExtraError, LiberoSetupError) as e:
        return fail(p.prog, e)
    lo, hi = summary["ci95"]
    print(
        f"{args.suite}: {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.1%} "
        f"(95% CI {lo:.1%}-{hi:.1%})"
    )
    print(json.dumps({k: f"{v['success_rate']:.0%}" for k, v in summary["tasks"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
