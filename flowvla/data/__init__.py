"""Datasets: LIBERO HDF5 and LeRobot readers, the HDF5 writer, training items, statistics, collate,
and the scripted-demonstration generator ([`flowvla.data.generate`][flowvla.data.generate], needs LIBERO)."""

from __future__ import annotations

from typing import Any

__all__ = ["GenerateConfig", "generate"]

_LAZY = {"GenerateConfig": "flowvla.data.generate", "generate": "flowvla.data.generate"}


def __getattr__(name: str) -> Any:
    # Lazy: the generator imports the simulator wrapper; reading datasets must not.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowvla.data' has no attribute {name!r}")
