"""What flowvla's command lines share: one syntax for index lists, one way to report an error.

Every command that takes task (or other index) lists reads them with
[`parse_index_list`][flowvla.cli.parse_index_list]: comma-separated indices and inclusive ranges,
``--tasks 0,1`` or ``--tasks 0-3,7``. Errors a user can fix (a bad argument, a missing extra) end
the command with one ``<prog>: error: ...`` line and exit status 2, as argparse's own do.
"""

from __future__ import annotations

import argparse
import numbers
import re
import sys
import time
from typing import Any

__all__ = ["as_index_list", "elapsed", "fail", "index_list", "parse_index_list", "say"]

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_index_list(text: str, name: str = "--tasks") -> list[int]:
    """Indices from ``"0-3,7"``: comma-separated non-negative integers and inclusive ranges ``a-b``.

    Args:
        text: the list as typed; spaces around items are ignored.
        name: the argument it came from, for the error message.

    Returns:
        The indices in the order given, each once (``"3,1-2,3"`` gives ``[3, 1, 2]``).

    Raises:
        ValueError: empty text, an item that is not an index or a range, or a range ``a-b`` with
            ``b < a``; the message names ``name`` and the bad item.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise ValueError(f"{name}: empty list; give indices such as 0,1 or 0-3,7")
    out: dict[int, None] = {}  # ordered, without repeats
    for item in items:
        m = _RANGE.match(item)
        if m is None:
            raise ValueError(
                f"{name}: {item!r} is not an index or a range; give indices such as 0,1 or 0-3,7"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{name}: range {item!r} ends before it starts")
        out.update(dict.fromkeys(range(lo, hi + 1)))
    return list(out)


def as_index_list(value: Any, name: str) -> list[int]:
    """Indices from what a config may be given: a sequence of integers, one integer, or the command
    line's text form (``"1,8"``, ``"0-3,7"``; see [`parse_index_list`][flowvla.cli.parse_index_list]).

    A string is parsed as a whole: a plain ``list("18")`` would read it digit by digit as ``[1, 8]``.

    Args:
        value: the indices as given.
        name: the argument it came from, for the error message.

    Returns:
        The indices as a list of ``int``.

    Raises:
        ValueError: text that is not an index list, a value that is neither text, an integer nor a
            sequence, or an element that is not an integer (floats and booleans included); the
            message names ``name``.
    """
    if isinstance(value, str):
        return parse_index_list(value, name=name)
    items = [value] if isinstance(value, numbers.Integral) else value
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"{name}: give indices such as [0, 1] or '0-3,7', got {value!r}") from None
    bad = [i for i in items if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if bad:
        raise ValueError(f"{name}: indices must be integers, got {bad[0]!r} in {value!r}")
    return [int(i) for i in items]


def index_list(text: str) -> list[int]:
    """[`parse_index_list`][flowvla.cli.parse_index_list] as an argparse ``type=`` (its errors
    become argparse's usage errors)."""
    try:
        return parse_index_list(text, name="list")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("list: ")) from e


def fail(prog: str, error: BaseException | str) -> int:
    """Print ``<prog>: error: <error>`` to stderr (one line, no traceback) and return exit status 2."""
    message = " ".join(str(error).split("\n"))
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def say(message: str) -> None:
    """A job's progress line, on stderr (stdout stays for results), flushed at once."""
    print(message, file=sys.stderr, flush=True)


def elapsed(t0: float) -> str:
    """Wall time since ``time.perf_counter()`` returned ``t0``, as ``"42 s"`` or ``"3.5 min"``."""
    s = time.perf_counter() - t0
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
