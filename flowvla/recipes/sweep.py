"""Recipe variants trained and evaluated side by side: what an ablation or a recipe study runs.

A sweep is a base recipe and named variants, each a few settings changed. Every variant runs the
whole main job ([`run_job`][flowvla.recipes.job.run_job]) into ``<out>/<name>/``, so each is a
complete, resumable run folder; a sweep stopped anywhere continues where it stopped when run again.
Variants differ only where they say, so every one is evaluated on the same official init states with
the same seeds and the rows compare. A variant that changes only how a policy is evaluated
(its ``eval`` part: solver, steps, re-planning, weights ...)
reuses the checkpoint of the first variant trained the same way instead of training again.

Per variant, [`sweep_row`][flowvla.recipes.sweep.sweep_row] reports success with its Wilson interval
and per task, the change in points against the first (reference) variant, training time and steps,
the flow loss at the end of training and on held-out demonstrations (``val_demos_per_task``), the
smoothness of the executed arm actions (mean squared 2nd / 3rd differences), the episode length, how
failures ended and the trained policy's sensitivity distances.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowvla.diagnostics import SENSITIVITY_DISTANCES
from flowvla.envs.rollout import smoothness_columns
from flowvla.io import write_json_atomic
from flowvla.recipes.config import RecipeConfig
from flowvla.recipes.settings import training_settings, with_settings
from flowvla.recipes.train import training_seconds

__all__ = [
    "final_loss",
    "format_sweep",
    "run_sweep",
    "select_variants",
    "sweep_row",
    "training_seconds",
    "variant_configs",
]

SWEEP_FILE = "sweep.json"


def select_variants(
    variants: Mapping[str, Mapping[str, Any]], names: str | None
) -> dict[str, Mapping[str, Any]]:
    """The variants named in ``names`` (comma-separated, in that order), or all of them for None / ""
    (a command line's ``--variants``); an unknown name is a ``ValueError`` listing the known ones."""
    if not names:
        return dict(variants)
    wanted = [v.strip() for v in names.split(",") if v.strip()]
    unknown = sorted(set(wanted) - set(variants))
    if unknown:
        raise ValueError(f"{unknown} are not variants here (choose from {sorted(variants)})")
    return {k: variants[k] for k in wanted}


def variant_configs(base: RecipeConfig, variants: Mapping[str, Mapping[str, Any]]) -> dict[str, RecipeConfig]:
    """Each variant's full recipe: ``base`` with its overrides, checked before anything runs (an
    unknown setting or a bad value names the variant)."""
    if not variants:
        raise ValueError("variants: give at least one")
    out = {}
    for name, overrides in variants.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"variants: {name!r} is not usable as a folder name")
        try:
            out[name] = with_settings(base, overrides)
        except (TypeError, ValueError) as e:
            raise ValueError(f"variants[{name!r}]: {e}") from None
    return out


