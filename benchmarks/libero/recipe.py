"""The LIBERO recipe's success targets, measured: the main job end to end, with its time per phase.

    python benchmarks/libero/recipe.py                       # the default recipe (the one-command job)
    python benchmarks/libero/recipe.py --preset libero_object
    python benchmarks/libero/recipe.py --preset default --demos-per-task 10 --tag demos10

Runs [`run_recipe`][flowvla.recipes.libero.run_recipe] into ``benchmarks/results/libero_recipe_<tag>/``
(resumable: run the same command again after an interruption), then prints one table: success per
task with Wilson 95% intervals, the target, and the wall time of every phase (data generation is
reported apart: it is a one-time cost that later runs take from the cache). Writes
``benchmarks/results/libero_recipe_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from flowvla.io import write_json_atomic
from flowvla.recipes.libero import PRESETS, parse_settings, preset, run_recipe

TARGETS = {"default": 0.90, "libero_object": 0.95}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--tag", help="results name (default: the preset)")
    ap.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    ap.add_argument("--demos-per-task", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--init-states", type=int)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other recipe settings")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    a = ap.parse_args(argv)
    given = {"demos_per_task": a.demos_per_task, "steps": a.steps, "init_states": a.init_states}
    cfg = preset(a.preset, **{k: v for k, v in given.items() if v is not None}, **parse_settings(a.set))
    tag = a.tag or a.preset
    out = Path(a.results) / f"libero_recipe_{tag}"
    run = run_recipe(cfg, out, cache_dir=a.cache, progress=sys.stderr.isatty())
    phases = run["phases"]
    o = run["success"]["overall"]
    target = TARGETS.get(a.preset)
    rows = [
        ("success", f"{o['successes']}/{o['episodes']} = {100 * o['success_rate']:.1f}%"),
        ("95% CI", f"{100 * o['ci95'][0]:.1f}-{100 * o['ci95'][1]:.1f}%"),
        ("target", f">= {100 * target:.0f}%" if target else "-"),
    ]
    rows += [(f"{t['task']}", f"{t['successes']}/{t['episodes']}") for t in run["success"]["tasks"]]
    total = sum(p["seconds"] for p in phases.values())
    rows += [(f"time: {k}", f"{p['seconds'] / 60:.1f} min ({p.get('note', '')})") for k, p in phases.items()]
    rows += [("time: total", f"{total / 60:.1f} min on {os.cpu_count()} CPUs")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    result = {
        "preset": a.preset,
        "tag": tag,
        "recipe": run["recipe"],
        "success": run["success"],
        "target": target,
        "phases_minutes": {k: p["seconds"] / 60 for k, p in phases.items()},
        "total_minutes": total / 60,
        "sensitivity": {
            k: run["sensitivity"][k] for k in ("baseline_l2", "image_l2", "synonym_l2", "opposite_l2")
        },
        "cpus": os.cpu_count(),
    }
    write_json_atomic(Path(a.results) / f"libero_recipe_{tag}.json", result)
    print(json.dumps({"results": str(out)}))
    return result


if __name__ == "__main__":
    main()
