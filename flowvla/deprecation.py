"""Old public names kept as aliases of their replacements: they work as before and warn once per
process (``FutureWarning``, which Python shows by default), naming what replaced them."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["deprecated_alias"]

_WARNED: set[str] = set()


def deprecated_alias(
    old: str, new: Callable[..., Any], *, adapt: Callable[..., Any] | None = None
) -> Callable[..., Any]:
    """A function named ``old`` that calls ``new`` (or ``adapt``, when the old signature differs) and
    warns the first time it is called.

    Args:
        old: the old public name, as users wrote it (``"flowvla.solvers.get_solver"``).
        new: its replacement (named in the warning).
        adapt: called instead of ``new`` with the old arguments (an old signature mapped onto the new).
    """
    target = adapt or new
    new_name = f"{new.__module__}.{new.__qualname__}"

    @functools.wraps(target)
    def alias(*args: Any, **kwargs: Any) -> Any:
        if old not in _WARNED:
            _WARNED.add(old)
            warnings.warn(f"{old} is deprecated; use {new_name}", FutureWarning, stacklevel=2)
        return target(*args, **kwargs)

    alias.__name__ = old.rsplit(".", 1)[-1]
    alias.__qualname__ = alias.__name__
    alias.__doc__ = f"Deprecated alias of [`{new.__name__}`][{new_name}] (warns once)."
    return alias
