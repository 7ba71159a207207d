"""Instruction word tables: rewrites are whole-phrase, one pass, and the held-out table shares no new
word with the trained one."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.processing.instructions import (
    HELD_OUT_SYNONYMS,
    OPPOSITES,
    SYNONYMS,
    held_out_paraphrase,
    opposite,
    paraphrase,
    rewrite,
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_held_out_paraphrases_bring_no_word_the_trained_table_knows():
    trained = set().union(*(_words(k) | _words(v) for k, v in SYNONYMS.items()))
    for phrase, reworded in HELD_OUT_SYNONYMS.items():
        new = _words(reworded) - _words(phrase)
        assert new and not new & trained, (phrase, reworded)


def test_every_phrase_with_a_trained_synonym_has_a_held_out_one():
    assert set(HELD_OUT_SYNONYMS) == set(SYNONYMS)


def test_libero_object_instructions_have_all_three_rewordings():
    text = "pick up the alphabet soup and place it in the basket"
    assert paraphrase(text) == "grab the alphabet soup and put it in the basket"
    assert held_out_paraphrase(text) == "lift the alphabet soup and set it in the basket"
    assert opposite(text) == "put down the alphabet soup and place it in the basket"


def test_libero_put_and_stack_instructions_have_all_three_rewordings():
    # Every instruction of the five LIBERO suites has all three (checked against LIBERO itself in
    # tests/envs/test_libero_sim.py); these are the forms libero_goal, libero_10 and libero_90 add.
    assert opposite("put the bowl on the stove") == "take the bowl on the stove"
    assert paraphrase("put the bowl on the stove") == "place the bowl on the stove"
    assert held_out_paraphrase("put the bowl on the stove") == "set the bowl on the stove"
    text = "stack the middle black bowl on the back black bowl"
    assert paraphrase(text) == "pile the middle black bowl on the back black bowl"
    assert held_out_paraphrase(text) == "heap the middle black bowl on the back black bowl"
    assert opposite(text) == "stack the middle black bowl on the front black bowl"


def test_one_pass_never_swaps_a_word_back_and_matches_whole_words_only():
    assert rewrite("put it in the bowl, then place it", SYNONYMS) == "place it in the bowl, then put it"
    assert rewrite("output the topping", SYNONYMS) == "output the topping"  # no partial words
    assert rewrite("Turn On the stove", OPPOSITES) == "turn off the stove"
    with pytest.raises(ValueError, match="no held-out paraphrase rule"):
        held_out_paraphrase("wave")


@given(st.lists(st.sampled_from(["the", "bowl", "red", "mug", "and", "it", "plate"]), max_size=8))
def test_text_without_a_phrase_is_unchanged(words):
    text = " ".join(words)
    for table in (SYNONYMS, HELD_OUT_SYNONYMS, OPPOSITES):
        assert rewrite(text, table) == text
