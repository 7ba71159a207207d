"""Training data must carry the instruction wording evaluation uses (LIBERO's benchmark wording)."""

import pytest

from flowvla.data.hdf5 import instruction_from_bddl_file_name


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "chiliocosm/bddl_files/libero_object/pick_up_the_alphabet_soup_and_place_it_in_the_basket.bddl",
            "pick up the alphabet soup and place it in the basket",
        ),
        ("KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it.bddl",
         "turn on the stove and put the moka pot on it"),
        ("LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket.bddl",
         "put both the alphabet soup and the tomato sauce in the basket"),
        ("KITCHEN_SCENE10_put_the_black_bowl_in_the_top_drawer_of_the_cabinet_and_close_it.bddl",
         "put the black bowl in the top drawer of the cabinet and close it"),
    ],
)  # fmt: skip
def test_wording_from_the_file_name(name, expected):
    assert instruction_from_bddl_file_name(name) == expected


def test_a_name_without_words_is_an_error():
    with pytest.raises(ValueError, match="bddl_file_name"):
        instruction_from_bddl_file_name("KITCHEN_SCENE3.bddl")


def test_reader_can_take_the_benchmark_wording(tmp_path):
    pytest.importorskip("h5py")
    import h5py

    from flowvla.data.hdf5 import LiberoHDF5Reader
    from tests.data.helpers import write_official_hdf5

    path = tmp_path / "demo.hdf5"
    write_official_hdf5(path, [3], "Pick the akita black bowl and place it on the plate")
    with h5py.File(path, "a") as f:
        f["data"].attrs["bddl_file_name"] = (
            "libero_spatial/pick_up_the_black_bowl_and_place_it_on_the_plate.bddl"
        )
    assert LiberoHDF5Reader(path).instruction == "Pick the akita black bowl and place it on the plate"
    reader = LiberoHDF5Reader(path, instruction="from_bddl_file_name")
    assert reader.instruction == "pick up the black bowl and place it on the plate"


@pytest.mark.libero
def test_matches_the_benchmark_for_every_task():
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    from flowvla.envs.libero import list_tasks

    tasks = [
        t
        for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10")
        for t in list_tasks(suite)
    ]
    assert len(tasks) == 40
    assert [instruction_from_bddl_file_name(t.bddl_file) for t in tasks] == [t.instruction for t in tasks]
