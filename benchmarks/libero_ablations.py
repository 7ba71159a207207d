"""The design's claims in closed loop: the recipe's policy trained with one factor changed at a time.

    python benchmarks/libero_ablations.py --factor fusion  --cache /work/cache/demos
    python benchmarks/libero_ablations.py --factor routing --init-states 25
    python benchmarks/libero_ablations.py --factor losses
    python benchmarks/libero_ablations.py --factor sampling        # one trained policy, no retraining
    python benchmarks/libero_ablations.py --factor fusion --suite libero_spatial --tasks 0,1

Each factor is a sweep ([`run_sweep`][flowvla.recipes.sweep.run_sweep]) of the default recipe (or the
``--preset``): every variant trains and is evaluated on the same official init states with the same
seeds. Per variant: success with its Wilson interval, the change against the first row, training time,
the flow loss at the end of training and on held-out demonstrations (``--val-demos`` per task),
smoothness of the executed arm actions (mean squared 2nd / 3rd differences), episode length, how
failures ended, and the trained policy's sensitivity distances (image / synonym / opposite / held-out
paraphrase). The factors:

- ``fusion``: no geometry branch, global pooling, token-aligned gated, region cross-attention (all read
  metric depth rendered with the demonstrations);
- ``routing`` (on a 4-layer language model, so there are layers to choose from): fixed last layer,
  fixed middle layer, learned scalar mix, top-k;
- ``losses``: the P1 terms off, smoothness + jerk, synonym consistency + opposite contrast, synonym
  consistency alone, FiLM state conditioning off (the state as a token only);
- ``sampling``: Euler@10, midpoint@5, AB2@4, DPM++2M@4 on the first variant's checkpoint (no retraining).

Run folders go to ``benchmarks/results/libero_ablations_<factor>/<variant>/`` (resumable: run the same
command again); the table is printed and written to ``.../sweep.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flowvla.cli import index_list
from flowvla.recipes.libero import PRESETS, parse_settings, preset

#: factor -> (settings every variant shares, {variant: overrides}).
FACTORS: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {
    "fusion": (
        {},
        {
            "none": {},
            "global": {"policy.fusion.kind": "global"},
            "gated": {"policy.fusion.kind": "gated"},
            "region": {"policy.fusion.kind": "region"},
        },
    ),
    "routing": (
        {"policy.lm_layers": 4},
        {
            "fixed_last": {"policy.router.kind": "fixed", "policy.router.layers": "last"},
            "fixed_middle": {"policy.router.kind": "fixed", "policy.router.layers": 2},
            "scalar_mix": {"policy.router.kind": "scalar_mix", "policy.router.layers": "all"},
            "topk": {"policy.router.kind": "topk", "policy.router.layers": "all"},
        },
    ),
    "losses": (
        {},
        {
            "off": {},
            "smooth_jerk": {"policy.loss.smoothness_weight": 0.1, "policy.loss.jerk_weight": 0.1},
            "synonym_contrast": {"policy.loss.synonym_weight": 0.1, "policy.loss.contrast_weight": 0.1},
            # Synonym consistency alone: no term pushes changed wordings apart.
            "synonym": {"policy.loss.synonym_weight": 0.1},
            "film_off": {"policy.head.state_conditioning": "token"},
        },
    ),
    "sampling": (
        {},
        {
            "euler@10": {},
            "midpoint@5": {"eval.solver": "midpoint", "eval.solver_steps": 5},
            "ab2@4": {"eval.solver": "ab2", "eval.solver_steps": 4},
            "dpm++2m@4": {"eval.solver": "dpm++2m", "eval.solver_steps": 4},
        },
    ),
}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from flowvla.io import write_json_atomic
    from flowvla.recipes.sweep import format_sweep, run_sweep, select_variants

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", required=True, choices=sorted(FACTORS))
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--suite", help="LIBERO suite (default: the preset's)")
    ap.add_argument("--tasks", type=index_list, help="task indices (default: the preset's)")
    ap.add_argument("--init-states", type=int, default=25, help="official init states per task")
    ap.add_argument("--val-demos", type=int, default=5, help="held-out demonstrations per task")
    ap.add_argument("--variants", help="comma-separated subset of the factor's variants (default: all)")
    ap.add_argument("--cache", help="demonstration cache (default: $FLOWVLA_CACHE or ~/.cache/flowvla)")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="other recipe settings")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    shared, variants = FACTORS[a.factor]
    try:
        variants = select_variants(variants, a.variants)
    except ValueError as e:
        ap.error(f"--variants: {e}")
    given = {"suite": a.suite, "tasks": a.tasks}
    base = preset(
        a.preset,
        **{k: v for k, v in given.items() if v is not None},
        init_states=a.init_states,
        val_demos_per_task=a.val_demos,
        **shared,
        **parse_settings(a.set),
    )
    suffix = "" if base.data.suite == "libero_object" else f"_{base.data.suite}"
    out = Path(a.results) / f"libero_ablations_{a.factor}{suffix}"
    rows = run_sweep(base, variants, out, cache_dir=a.cache, progress=sys.stderr.isatty())
    print(format_sweep(rows))
    write_json_atomic(out / "ablation.json", {"factor": a.factor, "base": base.to_dict(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
