"""The recipe study: what the default recipe's success depends on, beside the regression baseline.

    python benchmarks/libero_study.py --study minutes --cache /work/cache/demos   # 7/14/28/56 min
    python benchmarks/libero_study.py --study demos                              # 10/25/50 per task
    python benchmarks/libero_study.py --study factors --init-states 25           # one factor each
    python benchmarks/libero_study.py --study factors --variants reference,no_wrist

``minutes`` and ``demos`` train the recipe at each budget (the step count scales with the minutes, so
every run finishes its learning-rate schedule) and, with ``--baseline``, the plain regression policy
of ``benchmarks/libero_baseline.py`` on the same demonstrations with the same wall-clock budget and
the same evaluation: the floor to beat. ``factors`` changes one thing of the recipe at a time: image
size, vision encoder (ViT; ResNet-18 from timm when installed), random-shift augmentation, the wrist
camera, the proprioceptive state, chunk length, re-plan interval, temporal ensembling, EMA, batch size
and learning rate, solver steps; evaluation-only factors reuse the reference's checkpoint.

Every run is a folder under ``benchmarks/results/libero_study_<study>/`` and resumes; the table is
printed and written to ``study.json`` with a PNG of the curve (``minutes`` / ``demos``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from flowvla.cli import index_list
from flowvla.recipes.settings import flat_settings, parse_settings, preset

STEPS_PER_MINUTE = 2000 / 28  # the default recipe's pace on 2 CPU cores (2000 steps in 28 min)

#: study -> {variant: overrides of the default recipe}; the first variant is the reference.
STUDIES: dict[str, dict[str, dict[str, Any]]] = {
    "minutes": {
        f"min{m}": {"train.max_minutes": float(m), "train.steps": round(m * STEPS_PER_MINUTE)}
        for m in (28, 7, 14, 56)
    },
    "demos": {f"demos{n}": {"data.demos_per_task": n} for n in (50, 10, 25)},
    "factors": {
        "reference": {},
        "image64": {"data.image_size": 64},
        "vit": {"policy.vision": "vit"},
        "resnet18": {"policy.vision": "timm:resnet18"},
        "no_shift": {"train.shift": 0},
        "no_wrist": {"data.cameras": ["agentview"]},
        "no_state": {"policy.use_state": False},
        "horizon8": {"policy.horizon": 8},
        "horizon32": {"policy.horizon": 32},
        "replan4": {"eval.replan_every": 4},
        "replan16": {"eval.replan_every": 16},
        "ensemble": {"eval.replan_every": 1, "eval.temporal_ensemble": 0.1},
        "no_ema": {"eval.weights": "raw"},
        "batch16": {"train.batch_size": 16},
        "lr5e-4": {"train.lr": 5e-4},
        "euler@2": {"eval.solver_steps": 2},
    },
}


def _sibling(name: str) -> Any:
    """The benchmark script ``name`` beside this one, loaded by path (``benchmarks`` is no package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def baseline_row(cfg: Any, files: list[str], out: Path, minutes: float) -> dict[str, Any]:
    """The regression baseline on the recipe run's own demonstration ``files`` (its tasks only), with
    its demos per task, budget and evaluation (read back from ``out/baseline.json`` when an earlier run
    finished it)."""
    done = out / "baseline.json"
    if done.is_file():
        return json.loads(done.read_text())
    return _sibling("libero_baseline").main(
        [
            "--data",
            *files,
            "--suite",
            cfg.data.suite,
            "--tasks",
            ",".join(map(str, cfg.data.tasks)),
            "--demos-per-task",
            str(cfg.data.demos_per_task),
            "--minutes",
            str(minutes),
            "--init-states",
            str(cfg.eval.init_states),
            "--threads",
            str(cfg.train.threads),
            "--out",
            str(out),
        ]
    )


def baseline_outcomes(out: Path) -> dict[str, int] | None:
    """How the baseline's episodes ended (its evaluation summary's ``outcomes``: the hover failure
    the flow head should remove), or None when the summary is missing."""
    path = out / "eval" / "summary.json"
    return json.loads(path.read_text()).get("outcomes") if path.is_file() else None


def curve_png(rows: list[dict[str, Any]], x_label: str, path: Path) -> None:
    """Success (with Wilson intervals) against each row's ``x`` for the recipe and, where run, the
    baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for who, key in (("flowvla recipe", "recipe"), ("regression baseline", "baseline")):
        pts = sorted((r["x"], r[key]) for r in rows if r.get(key))
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ys = [100 * p["success_rate"] for _, p in pts]
        lo = [100 * (p["success_rate"] - p["ci95"][0]) for _, p in pts]
        hi = [100 * (p["ci95"][1] - p["success_rate"]) for _, p in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=who)
    ax.set_xlabel(x_label)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from flowvla.io import write_json_atomic
    from flowvla.recipes.sweep import format_sweep, run_sweep, select_variants, variant_configs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", required=True, choices=sorted(STUDIES))
    ap.add_argument("--variants", help="comma-separated subset of the study's variants (default: all)")
    ap.add_argument("--tasks", type=index_list, help="task indices (default: the default recipe's)")
    ap.add_argument("--init-states", type=int, default=50, help="official init states per task")
    ap.add_argument("--baseline", action="store_true", help="also train and evaluate the regression baseline")
    ap.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other recipe settings")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    variants = STUDIES[a.study]
    try:
        variants = select_variants(variants, a.variants)
    except ValueError as e:
        ap.error(f"--variants: {e}")
    extra = {"tasks": a.tasks} if a.tasks else {}
    base = preset("default", init_states=a.init_states, **extra, **parse_settings(a.set))
    out = Path(a.results) / f"libero_study_{a.study}"
    rows = run_sweep(base, variants, out, cache_dir=a.cache, progress=sys.stderr.isatty())
    print(format_sweep(rows))
    result: dict[str, Any] = {"study": a.study, "base": base.to_dict(), "rows": rows}
    if a.study in ("minutes", "demos"):
        configs = variant_configs(base, variants)
        x_path = "train.max_minutes" if a.study == "minutes" else "data.demos_per_task"
        x_key = x_path.split(".")[-1]
        curve = []
        for r in rows:
            cfg = configs[r["variant"]]
            point: dict[str, Any] = {"variant": r["variant"], "x": flat_settings(cfg)[x_path], "recipe": r}
            if a.baseline:
                run = json.loads((out / r["variant"] / "run.json").read_text())
                files = run["phases"]["data"]["files"]
                b_out = out / f"baseline_{r['variant']}"
                b = baseline_row(cfg, files, b_out, cfg.train.max_minutes or 28.0)
                point["baseline"] = {k: b[k] for k in ("success_rate", "ci95", "successes", "episodes")}
                point["baseline"]["outcomes"] = baseline_outcomes(b_out)
            curve.append(point)
        result["curve"] = curve
        label = "training minutes (2 CPU cores)" if a.study == "minutes" else "demonstrations per task"
        curve_png(curve, label, out / "study.png")
        for p in curve:
            b = p.get("baseline")
            extra_txt = f"   baseline {b['successes']}/{b['episodes']} {b['outcomes']}" if b else ""
            print(
                f"{x_key}={p['x']:g}: recipe {p['recipe']['successes']}/{p['recipe']['episodes']}{extra_txt}"
            )
    write_json_atomic(out / "study.json", result)
    return result


if __name__ == "__main__":
    main()
