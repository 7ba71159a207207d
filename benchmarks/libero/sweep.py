"""Recipe sweeps in closed loop: the default recipe trained and evaluated with one thing changed.

    python benchmarks/libero/sweep.py --study minutes --baseline --cache DIR   # 28 (ref), 7, 14, 56 min
    python benchmarks/libero/sweep.py --study demos                            # 50 (ref), 10, 25 per task
    python benchmarks/libero/sweep.py --study factors --init-states 25         # one recipe factor each
    python benchmarks/libero/sweep.py --study factors --variants reference,no_wrist
    python benchmarks/libero/sweep.py --study fusion --cache DIR               # the design's claims
    python benchmarks/libero/sweep.py --study sampling                         # one policy, no retraining
    python benchmarks/libero/sweep.py --study fusion --suite libero_spatial --tasks 0,1

A study is data: an entry of ``STUDIES`` naming the settings every variant shares and the variants,
each a few dotted recipe settings (the first is the reference). Every variant runs the whole main job
through [`run_sweep`][flowvla.recipes.sweep.run_sweep], trained and evaluated on the same official
init states with the same seeds; variants that change only the evaluation reuse the first checkpoint
trained the same way. The studies:

- ``minutes`` / ``demos``: success against the training budget (the step count scales with the
  minutes, so every run finishes its learning-rate schedule) and against demonstrations per task;
  with ``--baseline`` beside the plain regression policy of ``baseline.py`` on the same
  demonstrations, budget and evaluation (the floor to beat), with a PNG of the curve;
- ``factors``: one recipe factor at a time (image size, vision encoder, random-shift augmentation,
  the wrist camera, the state, chunk length, re-plan interval, temporal ensembling, EMA, batch size,
  learning rate, solver steps);
- ``fusion``: no geometry branch, global pooling, token-aligned gated, region cross-attention (all
  read metric depth rendered with the demonstrations);
- ``routing`` (on a 4-layer language model, so there are layers to choose from): fixed last layer,
  fixed middle layer, learned scalar mix, top-k;
- ``losses``: the P1 terms off, smoothness + jerk, synonym consistency + opposite contrast, synonym
  consistency alone, FiLM state conditioning off (the state as a token only);
- ``sampling``: Euler@10, midpoint@5, AB2@4, DPM++2M@4 on one trained policy.

Run folders go to ``benchmarks/results/<folder>[_<suite>]/<variant>/``, ``<folder>`` the study's
(``libero_study_<study>`` or ``libero_ablations_<study>``, the folders of the two scripts this one
replaces, so their runs resume); the table is printed and written to ``study.json`` there.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from flowvla.cli import index_list
from flowvla.recipes.settings import PRESETS, flat_settings, parse_settings, preset

STEPS_PER_MINUTE = 2000 / 28  # the default recipe's pace on 2 CPU cores (2000 steps in 28 min)

#: Settings of the design-claim studies (issue 15's ablations): fewer init states, and
#: held-out demonstrations for the held-out loss column.
_CLAIMS = {"eval.init_states": 25, "data.val_demos_per_task": 5}

#: study -> ``base``: settings every variant shares (over the preset); ``variants``: name -> settings
#: (the first is the reference); ``folder``: its results folder; ``curve``: for a curve study, the
#: setting on its x axis and the axis label.
STUDIES: dict[str, dict[str, Any]] = {
    "minutes": {
        "folder": "libero_study_minutes",
        "base": {"eval.init_states": 50},
        "variants": {
            f"min{m}": {"train.max_minutes": float(m), "train.steps": round(m * STEPS_PER_MINUTE)}
            for m in (28, 7, 14, 56)
        },
        "curve": ("train.max_minutes", "training minutes (2 CPU cores)"),
    },
    "demos": {
        "folder": "libero_study_demos",
        "base": {"eval.init_states": 50},
        "variants": {f"demos{n}": {"data.demos_per_task": n} for n in (50, 10, 25)},
        "curve": ("data.demos_per_task", "demonstrations per task"),
    },
    "factors": {
        "folder": "libero_study_factors",
        "base": {"eval.init_states": 50},
        "variants": {
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
    },
    "fusion": {
        "folder": "libero_ablations_fusion",
        "base": _CLAIMS,
        "variants": {
            "none": {},
            "global": {"policy.fusion.kind": "global"},
            "gated": {"policy.fusion.kind": "gated"},
            "region": {"policy.fusion.kind": "region"},
        },
    },
    "routing": {
        "folder": "libero_ablations_routing",
        "base": {**_CLAIMS, "policy.lm_layers": 4},
        "variants": {
            "fixed_last": {"policy.router.kind": "fixed", "policy.router.layers": "last"},
            "fixed_middle": {"policy.router.kind": "fixed", "policy.router.layers": 2},
            "scalar_mix": {"policy.router.kind": "scalar_mix", "policy.router.layers": "all"},
            "topk": {"policy.router.kind": "topk", "policy.router.layers": "all"},
        },
    },
    "losses": {
        "folder": "libero_ablations_losses",
        "base": _CLAIMS,
        "variants": {
            "off": {},
            "smooth_jerk": {"policy.loss.smoothness_weight": 0.1, "policy.loss.jerk_weight": 0.1},
            "synonym_contrast": {"policy.loss.synonym_weight": 0.1, "policy.loss.contrast_weight": 0.1},
            # Synonym consistency alone: no term pushes changed wordings apart.
            "synonym": {"policy.loss.synonym_weight": 0.1},
            "film_off": {"policy.head.state_conditioning": "token"},
        },
    },
    "sampling": {
        "folder": "libero_ablations_sampling",
        "base": _CLAIMS,
        "variants": {
            "euler@10": {},
            "midpoint@5": {"eval.solver": "midpoint", "eval.solver_steps": 5},
            "ab2@4": {"eval.solver": "ab2", "eval.solver_steps": 4},
            "dpm++2m@4": {"eval.solver": "dpm++2m", "eval.solver_steps": 4},
        },
    },
}


def _sibling(name: str) -> Any:
    """The benchmark script ``name`` beside this one, loaded by path (``benchmarks`` is no package)."""
    spec = importlib.util.spec_from_file_location(
        f"bench_libero_{name}", Path(__file__).with_name(f"{name}.py")
    )
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
    return _sibling("baseline").main(
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


def _curve(study: dict[str, Any], base: Any, rows: list[dict[str, Any]], out: Path, baseline: bool):
    """The curve points of a curve study (with the baseline's beside them when asked), its PNG and
    one printed line per point."""
    from flowvla.recipes.sweep import variant_configs

    x_path, label = study["curve"]
    configs = variant_configs(base, {r["variant"]: study["variants"][r["variant"]] for r in rows})
    curve = []
    for r in rows:
        cfg = configs[r["variant"]]
        point: dict[str, Any] = {"variant": r["variant"], "x": flat_settings(cfg)[x_path], "recipe": r}
        if baseline:
            run = json.loads((out / r["variant"] / "run.json").read_text())
            b_out = out / f"baseline_{r['variant']}"
            b = baseline_row(cfg, run["phases"]["data"]["files"], b_out, cfg.train.max_minutes or 28.0)
            point["baseline"] = {k: b[k] for k in ("success_rate", "ci95", "successes", "episodes")}
            point["baseline"]["outcomes"] = baseline_outcomes(b_out)
        curve.append(point)
    curve_png(curve, label, out / "study.png")
    for p in curve:
        b = p.get("baseline")
        extra = f"   baseline {b['successes']}/{b['episodes']} {b['outcomes']}" if b else ""
        recipe = p["recipe"]
        print(f"{x_path.split('.')[-1]}={p['x']:g}: recipe {recipe['successes']}/{recipe['episodes']}{extra}")
    return curve


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from flowvla.io import write_json_atomic
    from flowvla.recipes.sweep import format_sweep, run_sweep, select_variants

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", required=True, choices=sorted(STUDIES))
    ap.add_argument("--variants", help="comma-separated subset of the study's variants (default: all)")
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--suite", help="LIBERO suite (default: the preset's)")
    ap.add_argument("--tasks", type=index_list, help="task indices (default: the preset's)")
    ap.add_argument("--init-states", type=int, help="official init states per task (default: the study's)")
    ap.add_argument("--val-demos", type=int, help="held-out demonstrations per task (default: the study's)")
    ap.add_argument(
        "--baseline",
        action="store_true",
        help="minutes / demos: also train and evaluate the regression baseline",
    )
    ap.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other recipe settings")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    a = ap.parse_args(argv)
    study = STUDIES[a.study]
    if a.baseline and "curve" not in study:
        curves = sorted(k for k, s in STUDIES.items() if "curve" in s)
        ap.error(f"--baseline: only the curve studies take it ({curves}), not {a.study!r}")
    try:
        variants = select_variants(study["variants"], a.variants)
    except ValueError as e:
        ap.error(f"--variants: {e}")
    given = {
        "data.suite": a.suite,
        "data.tasks": a.tasks,
        "eval.init_states": a.init_states,
        "data.val_demos_per_task": a.val_demos,
    }
    settings = {**study["base"], **{k: v for k, v in given.items() if v is not None}, **parse_settings(a.set)}
    base = preset(a.preset, **settings)
    suffix = "" if base.data.suite == "libero_object" else f"_{base.data.suite}"
    out = Path(a.results) / f"{study['folder']}{suffix}"
    rows = run_sweep(base, variants, out, cache_dir=a.cache, progress=sys.stderr.isatty())
    print(format_sweep(rows))
    result: dict[str, Any] = {"study": a.study, "base": base.to_dict(), "rows": rows}
    if "curve" in study:
        result["curve"] = _curve(study, base, rows, out, a.baseline)
    write_json_atomic(out / "study.json", result)
    return result


if __name__ == "__main__":
    main()
