"""The solver benchmark runs end to end (quick mode) and its numbers are self-consistent."""

import json

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("algorithms/solvers")


def test_quick_run_writes_consistent_results(bench, tmp_path):
    results = bench.main(["--quick", "--no-plot", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "solvers_quick.json").read_text())
    assert saved["summary"]["euler@10"] == pytest.approx(results["summary"]["euler@10"])
    errs = results["errors"]
    # Reference is far more accurate than anything it judges.
    assert results["config"]["reference_vs_rk4_rms"] < 1e-3 * min(min(r.values()) for r in errs.values())
    # Euler converges: more steps, less error.
    euler = errs["euler/uniform"]
    assert euler[10] < euler[4] < euler[2]
    # A fitted grid is fitted on other samples but still beats the uniform grid for Euler.
    assert errs["euler/fitted"][10] < euler[10]
    if "torchdiffeq-euler/uniform" in errs:  # identical arithmetic on the same grid
        assert errs["torchdiffeq-euler/uniform"][10] == pytest.approx(euler[10], rel=1e-4)
