"""One task-list syntax for every command, and one-line errors."""

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.cli import fail, index_list, parse_index_list


@pytest.mark.parametrize(
    "text, want",
    [
        ("0", [0]),
        ("0,1", [0, 1]),
        ("0-3,7", [0, 1, 2, 3, 7]),
        (" 2 , 5-6 ", [2, 5, 6]),
        ("3,1-2,3", [3, 1, 2]),
    ],
)
def test_examples(text, want):
    assert parse_index_list(text) == want


@pytest.mark.parametrize("text", ["", " , ", "0 1", "a", "-1", "3-1", "1-2-3", "0,,1", "1.5"])
def test_bad_lists_name_the_argument(text):
    with pytest.raises(ValueError, match=r"^--suites-tasks: "):
        parse_index_list(text, name="--suites-tasks")


@given(st.lists(st.integers(0, 60), min_size=1, max_size=20))
def test_ranges_written_back_parse_to_the_same_indices(indices):
    # Write sorted unique indices compactly (runs as a-b), as a user would; parsing gives them back.
    xs = sorted(set(indices))
    parts, start = [], xs[0]
    for prev, cur in zip(xs, [*xs[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    assert parse_index_list(",".join(parts)) == xs
    assert parse_index_list(",".join(map(str, indices))) == list(dict.fromkeys(indices))


def test_argparse_type_gives_a_usage_error(capsys):
    p = argparse.ArgumentParser(prog="prog")
    p.add_argument("--tasks", type=index_list)
    assert p.parse_args(["--tasks", "0-2"]).tasks == [0, 1, 2]
    with pytest.raises(SystemExit):
        p.parse_args(["--tasks", "0 1"])
    assert "argument --tasks: '0 1' is not an index or a range" in capsys.readouterr().err


def test_fail_is_one_line(capsys):
    assert fail("flowvla-generate", ValueError("bad\nthing")) == 2
    assert capsys.readouterr().err == "flowvla-generate: error: bad thing\n"
