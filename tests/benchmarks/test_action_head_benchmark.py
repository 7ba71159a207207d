"""The action-head benchmark runs end to end (quick mode) and its numbers are self-consistent."""

import json

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("speed/action_head")


def test_quick_run_writes_consistent_results(bench, tmp_path):
    args = ["--quick", "--threads", "1", "--depths", "2", "--batches", "1", "4", "--min-time", "0.02"]
    results = bench.main([*args, "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "action_head_quick.json").read_text())
    assert saved["matmul_peak_gflops"] == pytest.approx(results["matmul_peak_gflops"])
    assert [(c["depth"], c["batch"]) for c in results["cases"]] == [(2, 1), (2, 4)]
    for case in results["cases"]:
        # FLOPs scale with the batch; the floor is FLOPs over the measured peak
        assert case["gflop_context"] > 0 and case["gflop_eval"] > 0
        floor = (case["gflop_context"] + 10 * case["gflop_eval"]) / results["matmul_peak_gflops"]
        assert case["sample_floor_s"] == pytest.approx(floor)
        assert case["sample_cached_s"] > case["sample_floor_s"] * 0.5  # nothing beats the floor by 2x
        assert case["train_samples_per_s"] > 0
    small, big = results["cases"]
    assert big["gflop_context"] == pytest.approx(4 * small["gflop_context"], rel=1e-6)
