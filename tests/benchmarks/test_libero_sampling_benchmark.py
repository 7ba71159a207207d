"""benchmarks/libero/sampling.py (and libero/robustness.py's rows): settings parsing, and a tiny
closed-loop run through the real runner."""

from __future__ import annotations

import argparse
import json

import pytest

from tests.benchmark_loader import load_benchmark as _load


def load_benchmark():
    return _load("libero/sampling")


def test_settings_name_a_known_solver_and_a_step_count():
    bench = load_benchmark()
    assert bench.parse_settings("euler@10, ab2@4") == [("euler", 10), ("ab2", 4)]
    for bad, why in [
        ("euler", "SOLVER@STEPS"),
        ("euler@0", "SOLVER@STEPS"),
        ("leapfrog@2", "unknown solver"),
    ]:
        with pytest.raises(SystemExit, match=why):
            bench.parse_settings(bad)
    assert bench.parse_bespoke("euler@2, midpoint@1") == [("euler", 2), ("midpoint", 1)]
    assert bench.parse_bespoke(None) == []
    for bad in ("ab2@2", "euler", "euler@0"):
        with pytest.raises(SystemExit, match="--bespoke"):
            bench.parse_bespoke(bad)
    assert bench.parse_fitted_grids("ab2@4:ode, euler@2:demos") == [("ab2", 4, "ode"), ("euler", 2, "demos")]
    assert bench.parse_fitted_grids(None) == []
    for bad in ("ab2@4", "ab2@4:success", "leapfrog@2:ode", "ab2:ode", "ab2@4,euler@2:ode"):
        with pytest.raises(SystemExit, match="--fitted-grid"):
            bench.parse_fitted_grids(bad)


def test_a_kept_bespoke_solver_is_reused_only_for_the_same_policy_and_fit_settings(tmp_path, monkeypatch):
    import argparse

    import flowvla.recipes.job as job
    from flowvla.solvers import BespokeSolver

    bench = load_benchmark()
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text("{}")
    fits = []

    def fit(run_dir, *, steps, base, **kwargs):  # the fit itself is tested in tests/policy/test_solver_fit.py
        fits.append(kwargs)
        errors = {"held_out_error": 0.1, "held_out_base_error": 0.2, "held_out_euler10_error": 0.1}
        info = {"seconds": 0.0, **errors}
        return BespokeSolver(BespokeSolver.identity(base, steps).params, info=info)

    monkeypatch.setattr(job, "fit_run_solver", fit)
    args = argparse.Namespace(
        out=str(tmp_path / "out"), policy=str(run / "checkpoint"), fit_iterations=5, fit_samples=2, seed=0
    )
    first = bench.bespoke_solver(args, "euler", 2)
    assert len(fits) == 1 and (tmp_path / "out" / "bespoke-euler@2.json").is_file()
    again = bench.bespoke_solver(args, "euler", 2)
    assert len(fits) == 1 and again.params == first.params  # read back, not refitted
    args.fit_iterations = 50
    bench.bespoke_solver(args, "euler", 2)
    assert len(fits) == 2 and fits[-1]["iterations"] == 50  # other settings: fitted again
    saved = BespokeSolver.load(tmp_path / "out" / "bespoke-euler@2.json")
    assert saved.info["fit_settings"]["iterations"] == 50


def test_a_kept_fitted_grid_is_reused_only_for_the_same_policy_and_fit_settings(tmp_path, monkeypatch):
    import argparse

    import flowvla.recipes.job as job
    from flowvla.solvers import FittedGrid

    bench = load_benchmark()
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.json").write_text("{}")
    fits = []

    def fit(run_dir, *, solver, steps, target, **kwargs):  # the fit itself: tests/policy/test_solver_fit.py
        fits.append(kwargs)
        grid = FittedGrid(solver=solver, times=[0.0, 0.2, 1.0], fit_error=0.1, start="uniform")
        errors = {f"held_out_{k}_error{u}": 0.1 for k in ("ode", "demo") for u in ("", "_uniform")}
        return grid, {"seconds": 0.0, **errors}

    monkeypatch.setattr(job, "fit_run_grid", fit)
    args = argparse.Namespace(
        out=str(tmp_path / "out"), policy=str(run / "checkpoint"), fit_samples=2, seed=0
    )
    first = bench.fitted_grid(args, "ab2", 2, "ode")
    assert len(fits) == 1 and first.times == [0.0, 0.2, 1.0]
    assert bench.fitted_grid(args, "ab2", 2, "ode") == first and len(fits) == 1  # read back
    args.fit_samples = 8
    bench.fitted_grid(args, "ab2", 2, "ode")
    assert len(fits) == 2 and fits[-1]["samples"] == 8  # other settings: fitted again


