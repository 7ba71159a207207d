import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.checks import check_nonnegative
from flowvla.recipes.libero import preset


@given(st.floats(min_value=0, allow_infinity=False) | st.integers(min_value=0, max_value=2**53))
def test_finite_nonnegative_numbers_pass_unchanged(value):
    out = check_nonnegative("x", value)
    assert isinstance(out, float) and out == value


def test_numpy_scalars_are_numbers_too():
    assert check_nonnegative("x", np.float32(0.25)) == 0.25 and check_nonnegative("x", np.int64(3)) == 3.0


@given(
    st.floats(max_value=-1e-300)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.integers(max_value=-1)
)
def test_negative_nan_and_infinite_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^radius: must be a finite number >= 0 \(metres\), got "):
        check_nonnegative("radius", value, "metres")


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1]])
def test_non_numbers_are_refused_by_name(value):
    with pytest.raises(ValueError, match=r"^scale: must be a finite number >= 0"):
        check_nonnegative("scale", value)


def test_a_nan_noise_level_no_longer_passes_the_recipe():
    # `nan < 0` is false: the old check let it through into every demonstration.
    with pytest.raises(ValueError, match=r"^action_noise \(data.action_noise\): must be a finite number"):
        preset("default", action_noise=math.nan)


# ------------------------------------------------------------------------------- config fields
import dataclasses  # noqa: E402

from flowvla.checks import SettingError, check_fields, setting  # noqa: E402


@dataclasses.dataclass
class _Toy:
    rate: float = setting(0.5, gt=0, le=1)
    count: int = setting(1, ge=1)
    names: list[str] = dataclasses.field(default_factory=lambda: ["a"])
    pair: tuple[float, float] = (0.0, 1.0)
    limit: int | None = None
    mode: str = setting("x", choices=("x", "y"))

    def __post_init__(self):
        check_fields(self, "toy")


@given(st.integers(1, 10**6), st.floats(1e-6, 1.0))
def test_well_typed_values_pass_and_ints_become_floats(count, rate):
    toy = _Toy(rate=int(rate) or rate, count=count, pair=[1, 2])
    assert isinstance(toy.rate, float) and toy.count == count and toy.pair == (1.0, 2.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rate": "abc"}, "toy.rate: expected a float, got 'abc'"),
        ({"rate": True}, "toy.rate: expected a float, got True"),
        ({"rate": 0.0}, "toy.rate: must be > 0, got 0.0"),
        ({"rate": math.nan}, "toy.rate: must be a finite number, got nan"),
        ({"count": 2.0}, "toy.count: expected an integer, got 2.0"),
        ({"count": 0}, "toy.count: must be >= 1, got 0"),
        ({"names": "a"}, "toy.names: expected a list of strings, got 'a'"),
        ({"names": ["a", 1]}, "toy.names[1]: expected a string, got 1"),
        ({"pair": [1.0]}, "toy.pair: expected 2 values, got [1.0]"),
        ({"limit": "3"}, "toy.limit: expected an integer or null, got '3'"),
        ({"mode": "z"}, "toy.mode: choose one of ['x', 'y'], got 'z'"),
    ],
)
def test_a_bad_field_is_one_line_naming_its_path(kwargs, message):
    with pytest.raises(SettingError) as e:
        _Toy(**kwargs)
    assert str(e.value) == message and e.value.path.startswith("toy.")
