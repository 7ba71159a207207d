"""Measuring what a module costs, and recording the measurement with the machine it was made on.

Wall time, FLOPs, the machine's matmul peak and peak memory; then a Markdown table of the numbers
and a JSON file that carries the machine's facts (CPU, threads, load, torch version, date) beside
them. Used by the benchmarks and useful for sizing a policy: achieved GFLOP/s only mean something
next to the matmul peak of the same machine and thread count, measured in the same run, and a
timing only means something next to the load the machine was under.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from flowvla.io import write_json_atomic

__all__ = [
    "Stopwatch",
    "agg_pyplot",
    "count_flops",
    "keep_large_allocations_in_heap",
    "machine_facts",
    "markdown_table",
    "matmul_peak_gflops",
    "median_time",
    "peak_memory_bytes",
    "timing_settings",
    "write_results",
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


class Stopwatch:
    """Wall and process-CPU seconds of a ``with`` block, for work too slow or too stateful to repeat.

    ``with Stopwatch() as clock: train()`` leaves ``clock.wall`` and ``clock.cpu`` (seconds). On a
    machine shared with other jobs the wall time inflates and the CPU time hardly does: with one
    thread, CPU seconds approximate an idle core's wall time. CUDA work on ``device`` is synchronised
    before each clock read.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        _sync(self.device)
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0


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


@contextlib.contextmanager
def timing_settings(
    threads: int | None = None, *, typecheck: bool = False, flush_denormal: bool = False
) -> Iterator[None]:
    """The CPU settings a timing runs under, put back on leaving (after an error too).

    Args:
        threads: torch intra-op threads inside (None: as they are).
        typecheck: keep the runtime shape checks on (off by default: time the modules, not the
            checks).
        flush_denormal: flush subnormal floats to zero inside (their arithmetic is slow and depends on
            the values, e.g. the exp of very negative log-likelihoods, so a function's cost would
            depend on its inputs); switched off again on leaving.

    Large allocations are kept in the heap as well
    ([`keep_large_allocations_in_heap`][flowvla.profiling.keep_large_allocations_in_heap]; for the
    whole process, not undone).
    """
    from flowvla.typing import set_typecheck, typecheck_enabled

    keep_large_allocations_in_heap()
    threads_before, checked_before = torch.get_num_threads(), typecheck_enabled()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        set_typecheck(typecheck)
        if flush_denormal:
            torch.set_flush_denormal(True)
        yield
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)
        set_typecheck(checked_before)
        torch.set_num_threads(threads_before)


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


def machine_facts(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a timing depends on, for the results file: CPU, cores, torch threads, load, versions, date.

    ``load_average_1min`` says whether other work shared the machine (on 2 cores, a load above ~1
    inflates wall times); ``gpu`` names the CUDA device when ``device`` is one.
    """
    try:
        flowvla_version = metadata.version("flowvla")
    except metadata.PackageNotFoundError:
        flowvla_version = None
    facts: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "flowvla": flowvla_version,
    }
    if torch.device(device).type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def _json_ready(obj: Any) -> Any:
    """Tensors, numpy scalars and paths as plain JSON values; non-finite floats as ``None``."""
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, str) else str(k)): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_ready(obj.tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_results(
    path: str | os.PathLike, results: Mapping[str, Any], *, device: torch.device | str = "cpu"
) -> Path:
    """Write a benchmark's ``results`` as JSON to ``path`` (atomically), with the machine's facts.

    The file holds ``results`` plus a ``"machine"`` entry from
    [`machine_facts`][flowvla.profiling.machine_facts] (taken now, at the end of the run) unless
    ``results`` has one. Dict keys become strings (an NFE of ``10`` is read back as ``"10"``).
    Returns the path written.
    """
    data = dict(results)
    data.setdefault("machine", machine_facts(device))
    return write_json_atomic(path, _json_ready(data))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table: the form the results pages of the docs hold, so a run's output pastes in.

    Cells are written with ``str`` (format numbers before); ``None`` is an empty cell.
    """
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"rows: every row needs {len(header)} cells, one per header column")

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join("" if c is None else str(c) for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def agg_pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return None
    return plt
