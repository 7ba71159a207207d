"""Instruction normalisation: the same task phrased with stray whitespace or case maps to one string."""

from __future__ import annotations

import re

__all__ = ["normalize_instruction"]

_SPACE = re.compile(r"\s+")  # unicode-aware: tabs, newlines, NBSP, ideographic space ...
_TRAILING = ".!?;:,"


def normalize_instruction(text: str, *, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """Collapse runs of whitespace to one space and trim; optionally lowercase and drop trailing punctuation.

    ``"  Pick up\\tthe RED cube.\\n"`` -> ``"pick up the red cube"``.

    Args:
        text: the instruction.
        lowercase: lowercase the text.
        strip_punctuation: remove trailing ``. ! ? ; : ,`` (LIBERO instructions have none; users add them).
    """
    out = _SPACE.sub(" ", text).strip()
    if lowercase:
        out = out.lower()
    if strip_punctuation:
        out = out.rstrip(_TRAILING + " ")
    return out
