"""One policy evaluated several ways on the same episodes, side by side.

An ablation that changes only how a trained policy is run (the ODE solver and its steps, a paraphrased
instruction, shifted objects, a jittered camera) must evaluate every variant on the same official
init states with the same seeds, so the differences between rows come from the variant alone.
[`compare_variants`][flowvla.envs.variants.compare_variants] does that with the library's rollout
runner and reports, per variant: success with its Wilson interval, the change in points against the
first (reference) variant, the latency of one chunk inside the control loop, episode length,
smoothness of the executed arm actions, and how failures ended.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.envs.rollout import Policy, RolloutConfig, evaluate, load_records, smoothness_columns

__all__ = ["compare_variants", "format_table"]


def compare_variants(
    policy: Policy, base: RolloutConfig, variants: Mapping[str, Mapping[str, Any]], out_dir: str | Path
) -> list[dict[str, Any]]:
    """Evaluate ``policy`` once per variant: ``base`` with the variant's ``RolloutConfig`` overrides.

    Args:
        policy: anything with ``predict_action`` (see [`Policy`][flowvla.envs.rollout.Policy]).
        base: the shared settings (suite, tasks, init states, seed, ...); its ``out_dir`` is ignored.
        variants: name -> overrides of ``base`` (e.g. ``{"predict_kwargs": {...}}``); the first is the
            reference. A variant may not change the episodes compared (suite, tasks, init states,
            seed). The key ``"policy"`` runs that variant with another policy (e.g. a distilled
            student of ``policy``; give its ``policy_id`` too, so its records are not mixed up).
        out_dir: each variant's records go to ``<out_dir>/<name>/`` (a re-run resumes them).

    Returns:
        One row per variant, in order (JSON-ready).
    """
    if not variants:
        raise ValueError("variants: give at least one")
    fixed = {"suite", "tasks", "init_states", "seed", "out_dir"}
    rows = []
    for name, overrides in variants.items():
        changed = fixed & set(overrides)
        if changed:
            raise ValueError(f"variants[{name!r}]: may not change {sorted(changed)} (the episodes compared)")
        if not name or "/" in name:
            raise ValueError(f"variants: {name!r} is not usable as a folder name")
        settings = {k: v for k, v in overrides.items() if k != "policy"}
        cfg = dataclasses.replace(base, out_dir=str(Path(out_dir) / name), **settings)
        summary = evaluate(overrides.get("policy", policy), cfg)
        records = load_records(Path(cfg.out_dir) / "episodes.jsonl")
        latency = [r["time_policy"] / r["replans"] for r in records if r["replans"]]
        rows.append(
            {
                "variant": name,
                "nfe": (records[0].get("debug") or {}).get("nfe"),  # what the policy reports spending
                "successes": summary["successes"],
                "episodes": summary["episodes"],
                "success_rate": summary["success_rate"],
                "ci95": summary["ci95"],
                "latency_ms_per_chunk": 1000 * float(np.median(latency)) if latency else float("nan"),
                "mean_steps": summary["mean_steps"],
                **smoothness_columns(summary),
                "outcomes": summary["outcomes"],
                "tasks": {k: [v["successes"], v["episodes"]] for k, v in summary["tasks"].items()},
                "overrides": json.loads(json.dumps(settings, default=_plain)),
            }
        )
    ref = rows[0]
    for r in rows:
        r["delta_points"] = 100 * (r["success_rate"] - ref["success_rate"])
        r["latency_ratio"] = r["latency_ms_per_chunk"] / ref["latency_ms_per_chunk"]
    return rows


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else str(x)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows of [`compare_variants`][flowvla.envs.variants.compare_variants] as a text table."""
    width = max(12, *(len(r["variant"]) + 2 for r in rows))
    lines = [
        f"{'variant':<{width}}{'NFE':>4}{'success':>10}{'95% CI':>10}{'Δ pts':>7}{'ms/chunk':>10}{'x ref':>7}"
        f"{'steps':>7}{'Δ²a':>9}{'Δ³a':>9}  failures"
    ]
    for r in rows:
        fails = {k: v for k, v in r["outcomes"].items() if k != "success"}
        ci = f"{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}%"
        lines.append(
            f"{r['variant']:<{width}}{r['nfe'] if r['nfe'] is not None else '-':>4}"
            f"{r['successes']:>6}/{r['episodes']:<3}{ci:>10}{r['delta_points']:>+7.0f}"
            f"{r['latency_ms_per_chunk']:>10.1f}{r['latency_ratio']:>7.2f}{r['mean_steps']:>7.0f}"
            f"{r['second_diff'] or 0:>9.2e}{r['third_diff'] or 0:>9.2e}  {fails}"
        )
    return "\n".join(lines)