def test_every_setting_runs_the_same_episodes_and_reports_its_nfe(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    from flowvla.backbones.composed import ComposedBackbone
    from flowvla.envs.libero_setup import LiberoSetupError, prepare_libero
    from flowvla.policy import HeadConfig, PolicyConfig, VLAPolicy

    try:
        prepare_libero()
    except LiberoSetupError as err:
        pytest.skip(str(err))
    texts = ["pick up the alphabet soup and place it in the basket"]
    bb = ComposedBackbone.tiny(texts, image_size=32, vision="conv", conv_channels=(8, 8), lm_dim=32)
    policy = VLAPolicy(PolicyConfig(backbone=bb.spec(), horizon=4, head=HeadConfig(dim=32, depth=1)), bb)
    ckpt = policy.save_pretrained(tmp_path / "policy")
    argv = ["--policy", str(ckpt), "--tasks", "0", "--init-states", "1", "--max-steps", "4", "--workers", "1"]
    argv += ["--settings", "euler@2,midpoint@2", "--out", str(tmp_path / "out"), "--quiet"]
    result = load_benchmark().main(argv)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["euler@2"]["nfe"] == 2 and rows["midpoint@2"]["nfe"] == 4
    assert rows["euler@2"]["delta_points"] == 0 and rows["euler@2"]["latency_ratio"] == 1
    for r in rows.values():
        assert r["episodes"] == 1 and r["mean_steps"] == 4 and r["second_diff"] >= 0
    assert json.loads((tmp_path / "out" / "sampling.json").read_text())["rows"] == result["rows"]


def test_robustness_camera_rows_parse_and_an_empty_list_gives_none():
    robustness = _load("libero/robustness")
    assert robustness.camera_settings("0.02:3,0.04:6") == [(0.02, 3.0), (0.04, 6.0)]
    assert robustness.camera_settings("") == []  # only the instruction rows (and objects, if given)
    with pytest.raises(argparse.ArgumentTypeError, match="SHIFT_M:ANGLE_DEG"):
        robustness.camera_settings("0.02")


def test_robustness_rows_keep_the_named_subset_in_order_and_refuse_unknown_names(capsys):
    pytest.importorskip("libero")
    robustness = _load("libero/robustness")
    from flowvla.recipes.sweep import select_variants

    rows = robustness.variants("libero_object", [0, 1], [0.03], [(0.02, 3.0)], [0.04])
    assert list(rows) == [
        "official",
        "paraphrase",
        "held_out_paraphrase",
        "swapped_instruction",
        "objects+3cm",
        "objects_within_4cm",
        "camera+2cm+3deg",
    ]
    assert rows["objects_within_4cm"]["perturbation"].object_scatter_m == 0.04
    from flowvla.envs.libero import get_task

    # Each task gets another evaluated task's words (cyclically); one task alone has no row.
    words = {t: get_task("libero_object", t).instruction for t in (0, 1, 2)}
    swapped = robustness.variants("libero_object", [0, 1, 2], [], [])["swapped_instruction"]["instructions"]
    assert swapped == {0: words[1], 1: words[2], 2: words[0]}
    assert "swapped_instruction" not in robustness.variants("libero_object", [3], [], [])
    assert list(select_variants(rows, "objects+3cm,official")) == ["objects+3cm", "official"]
    # An unknown row is refused before any policy is loaded (the path does not exist).
    with pytest.raises(SystemExit):
        robustness.main(
            ["--policy", "/nonexistent", "--object-shift", "0.03", "--rows", "official,objects+2cm"]
        )
    err = capsys.readouterr().err
    assert "--rows" in err and "objects+2cm" in err and "objects+3cm" in err
