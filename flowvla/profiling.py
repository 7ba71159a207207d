"""Measuring what a module costs: wall time, FLOPs, the machine's matmul peak, peak memory.

Used by the benchmarks and useful for sizing a policy: achieved GFLOP/s only mean something next
to the matmul peak of the same machine and thread count, measured in the same run.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_flops",
    "keep_large_allocations_in_heap",
    "matmul_peak_gflops",
    "median_time",
    "peak_memory_bytes",
]


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    *,
    min_time: float = 0.2,
    blocks: int = 5,
    max_calls: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Median over ``blocks`` of the mean seconds per call of ``fn`` (after one warm-up call).

    Each block lasts about ``min_time / blocks``; ``max_calls`` caps the total number of timed calls
    (for slow functions: with ``max_calls=1`` a single timed call). CUDA work on ``device`` is
    synchronised before each clock read.
    """
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    once = max(time.perf_counter() - t0, 1e-7)
    if max_calls is not None and max_calls <= 1:
        return once
    blocks = min(blocks, max_calls) if max_calls is not None else blocks
    per_block = max(1, int(min_time / blocks / once))
    if max_calls is not None:
        per_block = max(1, min(per_block, max_calls // blocks))
    samples = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) / per_block)
    return statistics.median(samples)


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of ``fn`` (matmuls, convolutions and attention).

    Attention runs on the math backend while counting, so its two matmuls are counted on every
    device (the fused CPU kernels are invisible to ``FlopCounterMode``). Elementwise work is not
    counted: the result is the compute a matmul-bound floor is made of.
    """
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_gflops(
    size: int = 2048,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    min_time: float = 0.5,
) -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product: the practical compute limit of the device."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    seconds = median_time(lambda: torch.mm(a, b), min_time=min_time, device=device)
    return 2 * size**3 / seconds / 1e9


def keep_large_allocations_in_heap() -> None:
    """Stop glibc from returning every large intermediate to the OS.

    glibc serves allocations above 128 KiB with ``mmap`` and unmaps them on free, so each large
    intermediate page-faults afresh (this doubled the time of large CPU evaluations). Raising the
    thresholds keeps them in the heap. No effect on other C libraries.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)


def _proc_status_bytes(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024


def peak_memory_bytes(fn: Callable[[], object], *, device: torch.device | str = "cpu") -> int | None:
    """Peak memory that one call of ``fn`` adds on top of what was live before it.

    CUDA: the caching allocator's peak. CPU (Linux): the process's resident-set high-water mark,
    after returning freed heap memory to the OS and resetting the mark (``/proc/self/clear_refs``);
    ``None`` where that is unavailable.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_bytes("VmRSS")
    except (OSError, AttributeError):
        return None
    fn()
    return max(0, _proc_status_bytes("VmHWM") - before)
