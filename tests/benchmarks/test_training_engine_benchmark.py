"""The training-engine benchmark runs end to end (quick mode, one process) and reports its numbers."""

import json

from tests.benchmark_loader import load_benchmark


def test_quick_run_reports_throughput_and_memory(tmp_path):
    bench = load_benchmark("speed/training_engine")
    results = bench.main(["--quick", "--processes", "1", "--threads", "1", "--out", str(tmp_path)])
    run = results["configs"]["tiny"]["1 process"]
    assert run["samples_per_s"] > 0 and run["peak_rss_bytes_per_process"] > 0
    assert run["distributed_type"] == "NO" and run["mixed_precision"] == "no"
    saved = json.loads((tmp_path / "training_engine_quick.json").read_text())
    assert saved["configs"]["tiny"]["1 process"]["samples_per_s"] == run["samples_per_s"]
