"""Patch-grid pooling and the geometry encoders: alignment, masking, resolution independence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla import geometry as geo
from flowvla.typing import TypeCheckError


@given(
    seed=st.integers(0, 2**31 - 1),
    gh=st.integers(1, 5),
    gw=st.integers(1, 5),
    p=st.integers(1, 4),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
)
def test_pooling_conserves_mass_at_any_resolution(seed, gh, gw, p, h, w):
    # The grid covers the whole image, so the area-weighted mean of the patch means is the map's mean,
    # whether the dense map is finer, coarser or misaligned with the grid.
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(2, 1, h, w, 3, generator=g, dtype=torch.float64)
    grid = geo.PatchGrid((gh * p, gw * p), p)
    pooled, ok = geo.pool_to_patches(dense, grid)
    assert pooled.shape == (2, 1, gh * gw, 3) and ok.all()
    torch.testing.assert_close(pooled.mean(2), dense.mean((2, 3)))
    # A constant map pools to the constant; nearest-upsampling the map changes nothing.
    torch.testing.assert_close(geo.pool_to_patches(torch.ones_like(dense), grid)[0], torch.ones_like(pooled))
    up = dense.repeat_interleave(3, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(geo.pool_to_patches(up, grid)[0], pooled)


def test_pooling_equals_block_mean_and_drops_the_remainder_strip():
    dense = torch.randn(1, 2, 30, 20, 4)
    grid = geo.PatchGrid((30, 20), (8, 4))  # 3 x 5 patches; the last 6 rows are not seen by the ViT
    assert grid.grid_size == (3, 5) and grid.num_patches == 15
    pooled, _ = geo.pool_to_patches(dense, grid)
    block = dense[:, :, :24].reshape(1, 2, 3, 8, 5, 4, 4).mean((3, 5)).flatten(2, 3)
    torch.testing.assert_close(pooled, block)
    # Same image seen through a half-resolution map: same field of view, same patches.
    half = dense.reshape(1, 2, 15, 2, 10, 2, 4).mean((3, 5))
    torch.testing.assert_close(geo.pool_to_patches(half, grid)[0], block)


@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 3))
def test_sub_patch_samples_refine_the_patch_mean(seed, k):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(1, 2, 12, 18, 3, generator=g, dtype=torch.float64)
    grid = geo.PatchGrid((24, 36), 6)  # dense map at half the encoder resolution
    sub, ok = geo.sub_patch_samples(dense, grid, k=k)
    assert sub.shape == (1, 2, 24, k * k, 3) and ok.all()
    torch.testing.assert_close(sub.mean(3), geo.pool_to_patches(dense, grid)[0])
    # Sub-cell (1, 0) of patch (row 2, col 3) of view 1 is the mean of its own pixels.
    if k == 3:
        cell = dense[0, 1, 2 * 3 + 1, 3 * 3]  # 1 dense pixel per sub-cell at this resolution
        torch.testing.assert_close(sub[0, 1, 2 * 6 + 3, 1 * 3 + 0], cell)


def test_invalid_pixels_never_count():
    dense = torch.randn(1, 1, 8, 8, 3)
    valid = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    valid[0, 0, :4, :4] = False  # patch 0 fully invalid
    valid[0, 0, 4, 4] = False  # one pixel of patch 3
    grid = geo.PatchGrid(8, 4)
    pooled, ok = geo.pool_to_patches(dense, grid, valid)
    poisoned = dense.clone()
    poisoned[~valid] = torch.tensor([math.nan, math.inf, 1e30])
    again, ok2 = geo.pool_to_patches(poisoned, grid, valid)
    assert torch.equal(ok, torch.tensor([[[False, True, True, True]]])) and torch.equal(ok, ok2)
    torch.testing.assert_close(again, pooled)
    assert (pooled[0, 0, 0] == 0).all()
    m = valid[0, 0, 4:, 4:]
    torch.testing.assert_close(pooled[0, 0, 3], dense[0, 0, 4:, 4:][m].mean(0))
    # Non-finite values are invalid by default; a minimum valid fraction drops sparse patches.
    assert torch.equal(geo.pool_to_patches(poisoned, grid)[1], ok)
    assert not geo.pool_to_patches(dense, grid, valid, min_valid_fraction=0.95)[1][0, 0, 3]


def depth_scene(g, b=2, v=2, h=16, w=16):
    depth = 0.5 + 2 * torch.rand(b, v, h, w, generator=g)
    k = geo.intrinsics_from_fovy(60.0, h, w).expand(b, v, 3, 3)
    return depth, k


ENCODERS = {
    "fourier": lambda: geo.FourierPointEncoder(8, img_size=32, patch_size=8, hidden_dim=16),
    "mlp": lambda: geo.MLPPositionEncoder(8, img_size=32, patch_size=8, scale=2.0),
}


@pytest.mark.parametrize("name", list(ENCODERS))
@given(seed=st.integers(0, 2**31 - 1), bad=st.sampled_from([0.0, math.nan, math.inf, -1.0]))
def test_invalid_depth_patches_do_not_affect_other_tokens(name, seed, bad):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = ENCODERS[name]()
    depth, k = depth_scene(g)  # 16 x 16 depth for a 32 x 32 encoder input: 4 x 4 px per patch
    out = enc(*vars(geo.point_map_from_depth(depth, k)).values())
    hurt = depth.clone()
    hurt[1, 0, 4:8, 8:12] = bad  # all of patch (1, 2) of view 0 in sample 1
    hurt[0, 1, 0, 0] = bad  # one pixel of patch (0, 0) of view 1 in sample 0
    pm = geo.point_map_from_depth(hurt, k)
    out2 = enc(pm.points, pm.valid)
    assert out.tokens.shape == (2, 2 * 16, 8) and out.mask.all()
    dead = 1 * 4 + 2
    expected_mask = torch.ones(2, 32, dtype=torch.bool)
    expected_mask[1, dead] = False
    assert torch.equal(out2.mask, expected_mask) and (out2.tokens[1, dead] == 0).all()
    others = expected_mask.clone()
    others[0, 16] = False  # the partly invalid patch may change (its mean point moved)
    assert torch.isfinite(out2.tokens).all()
    torch.testing.assert_close(out2.tokens[others], out.tokens[others])


def test_tokens_follow_view_row_column_order():
    depth = torch.zeros(1, 2, 16, 24)
    depth[0, 1, 8:12, 20:24] = 1.0  # view 1, patch row 2, col 5 (4 x 6 grid of 4 px patches)
    k = geo.intrinsics_from_fovy(60.0, 16, 24).expand(1, 2, 3, 3)
    pm = geo.point_map_from_depth(depth, k)
    for enc in (
        geo.FourierPointEncoder(4, (16, 24), 4),
        geo.MLPPositionEncoder(4, (16, 24), 4),
        geo.DenseFeatureEncoder(3, 4, (16, 24), 4),
    ):
        out = enc(pm.points, pm.valid)
        assert out.tokens.shape == (1, 48, 4) and out.mask.nonzero().tolist() == [[0, 24 + 2 * 6 + 5]]


@given(seed=st.integers(0, 2**31 - 1))
def test_dense_features_resample_from_any_grid(seed):
    # MapAnything-like features at 12 x 12 for a 224 x 224 / 14 px ViT: the 16 x 16 grid gets
    # piecewise-constant samples; the same features on a 24 x 24 grid (nearest-upsampled) give the same.
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = geo.DenseFeatureEncoder(5, 16, 224, 14)
    feats = torch.randn(1, 2, 12, 12, 5, generator=g)
    conf = torch.rand(1, 2, 12, 12, generator=g) > 0.2
    out = enc(feats, conf)
    up = enc(
        feats.repeat_interleave(2, 2).repeat_interleave(2, 3),
        conf.repeat_interleave(2, 2).repeat_interleave(2, 3),
    )
    assert out.tokens.shape == (1, 512, 16)
    torch.testing.assert_close(out.tokens, up.tokens)
    assert torch.equal(out.mask, up.mask)


def test_fourier_features():
    x = torch.tensor([[0.25, -0.5]])
    f = geo.fourier_features(x, 3)
    assert f.shape == (1, 2 * 7)
    torch.testing.assert_close(f[0, :2], x[0])
    torch.testing.assert_close(
        f[0, 2:8], torch.sin(torch.tensor([1, 2, 4, 1, 2, 4]) * math.pi * x[0].repeat_interleave(3))
    )
    assert geo.fourier_features(x, 2, include_input=False).shape == (1, 8)


def test_fourier_encoder_matches_ego3d_sizes_and_gradients_flow():
    # Ego3D: 2 x 2 sub-points, 8 octaves -> 4 * 3 * 17 = 204 input features per patch.
    enc = geo.FourierPointEncoder(32, 224, 14)
    assert enc.mlp[0].in_features == 204
    depth = 1 + torch.rand(1, 1, 56, 56)
    pm = geo.point_map_from_depth(depth, geo.intrinsics_from_fovy(60.0, 56, 56).expand(1, 1, 3, 3))
    out = enc(pm.points, pm.valid)
    assert out.tokens.shape == (1, 256, 32)
    out.tokens.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_encoder_wrong_shapes_name_the_argument():
    enc = geo.MLPPositionEncoder(4, 16, 4)
    with pytest.raises(TypeCheckError, match="points"):
        enc(torch.zeros(1, 2, 8, 8, 2))
    with pytest.raises(TypeCheckError, match="valid"):
        enc(torch.zeros(1, 2, 8, 8, 3), torch.ones(1, 2, 8, 9, dtype=torch.bool))
    with pytest.raises(TypeCheckError, match="dense"):
        geo.pool_to_patches(torch.zeros(2, 8, 8, 3), geo.PatchGrid(16, 4))
    with pytest.raises(ValueError, match="patch_size"):
        geo.PatchGrid(8, 16)
