"""Checks of plain arguments and settings that name what they refuse, and the errors of a user's mistakes.

Configs and entry points across the library share them, so the same bad value gets the same message
wherever it is given: [`setting`][flowvla.checks.setting] declares a config field's range,
[`check_fields`][flowvla.checks.check_fields] checks a config's fields against their types and
ranges when it is built (before any compute). No torch here: this sits at the bottom of the layers,
beside ``flowvla.typing``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MissingPathError",
    "SettingError",
    "UserError",
    "check_fields",
    "check_nonnegative",
    "setting",
]


def check_nonnegative(name: str, value: float, unit: str = "") -> float:
    """Refuse anything but a finite number >= 0.

    A plain ``value < 0`` test lets NaN through (every comparison with NaN is false), and a NaN
    distance or noise level would then run silently as "no perturbation" or poison every sample.

    Args:
        name: the argument's name, as the caller knows it (it leads the error message).
        value: the number given.
        unit: its unit, named in the message when given (e.g. ``"metres"``).

    Returns:
        ``value``, as a float.

    Raises:
        ValueError: ``value`` is negative, NaN or infinite, or not a real number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        suffix = f" ({unit})" if unit else ""
        raise ValueError(f"{name}: must be a finite number >= 0{suffix}, got {value}")
    return float(value)


# ------------------------------------------------------------------------------ a user's mistakes
class UserError(Exception):
    """A mistake of the user's (a bad setting, a path that is not there), not a fault of flowvla:
    command lines print such an error as one line and exit with status 2, without a traceback."""


class SettingError(UserError, ValueError):
    """A setting refused: its value has the wrong type or lies out of range.

    Attributes:
        path: the setting's dotted path (``"train.lr"``), so a caller that knows the name the user
            typed (an old flat key ``"lr"``) can name both.
        problem: what is wrong, without the name (``"expected a float, got 'abc'"``).
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class MissingPathError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist (or is not what was asked for)."""


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
    parse: Callable[[Any, str], Any] | None = None,
) -> Any:
    """A dataclass field whose range [`check_fields`][flowvla.checks.check_fields] enforces.

    Args:
        default: its default value.
        factory: or a default factory (for lists).
        ge: lowest value allowed (numbers; for lists, every element).
        gt: values must exceed this.
        le: highest value allowed.
        choices: the values allowed.
        parse: ``parse(value, path)`` reads the value instead of the type check (e.g. an index
            list given as ``"0-3"``); it raises ``ValueError`` naming ``path``.
    """
    meta = {
        "ge": ge,
        "gt": gt,
        "le": le,
        "choices": None if choices is None else tuple(choices),
        "parse": parse,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check (and canonicalise, in place) every field of the dataclass ``obj`` against its annotated
    type and the range its [`setting`][flowvla.checks.setting] declares.

    Ints are accepted for floats (and stored as floats), lists for tuples and tuples for lists (stored
    as annotated); a bool is never a number. Nested dataclass fields are left to their own checks.

    Raises:
        SettingError: the first field refused, named by ``prefix.field``.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        path = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        parse = f.metadata.get("parse")
        if parse is not None:
            try:
                value = parse(value, path)
            except SettingError:
                raise
            except (TypeError, ValueError) as e:
                raise SettingError(path, str(e).removeprefix(f"{path}: ")) from None
        else:
            value = _check_type(path, value, hints[f.name])
        _check_range(path, value, f.metadata)
        object.__setattr__(obj, f.name, value)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        inner = _describe(args[0]) if args else "value"
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or tp is dict:
        return "a mapping"
    names = {int: "an integer", float: "a float", bool: "true or false", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _check_type(path: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (canonicalised), or a SettingError naming ``path``."""
    if tp is Any or dataclasses.is_dataclass(tp):
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _check_type(path, value, option)
            except SettingError:
                continue
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (list, tuple, collections.abc.Sequence):
        if isinstance(value, (list, tuple)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise SettingError(path, f"expected {len(args)} values, got {value!r}")
                return tuple(
                    _check_type(f"{path}[{i}]", v, a)
                    for i, (v, a) in enumerate(zip(value, args, strict=True))
                )
            items = [_check_type(f"{path}[{i}]", v, args[0]) if args else v for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return value
    else:
        return value  # a type this check does not know: the config's own checks decide
    raise SettingError(path, f"expected {_describe(tp)}, got {value!r}")


def _check_range(path: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SettingError(path, f"choose one of {list(choices)}, got {value!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise SettingError(path, f"must be a finite number, got {v}")
        for key, ok, words in (
            ("ge", lambda a, b: a >= b, ">="),
            ("gt", lambda a, b: a > b, ">"),
            ("le", lambda a, b: a <= b, "<="),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(v, bound):
                raise SettingError(path, f"must be {words} {bound:g}, got {value!r}")
