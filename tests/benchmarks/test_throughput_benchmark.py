"""The throughput benchmark runs end to end (quick mode): the training rate, a profile whose parts
make up the step, and the alternating comparison with another revision in a git worktree."""

import json
import subprocess

import pytest

from tests.benchmark_loader import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("speed/throughput")


def test_quick_run_reports_rate_and_profile(bench, tmp_path):
    results = bench.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "throughput_quick.json").read_text())
    assert saved["current"]["training"]["samples_per_s"] == pytest.approx(
        results["current"]["training"]["samples_per_s"]
    )
    assert results["current"]["training"]["cpu_s_per_sample"] > 0
    for profile in results["profile"]["steps"].values():
        parts = profile["seconds"]
        assert all(s >= 0 for s in parts.values())
        assert sum(parts.values()) == pytest.approx(profile["step_s"])
        assert profile["flops"] > 0
    assert results["profile"]["matmul_peak_gflops"]["fp32"] > 0


def _in_git_checkout() -> bool:
    done = subprocess.run(["git", "-C", str(BENCHMARKS), "rev-parse", "HEAD"], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="--baseline needs the source tree's git history")
def test_baseline_runs_in_a_worktree_and_gives_ratios(bench, tmp_path):
    results = bench.main(["--quick", "--what", "training", "--baseline", "HEAD", "--out", str(tmp_path)])
    training = results["baseline"]["training"]
    assert training["baseline"] > 0 and training["current"] > 0
    assert training["ratio"] == pytest.approx(training["current"] / training["baseline"])


def test_eval_variants_ask_for_a_trained_run_before_any_work(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--eval-variants", "--run", str(tmp_path), "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "--run must be a trained recipe run folder" in capsys.readouterr().err
