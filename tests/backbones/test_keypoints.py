"""SpatialSoftmax: keypoints are expected cell centres, follow what they respond to, and stay in [-1, 1]."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.backbones.keypoints import SpatialSoftmax
from flowvla.typing import TypeCheckError


def _one_hot_map(rows: int, cols: int, cell: tuple[int, int], dim: int = 4, height: float = 50.0):
    """Tokens ``[1, N, D]`` that are zero except feature 0 at ``cell``."""
    tokens = torch.zeros(1, rows * cols, dim)
    tokens[0, cell[0] * cols + cell[1], 0] = height
    return tokens


def _detector(rows: int, cols: int, dim: int = 4) -> SpatialSoftmax:
    """One keypoint that responds to feature 0 only."""
    kp = SpatialSoftmax((rows, cols), dim, 1)
    with torch.no_grad():
        kp.proj.weight.zero_()
        kp.proj.weight[0, 0] = 1.0
        kp.proj.bias.zero_()
    return kp


@settings(deadline=None, max_examples=25)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    k=st.integers(1, 5),
    b=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_shape_and_range(rows, cols, k, b, seed):
    g = torch.Generator().manual_seed(seed)
    kp = SpatialSoftmax((rows, cols), 8, k)
    out = kp(torch.randn(b, rows * cols, 8, generator=g) * 10)
    assert out.shape == (b, k, 2)
    # Convex combinations of cell centres: inside the outermost centres, hence inside [-1, 1].
    assert out[..., 0].abs().max() <= 1 - 1 / cols + 1e-5
    assert out[..., 1].abs().max() <= 1 - 1 / rows + 1e-5


@settings(deadline=None, max_examples=20)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), data=st.data())
def test_a_peaked_map_gives_that_cells_centre(rows, cols, data):
    r = data.draw(st.integers(0, rows - 1))
    c = data.draw(st.integers(0, cols - 1))
    point = _detector(rows, cols)(_one_hot_map(rows, cols, (r, c)))[0, 0]
    expected = torch.tensor([(c + 0.5) / cols * 2 - 1, (r + 0.5) / rows * 2 - 1])
    torch.testing.assert_close(point, expected, atol=1e-4, rtol=0)


def test_x_is_columns_and_y_is_rows():
    kp = _detector(3, 5)
    left, right = kp(_one_hot_map(3, 5, (1, 0))), kp(_one_hot_map(3, 5, (1, 4)))
    top, bottom = kp(_one_hot_map(3, 5, (0, 2))), kp(_one_hot_map(3, 5, (2, 2)))
    assert right[0, 0, 0] > left[0, 0, 0] and torch.isclose(right[0, 0, 1], left[0, 0, 1])
    assert bottom[0, 0, 1] > top[0, 0, 1] and torch.isclose(bottom[0, 0, 0], top[0, 0, 0])


def test_moving_the_feature_by_one_cell_moves_the_keypoint_by_one_cell():
    rows, cols = 4, 6
    kp = _detector(rows, cols)
    for r in range(rows):
        for c in range(cols - 1):
            a, b = kp(_one_hot_map(rows, cols, (r, c))), kp(_one_hot_map(rows, cols, (r, c + 1)))
            torch.testing.assert_close(b - a, torch.tensor([[[2 / cols, 0.0]]]), atol=1e-4, rtol=0)


def test_a_uniform_map_gives_the_centre():
    kp = SpatialSoftmax((3, 4), 5, 2)
    out = kp(torch.ones(2, 12, 5))
    torch.testing.assert_close(out, torch.zeros(2, 2, 2), atol=1e-6, rtol=0)


def test_gradients_reach_the_features_projection_and_temperature():
    kp = SpatialSoftmax((3, 3), 4, 2)
    x = torch.randn(2, 9, 4, requires_grad=True)
    kp(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert kp.proj.weight.grad.abs().sum() > 0 and kp.log_temperature.grad.abs() > 0


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="grid_size"):
        SpatialSoftmax((0, 3), 4, 2)
    with pytest.raises(ValueError, match="num_keypoints"):
        SpatialSoftmax((3, 3), 4, 0)
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftmax((3, 3), 4, 2, temperature=0)
    kp = SpatialSoftmax((3, 3), 4, 2)
    with pytest.raises(ValueError, match="tokens: 8 grid cells, expected 9"):
        kp(torch.randn(1, 8, 4))
    with pytest.raises(TypeCheckError, match="tokens"):
        kp(torch.randn(8, 4))
