"""One task-list syntax for every command, and one-line errors."""

import argparse

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.cli import as_index_list, fail, index_list, parse_index_list


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


@given(st.lists(st.integers(0, 60), min_size=1, max_size=20))
def test_a_config_gets_the_same_indices_from_a_list_an_array_or_its_text(indices):
    text = ",".join(map(str, indices))
    want = [int(i) for i in indices]
    assert as_index_list(indices, "tasks") == want
    assert as_index_list(np.asarray(indices), "tasks") == want
    assert as_index_list(tuple(indices), "tasks") == want
    # Text is read as a whole, as on the command line (repeats dropped there).
    assert as_index_list(text, "tasks") == list(dict.fromkeys(want))
    assert as_index_list(indices[0], "tasks") == [indices[0]]


@pytest.mark.parametrize(
    "value, message",
    [
        ("1;2", "'1;2' is not an index"),
        (1.5, "give indices such as"),
        (None, "give indices such as"),
        ([0, 1.0], "indices must be integers, got 1.0"),
        ([True], "indices must be integers, got True"),
        (["1"], "indices must be integers, got '1'"),
    ],
)
def test_bad_config_indices_name_the_argument(value, message):
    with pytest.raises(ValueError, match=rf"^tasks: {message}"):
        as_index_list(value, "tasks")


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


def _hide_libero(monkeypatch):
    from flowvla.envs import libero_setup as ls

    real = ls.importlib.util.find_spec
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda name: None if name == "libero" else real(name))
    monkeypatch.setattr(ls, "_PREPARED", None)  # another test may have prepared the real one


def _one_error_line(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), lines[0]


def test_generate_without_libero_says_which_extra(monkeypatch, capsys, tmp_path):
    from flowvla.recipes.generate import main

    _hide_libero(monkeypatch)
    assert main(["--out", str(tmp_path), "--tasks", "0", "--demos-per-task", "1", "--no-progress"]) == 2
    _one_error_line(capsys.readouterr().err, "flowvla-generate: error:", 'pip install "flowvla[libero]"')


def test_eval_example_without_libero_says_which_extra(monkeypatch, capsys, tmp_path):
    import runpy

    from tests.test_commands import ROOT

    _hide_libero(monkeypatch)
    example = runpy.run_path(str(ROOT / "examples" / "libero_eval.py"))
    args = ["--tasks", "0", "--init-states", "1", "--video", "none", "--out", str(tmp_path)]
    assert example["main"](args) == 2
    _one_error_line(capsys.readouterr().err, "libero_eval.py: error:", 'pip install -e ".[libero]"')


def test_diagnose_without_a_batch_file(capsys, tmp_path):
    from flowvla.diagnostics import main

    assert main(["--policy", str(tmp_path), "--batch", str(tmp_path / "batch.pt")]) == 2
    _one_error_line(capsys.readouterr().err, "flowvla-diagnose: error: --batch")
