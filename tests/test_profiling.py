"""Profiling helpers: FLOP counts match closed forms, memory peaks see allocations, timing is sane;
results files read back as written, with the machine they were measured on."""

import json
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from flowvla.profiling import (
    Stopwatch,
    count_flops,
    machine_facts,
    markdown_table,
    matmul_peak_gflops,
    median_time,
    peak_memory_bytes,
    timing_settings,
    write_results,
)


def test_count_flops_matmul_and_attention_closed_forms():
    a, b = torch.randn(8, 16), torch.randn(16, 32)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 32
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(2, 3, 7, 4)
    # QK^T and AV: 2 * (B h N T E) each; counted even though the CPU would use a fused kernel
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * 2 * (2 * 3 * 5 * 7 * 4)
    lin = torch.nn.Linear(16, 32)
    assert count_flops(lambda: lin(a)) == 2 * 8 * 16 * 32


@pytest.mark.parametrize("kwargs", [{"min_time": 0.05}, {"max_calls": 1}, {"max_calls": 7}])
def test_median_time_measures_a_sleep(kwargs):
    # A sleep never returns early but a loaded machine (CI) can wake it late by milliseconds, so the
    # bounds are one-sided tight and generous above; the ratio of two sleeps checks the per-call scale.
    short = median_time(lambda: time.sleep(0.002), **kwargs)
    long = median_time(lambda: time.sleep(0.02), **kwargs)
    assert 0.002 <= short < 0.012
    assert 0.02 <= long < 0.04
    assert long > short + 0.01


def test_matmul_peak_is_positive():
    assert matmul_peak_gflops(128, min_time=0.01) > 0.01


def test_peak_memory_sees_a_temporary_allocation():
    def fn():
        x = torch.ones(64, 2**20 // 4 * 1, dtype=torch.float32)  # 64 MiB, touched
        return float(x.sum())

    peak = peak_memory_bytes(fn)
    if peak is None:
        pytest.skip("no /proc/self/clear_refs on this system")
    assert 48 * 2**20 < peak < 256 * 2**20


def test_write_results_reads_back_with_the_machine(tmp_path):
    results = {
        "errors": {10: torch.tensor(0.25), 4: float("nan")},
        "out": Path("a/b"),
        "rows": [(1, 2.5)],
    }
    path = write_results(tmp_path / "deep" / "r.json", results)
    back = json.loads(path.read_text())
    assert back["errors"] == {"10": 0.25, "4": None}  # int keys as strings, NaN as null
    assert back["out"] == "a/b" and back["rows"] == [[1, 2.5]]
    assert back["machine"]["torch"] == torch.__version__
    assert back["machine"]["torch_threads"] == torch.get_num_threads()
    assert "machine" not in results  # the caller's dict is left alone
    # A machine entry the caller measured (e.g. before a run changed its threads) is kept.
    again = json.loads(write_results(tmp_path / "r2.json", {"machine": {"cpus": 1}}).read_text())
    assert again == {"machine": {"cpus": 1}}


def test_machine_facts_name_what_a_timing_depends_on():
    facts = machine_facts()
    assert facts["cpus"] >= 1 and facts["torch_threads"] >= 1
    assert facts["load_average_1min"] is None or math.isfinite(facts["load_average_1min"])
    assert facts["date_utc"].endswith("+00:00")


cells = st.one_of(st.none(), st.integers(), st.text(alphabet="abc xyz.0123", max_size=6))


@given(
    st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.lists(cells, min_size=n, max_size=n),
            st.lists(st.lists(cells, min_size=n, max_size=n), max_size=4),
        )
    )
)
def test_markdown_table_has_one_line_per_row_and_one_cell_per_column(table):
    header, rows = table
    lines = markdown_table(header, rows).split("\n")
    assert len(lines) == len(rows) + 2
    assert all(line.count("|") == len(header) + 1 for line in lines)
    assert set(lines[1]) == {"|", "-"}


def test_markdown_table_refuses_a_ragged_row():
    with pytest.raises(ValueError, match="rows: every row needs 2 cells"):
        markdown_table(["a", "b"], [[1, 2], [3]])


def test_stopwatch_separates_waiting_from_computing():
    with Stopwatch() as sleeping:
        time.sleep(0.05)
    assert sleeping.wall >= 0.05 and sleeping.cpu < 0.03  # a sleep costs wall time, not CPU time
    # Work until the process has used 0.05 CPU seconds: however loaded the machine, the stopwatch
    # sees at least that much CPU time and, for one thread, at least as much wall time.
    with Stopwatch() as busy:
        start = time.process_time()
        while time.process_time() - start < 0.05:
            pass
    assert busy.cpu >= 0.05 and busy.wall >= 0.05


def test_timing_settings_hold_inside_and_are_put_back_even_after_an_error():
    from flowvla.typing import typecheck_enabled

    threads, checked = torch.get_num_threads(), typecheck_enabled()
    flushes = torch.set_flush_denormal(False)  # whether this CPU can flush subnormals at all
    subnormal = torch.tensor([1e-40])  # below float32's smallest normal number, 1.2e-38
    with pytest.raises(RuntimeError, match=r"^inside$"):
        with timing_settings(1, flush_denormal=True):
            assert torch.get_num_threads() == 1 and not typecheck_enabled()
            assert (subnormal * 1).item() == 0 or not flushes
            raise RuntimeError("inside")
    assert torch.get_num_threads() == threads and typecheck_enabled() == checked
    assert (subnormal * 1).item() != 0
    with timing_settings(typecheck=True):
        assert torch.get_num_threads() == threads and typecheck_enabled()
