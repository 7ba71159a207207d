"""Object synonyms: other names for LIBERO's objects, held out of every training table."""

from __future__ import annotations

import re

import pytest

from flowvla.processing.instructions import HELD_OUT_SYNONYMS, OBJECT_SYNONYMS, SYNONYMS, object_synonym


def test_object_synonyms_rename_the_objects_and_keep_the_verbs():
    text = "put both the cream cheese box and the butter in the basket"
    assert object_synonym(text) == "put both the cheese spread box and the butter pack in the hamper"
    assert object_synonym("put the bowl on the plate") == "put the basin on the dish"
    assert object_synonym(
        "put the white mug on the left plate and put the yellow and white mug on the right plate"
    ) == ("put the white cup on the left dish and put the yellow and white cup on the right dish")
    with pytest.raises(ValueError, match="instruction: no object synonym rule applies"):
        object_synonym("wave at the camera")


def test_object_synonyms_bring_no_word_a_training_table_rewrites_to():
    trained = {w for table in (SYNONYMS, HELD_OUT_SYNONYMS) for v in table.values() for w in v.split()}
    for name, other in OBJECT_SYNONYMS.items():
        assert other != name and not set(other.split()) & trained, name


@pytest.mark.libero
def test_every_instruction_of_the_four_suites_names_an_object_the_table_renames(libero_ready):
    from flowvla.envs.libero import list_tasks

    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10"):
        for task in list_tasks(suite):
            renamed = object_synonym(task.instruction)
            kept = set(re.findall(r"[a-z]+", renamed)) & set(re.findall(r"[a-z]+", task.instruction))
            assert renamed != task.instruction and kept, task.instruction
