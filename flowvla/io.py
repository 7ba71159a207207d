"""Atomic file writes: write to a temporary file in the target folder, then ``os.replace`` it in.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never a
truncated one, even if the writer is killed. Checkpoints, statistics, records and fitted grids
are all written through here. [`folder_lock`][flowvla.io.folder_lock] keeps two processes from
writing into one folder at once (the shared demonstration cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FolderBusyError", "atomic_path", "folder_lock", "jsonable", "write_json_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` (default: ``path``'s own) is kept so tools that pick a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON to ``path`` atomically (fsync'd before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


class FolderBusyError(RuntimeError):
    """Another process holds the lock of a folder (and the caller chose not to wait)."""


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold ``folder/.lock`` for the block, so two processes never write into ``folder`` at once.

    An ``fcntl.flock`` on the lock file: the operating system releases it when its holder exits,
    killed or not, so a crashed job never leaves a stale lock behind. The file keeps the holder's pid,
    for the message of the one that waits.

    Args:
        folder: the folder guarded (created when missing).
        wait: wait for the holder to finish (False: raise ``FolderBusyError`` at once).
        on_wait: called once with a message when the lock is busy and this call waits.

    Raises:
        FolderBusyError: the lock is held and ``wait`` is False.
    """
    import fcntl

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            message = f"{root}: another job (pid {holder}) is writing into it"
            if not wait:
                raise FolderBusyError(f"{message}; run again when it has finished") from None
            if on_wait is not None:
                on_wait(f"{message}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield path
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def jsonable(x: Any) -> Any:
    """``x`` made JSON-safe: tensors and arrays as lists (large ones summarised by shape and mean), numpy
    scalars as numbers, objects with ``to_dict`` as their dict, anything else as its ``repr``. For a
    policy's debug_info and settings written into records."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.tolist() if x.size <= 64 else {"shape": list(x.shape), "mean": float(x.mean())}
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if callable(getattr(x, "to_dict", None)):  # e.g. a fitted solver: its coefficients, not its repr
        return jsonable(x.to_dict())
    return repr(x)
