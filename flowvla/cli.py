"""What flowvla's command lines share: one syntax for index lists, one way to report an error.

Every command that takes task (or other index) lists reads them with
[`parse_index_list`][flowvla.cli.parse_index_list]: comma-separated indices and inclusive ranges,
``--tasks 0,1`` or ``--tasks 0-3,7``. Errors a user can fix (a bad argument, a missing extra) end
the command with one ``<prog>: error: ...`` line and exit status 2, as argparse's own do.
"""

from __future__ import annotations

import argparse
import re
import sys

__all__ = ["fail", "index_list", "parse_index_list"]

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
