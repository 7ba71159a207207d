"""Recipe sweeps: variants checked before anything runs, rows built from finished runs, and (with
LIBERO) a toy sweep end to end in which an evaluation-only variant reuses the trained checkpoint.
(Resuming is each run folder's own: see the main job's test in tests/examples.)"""

import json

import pytest

pytest.importorskip("h5py")
pytest.importorskip("transformers")

from flowvla.recipes.libero import preset
from flowvla.recipes.sweep import (
    final_loss,
    format_sweep,
    run_sweep,
    sweep_row,
    training_seconds,
    variant_configs,
)
from flowvla.recipes.train import training_call_seconds


def test_variants_are_checked_before_anything_runs():
    base = preset("toy")
    configs = variant_configs(base, {"ref": {}, "fast": {"lr": 1e-2}})
    assert configs["ref"] == base and configs["fast"].train.lr == 1e-2
    with pytest.raises(ValueError, match=r"variants\['bad'\].*colour"):
        variant_configs(base, {"ref": {}, "bad": {"colour": "red"}})
    with pytest.raises(ValueError, match=r"variants\['bad'\].*vision"):
        variant_configs(base, {"ref": {}, "bad": {"vision": "eyes"}})
    with pytest.raises(ValueError, match="folder name"):
        variant_configs(base, {"a/b": {}})
    with pytest.raises(ValueError, match="at least one"):
        variant_configs(base, {})


def test_training_seconds_add_up_every_call_of_a_resumed_run(tmp_path):
    # A first call stopped at 300 s; the resumed call counts from 0 again (an event row between).
    rows = [{"step": 20, "seconds": 100.0}, {"step": 40, "seconds": 300.0}, {"event": "resume", "step": 40}]
    rows += [{"step": 60, "seconds": 50.0}, {"step": 80, "seconds": 120.0}]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert training_seconds(log) == pytest.approx(420.0)
    # Per call, as a run's report counts them: a call cut off (no report of its own) keeps its share.
    assert training_call_seconds(log) == pytest.approx([300.0, 120.0])
    assert training_seconds(tmp_path / "missing.jsonl") is None
    assert training_call_seconds(tmp_path / "missing.jsonl") == []


def test_final_loss_averages_the_last_tenth_of_the_logged_steps(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": 10 * i, "action": float(i)} for i in range(1, 21)]
    rows.insert(5, {"event": "validation", "step": 50, "action": 100.0})  # not a training row
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert final_loss(log) == pytest.approx((19 + 20) / 2)
    assert final_loss(log, fraction=1.0) == pytest.approx(10.5)
    assert final_loss(tmp_path / "missing.jsonl") is None


def _run(successes, reused=None):
    overall = {
        "successes": successes,
        "episodes": 10,
        "success_rate": successes / 10,
        "ci95": [0.1, 0.9],
        "mean_steps": 80.0,
        "outcomes": {"success": successes, "hover": 10 - successes},
    }
    train = {"step": 100, "seconds": 120.0, "stopped": "steps", "ema_val_losses": {"action": 0.5}}
    if reused:
        train["reused_from"] = reused
    return {
        "success": {"overall": overall, "tasks": [{"task": "t0", "successes": successes, "episodes": 10}]},
        "train": train,
        "eval_summary": {"mean_second_diff": 0.01, "mean_third_diff": 0.02},
        "sensitivity": {"baseline_l2": 0.0, "image_l2": 0.3, "synonym_l2": 0.01, "opposite_l2": 0.2,
                        "checks": {"deterministic": True}},
    }  # fmt: skip


def test_rows_carry_every_number_of_a_finished_run(tmp_path):
    row = sweep_row("ref", {"lr": 0.1}, _run(7), tmp_path / "none.jsonl")
    assert row["success_rate"] == 0.7 and row["heldout_loss"] == 0.5 and row["train_minutes"] == 2.0
    assert row["second_diff"] == 0.01 and row["sensitivity"]["opposite_l2"] == 0.2
    assert row["layer_weights"] is None  # a run from before layer usage was measured
    routed = _run(7)
    routed["sensitivity"]["layer_usage"] = {
        "per_layer": [0.3, 0.7],
        "per_block": [[0.3, 0.7]],
        "sample_spread": 0,
    }
    assert sweep_row("mix", {}, routed, tmp_path / "none.jsonl")["layer_weights"] == [0.3, 0.7]
    reused = sweep_row("fast", {"solver_steps": 2}, _run(9, reused="x/checkpoint"), tmp_path / "none.jsonl")
    assert reused["train_minutes"] == 0.0 and reused["reused_from"] == "x/checkpoint"
    from flowvla.recipes.sweep import _add_deltas

    rows = [row, reused]
    _add_deltas(rows)
    assert [r["delta_points"] for r in rows] == pytest.approx([0.0, 20.0])
    table = format_sweep(rows)
    assert "reused" in table and "7/10" in table and "+20" in table and "hover" in table


def test_a_toy_sweep_runs_and_an_eval_variant_reuses_the_checkpoint(tmp_path):
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    base = preset("toy", val_demos_per_task=1)
    out = tmp_path / "sweep"
    variants = {"ref": {}, "euler2": {"solver_steps": 2}}
    rows = run_sweep(base, variants, out, cache_dir=tmp_path / "cache", progress=False)
    assert [r["variant"] for r in rows] == ["ref", "euler2"]
    assert rows[0]["reused_from"] is None and rows[1]["reused_from"] == str(out / "ref" / "checkpoint")
    assert not (out / "euler2" / "checkpoint").exists()
    assert rows[0]["heldout_loss"] is not None and rows[0]["train_loss"] is not None
    assert all(r["episodes"] == 1 and r["sensitivity"]["baseline_l2"] == 0.0 for r in rows)
    saved = json.loads((out / "sweep.json").read_text())
    assert [r["variant"] for r in saved["rows"]] == ["ref", "euler2"]
    # Run again: nothing trains, the same weights are evaluated, the training numbers stay.
    weights = (out / "ref" / "checkpoint" / "model_ema.safetensors").read_bytes()
    again = run_sweep(base, variants, out, cache_dir=tmp_path / "cache", progress=False)
    assert (out / "ref" / "checkpoint" / "model_ema.safetensors").read_bytes() == weights
    for key in ("heldout_loss", "train_steps", "stopped", "successes"):
        assert again[0][key] == rows[0][key], key
    # A bespoke solver fitted to the run's trained policy on its own demonstrations' observations.
    from flowvla.recipes.job import fit_run_solver

    solver = fit_run_solver(
        out / "ref", steps=1, per_task=1, points=(0.5,), iterations=2, samples=1, held_out_samples=1,
        reference_tol=1e-3,
    )  # fmt: skip
    assert solver.steps == 1 and solver.info["observations"] == 1 and solver.info["run"] == str(out / "ref")
    # A time grid fitted to the demonstrated chunks of the same observations.
    from flowvla.recipes.job import fit_run_grid

    grid, info = fit_run_grid(
        out / "ref", solver="ab2", steps=2, target="demos", per_task=1, points=(0.5,), samples=1,
        held_out_samples=1, sweeps=1, reference_tol=1e-3,
    )  # fmt: skip
    assert grid.steps == 2 and info["target"] == "demos" and info["observations"] == 1
    assert grid.fit_error <= grid.start_errors["uniform"] and info["held_out_demo_error"] > 0
