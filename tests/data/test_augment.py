"""Augmentations: geometry-aware crops/shifts keep K consistent with the pixels; jitter is sane."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.data.augment import ImageAugment


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """Float image whose channels are (column, row, 0.5) scaled into [0, 1]: a linear ramp."""
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([u / 255.0, v / 255.0, torch.full_like(u, 0.5)])[None]


@given(shift=st.integers(0, 6), scale=st.floats(0.5, 1.0), seed=st.integers(0, 10_000))
def test_crop_and_shift_update_intrinsics(shift, scale, seed):
    """After the augmentation, pixel p' of the new image shows the scene point that the old camera
    saw at p = K K'^-1 p': the ramp image tells which old pixel ended up where."""
    h, w = 40, 48
    img = coordinate_image(h, w)
    k = torch.tensor([[[50.0, 0, (w - 1) / 2], [0, 50.0, (h - 1) / 2], [0, 0, 1]]])
    aug = ImageAugment(shift=shift, crop_scale=scale)
    out, depth, k2 = aug(
        img, generator=torch.Generator().manual_seed(seed), depth=torch.ones(1, h, w), intrinsics=k
    )
    assert out.shape == img.shape and depth.shape == (1, h, w)
    m = k[0] @ torch.linalg.inv(k2[0])
    margin = shift + 2
    vv, uu = torch.meshgrid(torch.arange(margin, h - margin), torch.arange(margin, w - margin), indexing="ij")
    p2 = torch.stack([uu.flatten(), vv.flatten(), torch.ones(uu.numel())]).float()
    p = m @ p2
    inside = (p[0] >= 0) & (p[0] <= w - 1) & (p[1] >= 0) & (p[1] <= h - 1)
    got_u = out[0, 0, vv.flatten(), uu.flatten()] * 255.0
    got_v = out[0, 1, vv.flatten(), uu.flatten()] * 255.0
    assert torch.allclose(got_u[inside], p[0][inside], atol=0.05)
    assert torch.allclose(got_v[inside], p[1][inside], atol=0.05)


def test_identity_when_off_and_uint8_kept():
    img = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out, d, k = ImageAugment()(img)
    assert torch.equal(out, img) and d is None and k is None
    aug = ImageAugment(shift=2, crop_scale=0.8, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1)
    a1, _, _ = aug(img, generator=torch.Generator().manual_seed(3))
    a2, _, _ = aug(img, generator=torch.Generator().manual_seed(3))
    assert a1.dtype == torch.uint8 and a1.shape == img.shape and torch.equal(a1, a2)


def test_hue_rotation_keeps_grey_and_brightness_scales():
    grey = torch.full((1, 3, 4, 4), 0.4)
    out, _, _ = ImageAugment(hue=0.5)(grey, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, grey, atol=1e-5, rtol=0)
    img = torch.rand(1, 3, 4, 4) * 0.5
    out, _, _ = ImageAugment(brightness=0.5)(img, generator=torch.Generator().manual_seed(1))
    ratio = out / img
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-4)
    assert 0.5 <= float(ratio.flatten()[0]) <= 1.5


def test_per_view_false_uses_one_draw():
    img = coordinate_image(20, 20).repeat(3, 1, 1, 1)
    out, _, _ = ImageAugment(shift=4, per_view=False)(img, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


@pytest.mark.parametrize("kwargs", [{"shift": -1}, {"crop_scale": 0.0}, {"brightness": 1.5}, {"hue": 0.7}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ImageAugment(**kwargs)


def test_depth_needs_intrinsics():
    with pytest.raises(ValueError, match="together"):
        ImageAugment(shift=1)(torch.zeros(1, 3, 4, 4), depth=torch.zeros(1, 4, 4))


def test_shape_errors_are_typed():
    from flowvla.typing import TypeCheckError

    with pytest.raises(TypeCheckError):
        ImageAugment(shift=1)(torch.zeros(3, 4, 4))
    assert np.isfinite(0)
