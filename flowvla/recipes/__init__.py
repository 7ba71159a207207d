"""End-to-end jobs over the library: the LIBERO recipe (presets, dataset and policy, the phases of the
main job), scripted-demonstration generation, the train/eval parity check and the run report.

Modules, top down: [`flowvla.recipes.libero`][flowvla.recipes.libero] (``RecipeConfig``, ``PRESETS``,
``run_recipe``), [`flowvla.recipes.job`][flowvla.recipes.job] (the phases),
[`flowvla.recipes.train`][flowvla.recipes.train], [`flowvla.recipes.parity`][flowvla.recipes.parity],
[`flowvla.recipes.report`][flowvla.recipes.report] and
[`flowvla.recipes.generate`][flowvla.recipes.generate] (``flowvla-generate``). They need LIBERO only
when a job touches the simulator.
"""
