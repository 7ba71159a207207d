"""The record ledger of resumable simulator jobs: one JSON line per finished item (an evaluated
episode, a demonstration attempt), appended and synced as soon as the item ends.

A job started again reads its ledger back ([`RecordLedger.load`][flowvla.envs.ledger.RecordLedger.load]),
skips what is recorded and runs the rest; a line cut short by a crash ends the reading (everything
before it is intact) and is dropped when the ledger is rewritten
([`RecordLedger.rewrite`][flowvla.envs.ledger.RecordLedger.rewrite]). Records a job must not reuse
(another policy, other settings) are moved aside with their outputs
([`move_aside`][flowvla.envs.ledger.move_aside]), never mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RecordLedger", "load_records", "move_aside"]


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` ledger (``[]`` if absent), up to a line cut by a crash."""
    rows: list[dict[str, Any]] = []
    path = Path(path)
    if path.exists():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut by a crash: everything before it is intact
    return rows


class RecordLedger:
    """A ``.jsonl`` file of records, one per finished item.

    Args:
        path: the file (its folder is created on the first write).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """The records written so far (see [`load_records`][flowvla.envs.ledger.load_records])."""
        return load_records(self.path)

    def rewrite(self, rows: Iterable[dict[str, Any]]) -> None:
        """Replace the file by ``rows`` (so appends start on a clean line after a crash's cut one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    def append(self, row: dict[str, Any]) -> None:
        """Add one record, synced to disk before returning (a kill right after loses nothing)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def move_aside(folder: str | os.PathLike, names: Iterable[str]) -> Path:
    """Move the entries ``names`` of ``folder`` (a ledger and its outputs) into a new
    ``folder/stale-<n>``; returns that folder."""
    folder = Path(folder)
    n = 0
    while (folder / f"stale-{n}").exists():
        n += 1
    dest = folder / f"stale-{n}"
    dest.mkdir()
    for name in names:
        if (folder / name).exists():
            os.replace(folder / name, dest / name)
    return dest
