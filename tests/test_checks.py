import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowvla.checks import check_nonnegative
from flowvla.recipes.libero import preset


@given(st.floats(min_value=0, allow_infinity=False) | st.integers(min_value=0))
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
