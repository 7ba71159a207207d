"""Instruction text: normalisation, and word tables that reword LIBERO-style instructions.

Three small tables rewrite whole phrases (longest first, one pass, so a swapped word is never
swapped back):

- ``SYNONYMS``: same-meaning rewordings, the ones a consistency loss may train on;
- ``HELD_OUT_SYNONYMS``: other same-meaning rewordings, sharing no replacement with ``SYNONYMS``,
  kept out of training so an evaluation can ask whether consistency generalises to new words;
- ``OPPOSITES``: an instruction asking for the opposite.

A fourth, ``OBJECT_SYNONYMS``, names LIBERO's objects in other words (LIBERO-Para's finding: object
synonyms cost policies 22-52 points), held out of training like ``HELD_OUT_SYNONYMS``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "HELD_OUT_SYNONYMS",
    "OBJECT_SYNONYMS",
    "OPPOSITES",
    "SYNONYMS",
    "held_out_paraphrase",
    "normalize_instruction",
    "object_synonym",
    "opposite",
    "paraphrase",
    "rewrite",
]

SYNONYMS: dict[str, str] = {
    "pick up": "grab",
    "stack": "pile",
    "place": "put",
    "put": "place",
    "push": "press",
    "turn on": "switch on",
    "turn off": "switch off",
    "close": "shut",
    "open": "pull open",
    "on top of": "onto",
    "bottom": "lowest",
    "top": "upper",
}
"""Phrase -> same-meaning paraphrase: the rewordings a consistency loss may train on."""
HELD_OUT_SYNONYMS: dict[str, str] = {
    "pick up": "lift",
    "stack": "heap",
    "place": "set",
    "put": "set",
    "push": "nudge",
    "turn on": "power on",
    "turn off": "power off",
    "close": "seal",
    "open": "swing open",
    "on top of": "atop",
    "bottom": "lower",
    "top": "highest",
}
"""Phrase -> a paraphrase whose new words appear nowhere in ``SYNONYMS`` (for held-out evaluation)."""
OPPOSITES: dict[str, str] = {
    "open": "close",
    "close": "open",
    "turn on": "turn off",
    "turn off": "turn on",
    "left": "right",
    "right": "left",
    "top": "bottom",
    "bottom": "top",
    "front": "back",
    "back": "front",
    "push": "pull",
    "pull": "push",
    "pick up": "put down",
    # "put X on Y" -> "take X on Y": LIBERO's put-tasks (libero_goal, libero_10) have no other phrase.
    "put": "take",
    "take": "put",
    "on top of": "under",
    "into": "out of",
}
"""Phrase -> its opposite (both directions are listed)."""


OBJECT_SYNONYMS: dict[str, str] = {
    "alphabet soup": "letter soup",
    "cream cheese box": "cheese spread box",
    "cream cheese": "cheese spread",
    "salad dressing": "vinaigrette",
    "bbq sauce": "barbecue sauce",
    "ketchup": "catsup",
    "tomato sauce": "marinara",
    "butter": "butter pack",
    "milk": "milk carton",
    "chocolate pudding": "pudding cup",
    "orange juice": "juice carton",
    "black bowl": "dark basin",
    "bowl": "basin",
    "plate": "dish",
    "ramekin": "small ceramic pot",
    "cookie box": "biscuit box",
    "cabinet": "cupboard",
    "stove": "cooktop",
    "wine bottle": "bottle of red",
    "rack": "holder",
    "basket": "hamper",
    "moka pots": "espresso makers",
    "moka pot": "espresso maker",
    "yellow and white mug": "yellow and white cup",
    "white mug": "white cup",
    "book": "hardback",
    "caddy": "desk organiser",
    "microwave": "microwave oven",
}
"""Object name -> another name for the same object, for every object LIBERO's four standard suites name
(held out of training: an evaluation asks whether a policy finds the object by other words)."""


def rewrite(instruction: str, table: Mapping[str, str]) -> str:
    """``instruction`` with every phrase of ``table`` replaced in one pass (whole words, case-insensitive,
    longest phrase first); unchanged when no phrase occurs."""
    phrases = sorted(table, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(p) for p in phrases) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: table[m.group(0).lower()], instruction)


def _rewrite_or_raise(instruction: str, table: Mapping[str, str], what: str) -> str:
    out = rewrite(instruction, table)
    if out == instruction:
        raise ValueError(f"instruction: no {what} rule applies to {instruction!r}; pass them explicitly")
    return out


def paraphrase(instruction: str) -> str:
    """A same-meaning rewording from ``SYNONYMS``; raises ``ValueError`` if no phrase applies."""
    return _rewrite_or_raise(instruction, SYNONYMS, "paraphrase")


def held_out_paraphrase(instruction: str) -> str:
    """A same-meaning rewording from ``HELD_OUT_SYNONYMS``; raises ``ValueError`` if no phrase applies."""
    return _rewrite_or_raise(instruction, HELD_OUT_SYNONYMS, "held-out paraphrase")


def object_synonym(instruction: str) -> str:
    """The instruction with its objects named from ``OBJECT_SYNONYMS``; ``ValueError`` if it names none."""
    return _rewrite_or_raise(instruction, OBJECT_SYNONYMS, "object synonym")


def opposite(instruction: str) -> str:
    """An instruction asking for the opposite, from ``OPPOSITES``; ``ValueError`` if none applies."""
    return _rewrite_or_raise(instruction, OPPOSITES, "opposite")


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
