"""benchmarks/libero/sweep.py: every study's variants are valid recipes, the evaluation-only ones
reuse a checkpoint, the studies of the two scripts it replaced keep their settings and folders, and
bad --variants / --baseline are refused before anything runs."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("h5py")

from flowvla.recipes.libero import preset, training_settings
from flowvla.recipes.sweep import select_variants, variant_configs
from flowvla.solvers import available_solvers
from tests.benchmark_loader import load_benchmark

sweep = load_benchmark("libero/sweep")


def _configs(name):
    study = sweep.STUDIES[name]
    configs = variant_configs(preset("default", **study["base"]), study["variants"])
    for cfg in configs.values():
        assert cfg.eval.solver in available_solvers()
        json.dumps(cfg.to_dict())
    return configs


def _trainings(configs):
    return {json.dumps(training_settings(c), sort_keys=True) for c in configs.values()}


def test_every_study_is_a_base_and_named_variants_of_valid_recipes():
    assert set(sweep.STUDIES) == {"minutes", "demos", "factors", "fusion", "routing", "losses", "sampling"}
    folders = [s["folder"] for s in sweep.STUDIES.values()]
    assert len(set(folders)) == len(folders)  # no two studies share run folders
    for name, study in sweep.STUDIES.items():
        assert set(study) <= {"folder", "base", "variants", "curve"}, name
        _configs(name)


def test_the_curve_studies_scale_steps_with_the_budget_and_reuse_evaluation_only_checkpoints():
    minutes = _configs("minutes")
    # Steps scale with the budget, so every run finishes its schedule at the default's pace.
    assert {c.train.max_minutes: c.train.steps for c in minutes.values()} == {
        28.0: 2000,
        7.0: 500,
        14.0: 1000,
        56.0: 4000,
    }
    assert [c.data.demos_per_task for c in _configs("demos").values()] == [50, 10, 25]
    factors = _configs("factors")
    reused = [
        n for n, c in factors.items() if training_settings(c) == training_settings(factors["reference"])
    ]
    assert sorted(reused) == ["ensemble", "euler@2", "no_ema", "reference", "replan16", "replan4"]


def test_the_design_claim_studies_train_each_variant_except_sampling():
    for name in ("fusion", "routing", "losses", "sampling"):
        configs = _configs(name)
        assert all(c.eval.init_states == 25 and c.data.val_demos_per_task == 5 for c in configs.values())
        # sampling compares solvers on one trained policy; every other study trains each variant.
        assert len(_trainings(configs)) == (1 if name == "sampling" else len(configs)), name
    assert all(c.needs_depth for n, c in _configs("fusion").items() if n != "none")
    assert {c.policy.lm_layers for c in _configs("routing").values()} == {4}


def test_variants_are_selected_by_name_and_unknown_ones_refused():
    variants = {"a": {}, "b": {"lr": 1e-3}, "c": {}}
    assert list(select_variants(variants, "c, a")) == ["c", "a"]
    assert select_variants(variants, None) == variants and select_variants(variants, "") == variants
    with pytest.raises(ValueError, match=r"\['z'\] are not variants"):
        select_variants(variants, "a,z")
    for study in ("factors", "losses"):
        with pytest.raises(SystemExit):
            sweep.main(["--study", study, "--variants", "nonsense"])


def test_the_baseline_is_refused_for_a_study_without_a_curve(capsys):
    with pytest.raises(SystemExit):
        sweep.main(["--study", "fusion", "--baseline"])
    assert "--baseline: only the curve studies" in capsys.readouterr().err


def test_the_study_curve_plots_the_recipe_beside_the_baseline(tmp_path):
    pytest.importorskip("matplotlib")

    def point(x, rate):
        return {"success_rate": rate, "ci95": [rate - 0.1, min(1.0, rate + 0.1)]}

    rows = [
        {"x": 28, "recipe": point(28, 0.97), "baseline": point(28, 0.56)},
        {"x": 7, "recipe": point(7, 0.6)},  # a budget the baseline was not run at
    ]
    sweep.curve_png(rows, "training minutes", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
