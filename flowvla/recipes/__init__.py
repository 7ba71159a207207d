"""End-to-end jobs over the library: the LIBERO recipe (presets, dataset and policy, the phases of the
main job), scripted-demonstration generation, the train/eval parity check and the run report.

Modules, top down: [`flowvla.recipes.libero`][flowvla.recipes.libero] (``run_recipe`` and the names a
recipe user needs), [`flowvla.recipes.sweep`][flowvla.recipes.sweep] (variants side by side),
[`flowvla.recipes.job`][flowvla.recipes.job] (the phases),
[`flowvla.recipes.train`][flowvla.recipes.train], [`flowvla.recipes.parity`][flowvla.recipes.parity],
[`flowvla.recipes.report`][flowvla.recipes.report] and
[`flowvla.recipes.generate`][flowvla.recipes.generate] (``flowvla-generate``), and at the bottom
[`flowvla.recipes.settings`][flowvla.recipes.settings] (presets, ``KEY=VALUE`` settings) and
[`flowvla.recipes.config`][flowvla.recipes.config] (the nested ``RecipeConfig``). They need LIBERO only
when a job touches the simulator.

Its public names are re-exported here, each imported on first use (the modules pull optional
dependencies), so ``import flowvla.recipes`` itself is cheap.
"""

from __future__ import annotations

from flowvla._lazy import lazy_exports

__all__ = [
    "PRESETS",
    "DataConfig",
    "EvalConfig",
    "GenerateConfig",
    "ModelConfig",
    "RecipeConfig",
    "TrainingConfig",
    "check_parity",
    "generate",
    "load_recipe",
    "load_run_policy",
    "parse_settings",
    "preset",
    "run_recipe",
    "run_sweep",
    "with_settings",
]

_LAZY = {
    "DataConfig": "flowvla.recipes.config",
    "EvalConfig": "flowvla.recipes.config",
    "GenerateConfig": "flowvla.recipes.generate_config",
    "ModelConfig": "flowvla.recipes.config",
    "PRESETS": "flowvla.recipes.settings",
    "RecipeConfig": "flowvla.recipes.config",
    "TrainingConfig": "flowvla.recipes.config",
    "check_parity": "flowvla.recipes.parity",
    "generate": "flowvla.recipes.generate",
    "load_recipe": "flowvla.recipes.settings",
    "load_run_policy": "flowvla.recipes.settings",
    "parse_settings": "flowvla.recipes.settings",
    "preset": "flowvla.recipes.settings",
    "run_recipe": "flowvla.recipes.libero",
    "run_sweep": "flowvla.recipes.sweep",
    "with_settings": "flowvla.recipes.settings",
}


__getattr__ = lazy_exports(__name__, _LAZY)
