"""Tensor shape annotations and the one switch for runtime shape checking.

Every public function and every module ``forward`` in flowvla is decorated with
[`typechecked`][flowvla.typing.typechecked]: its jaxtyping annotations (``Float[Tensor, "B H A"]``) are
checked by beartype on each call, so a wrong shape raises ``jaxtyping.TypeCheckError`` naming the argument,
the expected shape and the sizes bound so far.

Shape letters, used the same way across the library: ``B`` batch, ``V`` views, ``T`` context
tokens, ``L`` VLM layers, ``K`` DiT blocks, ``H`` action horizon, ``A`` action dim, ``S`` state
dim, ``D`` width, ``N`` patches.

The switch: set the environment variable ``FLOWVLA_TYPECHECK=0`` before importing flowvla to
remove the checks entirely (the decorator then returns the undecorated function: zero cost), or
call [`set_typecheck`][flowvla.typing.set_typecheck] at run time (the decorated function then costs one flag
test per call). Checks are always skipped while ``torch.compile`` traces."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch
from beartype import beartype
from jaxtyping import Bool, Float, Int, Integer, Real, Shaped, TypeCheckError, jaxtyped
from torch import Tensor

__all__ = [
    "Bool",
    "Float",
    "Int",
    "Integer",
    "Real",
    "Shaped",
    "Tensor",
    "TypeCheckError",
    "set_typecheck",
    "typecheck_enabled",
    "typechecked",
]

TYPECHECK_ENV = "FLOWVLA_TYPECHECK"
_OFF_VALUES = frozenset({"0", "false", "off", "no"})

# Read once at import: when off, ``typechecked`` does not even wrap.
_AT_IMPORT = os.environ.get(TYPECHECK_ENV, "1").strip().lower() not in _OFF_VALUES
_enabled = _AT_IMPORT

F = TypeVar("F", bound=Callable)


def set_typecheck(enabled: bool) -> None:
    """Turn runtime shape checking on or off for every decorated function.

    Has no effect on functions decorated while ``FLOWVLA_TYPECHECK=0`` was set at import.
    """
    global _enabled
    _enabled = bool(enabled)


def typecheck_enabled() -> bool:
    """Whether decorated functions currently check their arguments."""
    return _enabled and _AT_IMPORT


def typechecked(fn: F) -> F:
    """Check ``fn``'s jaxtyping annotations with beartype on every call (see module docs)."""
    if not _AT_IMPORT:
        return fn
    checked = jaxtyped(typechecker=beartype)(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _enabled and not torch.compiler.is_compiling():
            return checked(*args, **kwargs)
        return fn(*args, **kwargs)

    wrapper.__flowvla_unchecked__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
