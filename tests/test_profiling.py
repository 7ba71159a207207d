"""Profiling helpers: FLOP counts match closed forms, memory peaks see allocations, timing is sane."""

import time

import pytest
import torch
import torch.nn.functional as F

from flowvla.profiling import count_flops, matmul_peak_gflops, median_time, peak_memory_bytes


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
