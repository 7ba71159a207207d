"""benchmarks/toy_few_step.py runs end to end (quick, fewer steps) and its numbers are self-consistent."""

import json
import math

import pytest

from tests.benchmark_loader import load_benchmark

SAMPLERS = ["uniform", "beta", "beta3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bench = load_benchmark("toy_few_step")
    out = tmp_path_factory.mktemp("toy_few_step")
    # --quick with fewer training steps and fit iterations: ~10 s of CPU.
    argv = ["--quick", "--steps", "60", "--iterations", "20", "--samplers", ",".join(SAMPLERS)]
    returned = bench.main([*argv, "--out", str(out)])
    saved = json.loads((out / "toy_few_step.json").read_text())
    return bench, out, returned, saved


def test_json_has_every_row_and_nfe_with_finite_numbers(run):
    bench, _, returned, saved = run
    assert saved["rows"].keys() == returned["rows"].keys()
    assert set(saved["rows"]) == {f"{s}/{r}" for s in SAMPLERS for r in ("euler", "bespoke")}
    for key, row in saved["rows"].items():
        nfes = bench.EULER_NFES if row["route"] == "euler" else bench.BESPOKE_STEPS
        for metric in ("off_mode", "ode_err"):
            assert sorted(int(n) for n in row[metric]) == nfes, (key, metric)
            assert all(math.isfinite(v) and v >= 0 for v in row[metric].values()), (key, metric)
        assert math.isfinite(row["dopri_off_mode"])
        # The verdicts follow from the numbers, against the same model's Euler@10.
        euler10 = saved["rows"][f"{row['sampler']}/euler"]["off_mode"]["10"]
        assert row["euler10_off_mode"] == euler10
        tol = saved["config"]["tolerance"]
        for n in ("1", "2"):
            assert row["reaches_euler10"][n] == (row["off_mode"][n] <= (1 + tol) * euler10)
    assert saved["config"]["steps"] == 60 and saved["config"]["quick"]


def test_bespoke_fit_is_no_worse_than_euler_on_its_fit_data(run):
    _, _, _, saved = run
    for name, model in saved["models"].items():
        for n, res in model["bespoke"].items():
            fit = res["fit"]
            # The fit starts from Euler on the uniform grid: its initial error is Euler's error on the
            # fit data, which the script measures independently.
            assert fit["init_error"] == pytest.approx(model["euler"][n]["fit_ode_err"], rel=1e-3), (name, n)
            assert fit["fit_error"] <= fit["init_error"], (name, n)
            assert fit["teacher_nfe"] >= (fit["iterations"] + 1) * int(n) * saved["config"]["n_fit"]
        cost = saved["rows"][f"{name}/bespoke"]["cost"]
        fits = [r["fit"]["teacher_nfe"] for r in model["bespoke"].values()]
        assert cost["teacher_nfe"] == sum(fits) + model["reference_cost"]["teacher_nfe"]


def test_euler_converges_to_the_models_own_ode_solution(run):
    _, _, _, saved = run
    for name in SAMPLERS:
        err = saved["rows"][f"{name}/euler"]["ode_err"]
        assert err["1"] > err["2"] > err["4"] > err["10"], (name, err)


def test_high_noise_sampler_puts_more_mass_near_t0(run):
    _, _, _, saved = run
    s = saved["samplers"]
    assert s["uniform"]["p_below_0.1"] == pytest.approx(0.1, abs=0.01)
    # In this convention t = 0 is noise: beta3 (and the default beta) draw more t < 0.1 than uniform.
    assert s["beta3"]["p_below_0.1"] > 2 * s["uniform"]["p_below_0.1"]
    assert s["uniform"]["p_below_0.1"] < s["beta"]["p_below_0.1"] < s["beta3"]["p_below_0.1"]
    assert s["beta3"]["mean"] < s["beta"]["mean"] < s["uniform"]["mean"]


def test_png_is_written(run):
    pytest.importorskip("matplotlib")
    _, out, _, _ = run
    png = out / "toy_few_step.png"
    assert png.exists() and png.stat().st_size > 10_000
