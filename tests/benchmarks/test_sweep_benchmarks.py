"""benchmarks/libero_study.py and libero_ablations.py: every listed variant is a valid recipe, the
evaluation-only ones reuse a checkpoint, and a bad --variants is refused before anything runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("h5py")

from flowvla.recipes.libero import preset, training_settings
from flowvla.recipes.sweep import select_variants, variant_configs
from flowvla.solvers import available_solvers

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(base, variants):
    configs = variant_configs(base, variants)
    for cfg in configs.values():
        assert cfg.eval.solver in available_solvers()
        json.dumps(cfg.to_dict())
    return configs


def test_every_study_variant_is_a_valid_recipe():
    study = load("libero_study")
    for name, variants in study.STUDIES.items():
        configs = _check(preset("default"), variants)
        assert next(iter(configs)) in ("reference", "min28", "demos50"), name
    minutes = variant_configs(preset("default"), study.STUDIES["minutes"])
    # Steps scale with the budget, so every run finishes its schedule at the default's pace.
    assert {c.train.max_minutes: c.train.steps for c in minutes.values()} == {
        28.0: 2000,
        7.0: 500,
        14.0: 1000,
        56.0: 4000,
    }
    factors = variant_configs(preset("default"), study.STUDIES["factors"])
    reused = [
        n for n, c in factors.items() if training_settings(c) == training_settings(factors["reference"])
    ]
    assert sorted(reused) == ["ensemble", "euler@2", "no_ema", "reference", "replan16", "replan4"]


def test_every_ablation_variant_is_a_valid_recipe():
    ablations = load("libero_ablations")
    for factor, (shared, variants) in ablations.FACTORS.items():
        configs = _check(preset("default", **shared), variants)
        trained = {json.dumps(training_settings(c), sort_keys=True) for c in configs.values()}
        # sampling compares solvers on one trained policy; every other factor trains each variant.
        assert len(trained) == (1 if factor == "sampling" else len(variants)), factor
    assert all(
        c.needs_depth
        for n, c in variant_configs(preset("default"), ablations.FACTORS["fusion"][1]).items()
        if n != "none"
    )


def test_variants_are_selected_by_name_and_unknown_ones_refused():
    variants = {"a": {}, "b": {"lr": 1e-3}, "c": {}}
    assert list(select_variants(variants, "c, a")) == ["c", "a"]
    assert select_variants(variants, None) == variants and select_variants(variants, "") == variants
    with pytest.raises(ValueError, match=r"\['z'\] are not variants"):
        select_variants(variants, "a,z")
    for name, flag in (
        ("libero_study", ["--study", "factors"]),
        ("libero_ablations", ["--factor", "losses"]),
    ):
        with pytest.raises(SystemExit):
            load(name).main([*flag, "--variants", "nonsense"])


def test_the_study_curve_plots_the_recipe_beside_the_baseline(tmp_path):
    pytest.importorskip("matplotlib")
    study = load("libero_study")

    def point(x, rate):
        return {"success_rate": rate, "ci95": [rate - 0.1, min(1.0, rate + 0.1)]}

    rows = [
        {"x": 28, "recipe": point(28, 0.97), "baseline": point(28, 0.56)},
        {"x": 7, "recipe": point(7, 0.6)},  # a budget the baseline was not run at
    ]
    study.curve_png(rows, "training minutes", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
