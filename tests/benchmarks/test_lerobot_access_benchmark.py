"""The LeRobot random-access benchmark runs end to end (quick mode) and reports consistent numbers."""

import json

import pytest

from tests.benchmark_loader import load_benchmark

pytest.importorskip("h5py")
pytest.importorskip("pyarrow")
pytest.importorskip("av")


def test_quick_run_writes_consistent_results(tmp_path):
    results = load_benchmark("speed/lerobot_access").main(
        ["--quick", "--items", "12", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "lerobot_access_quick.json").read_text())
    assert saved["rows"] == results["rows"] and [r["source"] for r in results["rows"]] == [
        "lerobot_video",
        "hdf5",
    ]
    for r in results["rows"]:
        assert r["in_order_items_per_s"] == pytest.approx(1000 / r["in_order_ms"])
        assert r["shuffled_over_in_order_time"] == pytest.approx(r["shuffled_ms"] / r["in_order_ms"])
    assert results["lerobot_mb"] > 0 and results["hdf5_mb"] > 0 and results["lerobot_export_s"] > 0
