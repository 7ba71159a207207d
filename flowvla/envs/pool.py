"""The worker pool of simulator jobs (closed-loop evaluation, demonstration generation).

``workers > 1`` spawns that many processes (spawned, so CUDA and GL state never cross a fork), each
with one torch thread (every process runs a simulator on a core; torch's own thread pool would fight
them) and a per-process state set up once by ``setup(*setup_args)``; ``workers == 1`` runs every job
in this process, after the same ``setup``. A job is a picklable module-level function; it reads the
state through [`worker_state`][flowvla.envs.pool.worker_state] and may keep one simulator per process
with [`cached_env`][flowvla.envs.pool.cached_env] (building one takes seconds; consecutive jobs of a
task reuse it).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

__all__ = ["WorkerPool", "cached_env", "cached_envs", "close_cached_env", "worker_state"]

_STATE: dict[str, Any] = {}


def worker_state() -> dict[str, Any]:
    """This process's state, as the pool's ``setup`` left it."""
    return _STATE


def cached_env(key: Hashable, build: Callable[[], Any]) -> Any:
    """This process's simulator for ``key``: the one built last if its key is the same, else a new
    ``build()`` (the old ones closed first)."""
    return cached_envs(key, 1, build)[0]


def cached_envs(key: Hashable, count: int, build: Callable[[], Any]) -> list[Any]:
    """``count`` simulators for ``key`` (one per episode run at once): those built last if their key
    is the same, more built if there are too few; any of another key are closed first."""
    if _STATE.get("env_key") != key:
        close_cached_env()
        _STATE["envs"] = []
        _STATE["env_key"] = key
    envs = _STATE["envs"]
    while len(envs) < count:
        envs.append(build())
    return envs[:count]


def close_cached_env() -> None:
    """Close this process's cached simulators, if any."""
    envs = _STATE.pop("envs", [])
    _STATE.pop("env_key", None)
    for env in envs:
        env.close()


def _process_init(setup: Callable[..., None] | None, setup_args: tuple[Any, ...]) -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    if setup is not None:
        setup(*setup_args)


class WorkerPool:
    """``workers`` processes (or this one) running simulator jobs; a context manager.

    Args:
        workers: processes; 1 runs jobs in this process, when they are submitted.
        setup: called once per process with ``setup_args`` before its first job (fills
            [`worker_state`][flowvla.envs.pool.worker_state]).
        setup_args: its arguments (pickled once per process).
    """

    def __init__(
        self,
        workers: int,
        setup: Callable[..., None] | None = None,
        setup_args: tuple[Any, ...] = (),
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=mp.get_context("spawn"),
                initializer=_process_init,
                initargs=(setup, setup_args),
            )
        elif setup is not None:
            setup(*setup_args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Run ``fn(*args)`` in a worker (in this process: now, the future already done)."""
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        future: cf.Future = cf.Future()
        future.set_result(fn(*args))  # an error propagates here, at once, as it would inline
        return future

    def unordered(self, fn: Callable[..., Any], jobs: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*job)`` for every job, yielded as each finishes (in order with one worker)."""
        if self._pool is None:
            for job in jobs:
                yield fn(*job)
            return
        futures = [self._pool.submit(fn, *job) for job in jobs]
        for future in cf.as_completed(futures):
            yield future.result()

    @staticmethod
    def wait_first(pending: Iterable[cf.Future]) -> set[cf.Future]:
        """The futures of ``pending`` that are done, waiting for at least one."""
        done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
        return done

    def close(self) -> None:
        """Stop the processes (jobs not started are cancelled) and this process's simulator."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        close_cached_env()
        _STATE.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