def run_sweep(
    base: RecipeConfig,
    variants: Mapping[str, Mapping[str, Any]],
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every variant (resuming finished and interrupted ones) and return one row per variant.

    Args:
        base: the recipe every variant starts from.
        variants: name -> recipe overrides; the first is the reference of the ``delta_points`` column.
        out_dir: each variant's run folder is ``<out_dir>/<name>/``; the rows go to
            ``<out_dir>/sweep.json`` after every variant.
        cache_dir: the demonstration cache, shared by all variants (see
            [`ensure_demos`][flowvla.recipes.job.ensure_demos]).
        progress: progress bars.
    """
    from flowvla.recipes.job import run_job

    configs = variant_configs(base, variants)
    out = Path(out_dir)
    trained: dict[str, Path] = {}  # training settings -> the checkpoint they produced
    rows: list[dict[str, Any]] = []
    for name, cfg in configs.items():
        key = json.dumps(training_settings(cfg), sort_keys=True)
        reuse = trained.get(key)
        run = run_job(cfg, out / name, cache_dir=cache_dir, progress=progress, trained=reuse)
        trained.setdefault(key, out / name / "checkpoint")
        log = (reuse.parent if reuse is not None else out / name) / "log.jsonl"
        rows.append(sweep_row(name, dict(variants[name]), run, log))
        _add_deltas(rows)
        write_json_atomic(out / SWEEP_FILE, {"base": base.to_dict(), "rows": rows})
    return rows


def _add_deltas(rows: list[dict[str, Any]]) -> None:
    ref = rows[0]["success_rate"]
    for r in rows:
        r["delta_points"] = 100 * (r["success_rate"] - ref)


def final_loss(log_path: str | Path, key: str = "action", fraction: float = 0.1) -> float | None:
    """The mean training ``key`` loss over the last ``fraction`` of the logged steps (one step's loss
    is too noisy to compare runs by); None without a log."""
    path = Path(log_path)
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [r[key] for r in rows if "event" not in r and isinstance(r.get(key), (int, float))]
    if not values:
        return None
    tail = values[-max(1, math.ceil(fraction * len(values))) :]
    return float(sum(tail) / len(tail))


def sweep_row(
    name: str, overrides: Mapping[str, Any], run: Mapping[str, Any], log_path: str | Path
) -> dict[str, Any]:
    """One variant's numbers from its finished run (the ``run.json`` of
    [`run_job`][flowvla.recipes.job.run_job]) and its training log."""
    success = run["success"]["overall"]
    train = run.get("train", {})
    sens = run.get("sensitivity", {})
    val = train.get("ema_val_losses") or train.get("val_losses") or {}
    eval_summary = run.get("eval_summary", {})
    return {
        "variant": name,
        "overrides": json.loads(json.dumps(dict(overrides), default=str)),
        "successes": success["successes"],
        "episodes": success["episodes"],
        "success_rate": success["success_rate"],
        "ci95": success["ci95"],
        "tasks": {t["task"]: [t["successes"], t["episodes"]] for t in run["success"]["tasks"]},
        "outcomes": success.get("outcomes", {}),
        "mean_steps": success.get("mean_steps"),
        **smoothness_columns(eval_summary),
        "train_steps": train.get("step"),
        "train_minutes": 0.0 if "reused_from" in train else _train_seconds(train, log_path) / 60,
        "stopped": train.get("stopped"),
        "reused_from": train.get("reused_from"),
        "train_loss": final_loss(log_path),
        "heldout_loss": val.get("action"),
        "sensitivity": {k: sens[k] for k in SENSITIVITY_DISTANCES if k in sens},
        "sensitivity_checks": sens.get("checks", {}),
        "layer_weights": sens.get("layer_usage", {}).get("per_layer"),
    }


def _train_seconds(train: Mapping[str, Any], log_path: str | Path) -> float:
    from_log = training_seconds(log_path)
    return from_log if from_log is not None else float(train.get("seconds", 0.0))


def format_sweep(rows: list[dict[str, Any]]) -> str:
    """The rows of [`run_sweep`][flowvla.recipes.sweep.run_sweep] as a text table."""

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    width = max(12, *(len(r["variant"]) + 2 for r in rows))
    head = (
        f"{'variant':<{width}}{'success':>10}{'95% CI':>10}{'Δ pts':>7}{'train min':>10}{'loss':>8}"
        f"{'held-out':>9}{'steps':>7}{'Δ²a':>9}{'Δ³a':>9}{'img L2':>8}{'syn L2':>8}{'opp L2':>8}  failures"
    )
    lines = [head]
    for r in rows:
        s = r["sensitivity"]
        fails = {k: v for k, v in r["outcomes"].items() if k != "success"}
        ci = f"{100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}%"
        lines.append(
            f"{r['variant']:<{width}}{r['successes']:>6}/{r['episodes']:<3}{ci:>10}{r['delta_points']:>+7.0f}"
            f"{'reused' if r['reused_from'] else num(r['train_minutes'], '.1f'):>10}"
            f"{num(r['train_loss'], '.4f'):>8}{num(r['heldout_loss'], '.4f'):>9}"
            f"{num(r['mean_steps'], '.0f'):>7}"
            f"{num(r['second_diff'], '.2e'):>9}{num(r['third_diff'], '.2e'):>9}"
            f"{num(s.get('image_l2'), '.3f'):>8}{num(s.get('synonym_l2'), '.3f'):>8}"
            f"{num(s.get('opposite_l2'), '.3f'):>8}  {fails}"
        )
    return "\n".join(lines)
