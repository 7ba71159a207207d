"""Checks of plain-number arguments that name the argument they refuse.

Configs and entry points across the library share them, so the same bad value gets the same message
wherever it is given. No torch here: this sits at the bottom of the layers, beside ``flowvla.typing``.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_nonnegative"]


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
