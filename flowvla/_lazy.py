"""Package fronts that re-export their public names on first use (PEP 562's module ``__getattr__``).

A front that imported its modules eagerly would make ``import flowvla.data`` pull every optional
dependency, and ``python -m flowvla.envs.libero_check`` find its own module half-imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path) the first
    time ``name`` is read and returns that module's ``name``.

    Usage, in a package's ``__init__.py``: ``__getattr__ = lazy_exports(__name__, {"Name": "pkg.mod"})``.
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
