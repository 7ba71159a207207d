"""Evaluate a policy on LIBERO with flowvla's rollout runner.

    # a baseline, two init states of task 0, with videos of every episode:
    python examples/libero_eval.py --suite libero_object --tasks 0 --init-states 2 --video all --out runs/demo

    # your own policy: any importable factory returning an object with predict_action(batch, **kw)
    python examples/libero_eval.py --suite libero_spatial --policy mypkg.policies:load_my_policy \\
        --replan-every 8 --workers 2 --out runs/mine

The batch the policy receives and the actions it must return are documented in
``flowvla.envs.rollout``; results go to ``<out>/episodes.jsonl`` and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json

from flowvla.envs.rollout import ConstantPolicy, RandomPolicy, RolloutConfig, evaluate


def load_policy(spec: str):
    if spec == "zero":
        return ConstantPolicy(horizon=8)
    if spec == "random":
        return RandomPolicy(horizon=8)
    module, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--policy {spec!r}: use 'zero', 'random' or 'package.module:factory'")
    return getattr(importlib.import_module(module), attr)()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", default="libero_object")
    p.add_argument("--tasks", type=int, nargs="*", default=None, help="task indices (default: all)")
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
    args = p.parse_args()
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
    )
    summary = evaluate(load_policy(args.policy), cfg)
    lo, hi = summary["ci95"]
    print(
        f"{args.suite}: {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.1%} "
        f"(95% CI {lo:.1%}-{hi:.1%})"
    )
    print(json.dumps({k: f"{v['success_rate']:.0%}" for k, v in summary["tasks"].items()}, indent=1))


if __name__ == "__main__":
    main()
