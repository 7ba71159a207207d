"""benchmarks/speed/solver_overhead.py runs end to end (quick mode) and its timings hang together."""

import json

from tests.benchmark_loader import load_benchmark


def test_quick_run_times_every_solver_with_and_without_a_field(tmp_path):
    bench = load_benchmark("speed/solver_overhead")
    results = bench.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "solver_overhead_quick.json").read_text())
    assert saved["machine"]["torch_threads"] == 1  # measured on the thread count it reports
    for name, per_step in bench.SOLVERS.items():
        for label in (f"flowvla-{name}", f"flowvla-{name} (unchecked)"):
            rows = results["solves"][label]
            assert sorted(rows) == [n for n in (4, 10) if n % per_step == 0], label
            for nfe, r in rows.items():
                assert saved["solves"][label][str(nfe)]["wall_s"] == r["wall_s"]
                # Ten evaluations of the real field cost more than a solve whose field costs nothing.
                if nfe == 10:
                    assert r["free_field_s"] < r["wall_s"], (label, r)
