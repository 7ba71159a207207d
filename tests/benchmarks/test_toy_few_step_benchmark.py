"""benchmarks/algorithms/toy_few_step.py runs end to end (quick, fewer steps); its numbers agree."""

import json
import math

import pytest

from tests.benchmark_loader import load_benchmark

SAMPLERS = ["uniform", "beta", "beta3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    bench = load_benchmark("algorithms/toy_few_step")
    out = tmp_path_factory.mktemp("toy_few_step")
    # --quick with fewer training steps and fit iterations: ~10 s of CPU.
    argv = ["--quick", "--steps", "60", "--iterations", "20", "--shortcut-iterations", "30"]
    argv += ["--samplers", ",".join(SAMPLERS)]
    returned = bench.main([*argv, "--out", str(out)])
    saved = json.loads((out / "toy_few_step.json").read_text())
    return bench, out, returned, saved


def test_json_has_every_row_and_nfe_with_finite_numbers(run):
    bench, _, returned, saved = run
    assert saved["rows"].keys() == returned["rows"].keys()
    routes = ("euler", "bespoke", "shortcut")
    assert set(saved["rows"]) == {f"{s}/{r}" for s in SAMPLERS for r in routes}
    for key, row in saved["rows"].items():
        nfes = {"euler": bench.EULER_NFES, "bespoke": bench.BESPOKE_STEPS}.get(
            row["route"], bench.SHORTCUT_STEPS
        )
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


def test_shortcut_cost_counts_the_distillation(run):
    _, _, _, saved = run
    for name, model in saved["models"].items():
        cost = model["shortcut_cost"]
        assert cost["iterations"] == 30 and cost["teacher_nfe"] > 0 and cost["seconds"] > 0
        assert saved["rows"][f"{name}/shortcut"]["cost"]["teacher_nfe"] == cost["teacher_nfe"]


def test_an_untrained_student_is_its_teachers_euler():
    """The step input starts with zero weights: n shortcut steps are exactly the teacher's Euler@n."""
    import torch

    from flowvla.flow import shortcut_sample
    from flowvla.solvers import integrate

    bench = load_benchmark("algorithms/toy_few_step")
    toy = bench.load_example()
    torch.manual_seed(0)
    teacher = toy.VelocityMLP(width=32)
    student = bench.StepVelocityMLP(teacher)
    goal, _ = toy.demonstrations(16, torch.Generator().manual_seed(0))
    z = torch.randn(16, toy.H, toy.A, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for n in (1, 2, 4):
            euler = integrate(teacher, z, solver="euler", steps=n, goal=goal).x
            torch.testing.assert_close(shortcut_sample(student, z, n, goal=goal), euler)
    assert all(p.requires_grad for p in student.parameters())


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
