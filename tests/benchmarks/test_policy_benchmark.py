"""The policy benchmark runs end to end (quick mode) and reports every stage."""

import json

import pytest

from tests.benchmark_loader import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("speed/policy")


def test_quick_run_reports_every_stage(bench, tmp_path):
    results = bench.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "policy_quick.json").read_text())
    tiny = results["configs"]["tiny"]
    assert saved["configs"]["tiny"]["train_samples_per_s"] == pytest.approx(tiny["train_samples_per_s"])
    for mode in ("predict_cached", "predict_uncached"):
        t = tiny[mode]
        assert {"backbone", "geometry_and_fusion", "routing", "head", "total"} <= set(t)
        assert t["total"] >= t["head"] > 0
        assert t["head_per_nfe"] == pytest.approx(t["head"] / tiny["nfe"], rel=0.5)
