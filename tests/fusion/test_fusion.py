"""Fusion modules: permutation properties, masking, zero init, locality, gradients, shape errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla import geometry as geo
from flowvla.fusion import (
    FUSIONS,
    Fusion,
    GlobalBroadcastFusion,
    RegionCrossAttentionFusion,
    TokenAlignedFusion,
    create_fusion,
    window_index,
)
from flowvla.typing import TypeCheckError

D2, D3 = 16, 8
TOKEN_ALIGNED = ["add", "concat", "gated"]


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial parameters (zero-init gates and biases would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def inputs(seed: int, b: int = 2, t: int = 12, p_valid: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, D2, generator=g, dtype=torch.float64)
    y = torch.randn(b, t, D3, generator=g, dtype=torch.float64)
    return x, y, torch.rand(b, t, generator=g) < p_valid


def build(name: str, seed: int, views: int = 2, grid: tuple[int, int] = (2, 3), **kw) -> Fusion:
    extra = {"grid_size": grid, "num_views": views, "num_heads": 2, **kw} if name == "region" else {}
    torch.manual_seed(seed)
    return randomise(create_fusion(name, D2, D3, **extra), seed).double()


@pytest.mark.parametrize("name", TOKEN_ALIGNED)
@given(seed=st.integers(0, 2**31 - 1))
def test_token_aligned_fusion_is_permutation_equivariant(name, seed):
    fusion = build(name, seed)
    x, y, m = inputs(seed)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))
    out = fusion(x, y, m)
    torch.testing.assert_close(fusion(x[:, perm], y[:, perm], m[:, perm]), out[:, perm])
    # Token t's output depends on token t alone: change another token, t is unchanged.
    x2, y2 = x.clone(), y.clone()
    x2[:, 0], y2[:, 0] = 7.0, -3.0
    torch.testing.assert_close(fusion(x2, y2, m)[:, 1:], out[:, 1:])


@given(seed=st.integers(0, 2**31 - 1))
def test_global_fusion_ignores_the_order_of_3d_tokens(seed):
    fusion = build("global", seed)
    x, y, m = inputs(seed)
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(seed))
    out = fusion(x, y, m)
    torch.testing.assert_close(fusion(x, y[:, perm], m[:, perm]), out)
    # Every token gets the same summary: permuting the 2D tokens permutes the output.
    torch.testing.assert_close(fusion(x[:, perm], y, m), out[:, perm])


@pytest.mark.parametrize("name", list(FUSIONS))
@given(seed=st.integers(0, 2**31 - 1), poison=st.sampled_from([0.0, 1e6, math.nan, math.inf]))
def test_masked_3d_tokens_never_reach_the_output(name, seed, poison):
    fusion = build(name, seed)
    x, y, m = inputs(seed)
    y2 = y.clone()
    y2[~m] = poison
    out = fusion(x, y2, m)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, fusion(x, y, m))
    # No mask means all valid.
    torch.testing.assert_close(fusion(x, y), fusion(x, y, torch.ones_like(m)))


def test_zero_init_gated_fusion_is_the_identity_exactly():
    torch.manual_seed(0)
    fusion = TokenAlignedFusion(D2, D3, mode="gated")
    x, y, m = (t.float() if t.is_floating_point() else t for t in inputs(0))
    assert torch.equal(fusion(x, y * 100, m), x)
    assert torch.equal(TokenAlignedFusion(D2, D3, mode="concat")(x, torch.zeros_like(y)), x)


@pytest.mark.parametrize("name", list(FUSIONS))
def test_gradients_reach_the_geometry_encoder(name):
    torch.manual_seed(0)
    enc = geo.MLPPositionEncoder(D3, img_size=24, patch_size=8)  # 3 x 3 patches
    fusion = create_fusion(
        name, D2, D3, **({"grid_size": (3, 3), "num_views": 2} if name == "region" else {})
    )
    depth = 1 + torch.rand(2, 2, 12, 12)
    depth[0, 0, :4, :4] = 0.0  # one invalid patch
    pm = geo.point_map_from_depth(depth, geo.intrinsics_from_fovy(60.0, 12, 12).expand(2, 2, 3, 3))
    x = torch.randn(2, 18, D2)
    opt = torch.optim.SGD([*enc.parameters(), *fusion.parameters()], lr=0.1)
    # A gate that starts as the exact identity cannot pass a gradient to the geometry on step 0 (the
    # output does not depend on it yet); one update of the zero-init value projection opens it.
    for _ in range(2 if name == "gated" else 1):
        opt.zero_grad()
        geo_tokens = enc(pm.points, pm.valid)
        fusion(x, geo_tokens.tokens, geo_tokens.mask).sin().sum().backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def dense_reference(fusion: RegionCrossAttentionFusion, x, y, m):
    """The same attention with a dense T x T mask built from the window definition."""
    t = x.shape[1]
    h = fusion.num_heads
    allowed = torch.zeros(t, t + 1, dtype=torch.bool)
    bias = torch.zeros(h, t, t + 1, dtype=x.dtype)
    rows = torch.arange(t)[:, None].expand_as(fusion.index)
    allowed[rows, fusion.index] = True
    bias[:, rows, fusion.index] = fusion.rel_bias[:, fusion.slot][:, None, :].expand(-1, t, -1)
    allowed, bias = allowed[:, :t], bias[..., :t]
    y = torch.where(m[..., None], y, 0.0)
    q = fusion.q(fusion.norm(x)).unflatten(-1, (h, -1)).transpose(1, 2)
    k, v = fusion.kv(fusion.geo_norm(y)).unflatten(-1, (2, h, -1)).permute(2, 0, 3, 1, 4)
    keep = allowed & m[:, None, None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    attn = scores.masked_fill(~keep, -math.inf).softmax(-1).nan_to_num(0.0)
    out = fusion.proj((attn @ v).transpose(1, 2).flatten(2))
    return x + out * keep.any(-1)[:, 0, :, None]


@given(
    seed=st.integers(0, 2**31 - 1),
    views=st.integers(1, 3),
    gh=st.integers(1, 4),
    gw=st.integers(1, 4),
    window=st.sampled_from([1, 3, 5]),
    cross_view=st.booleans(),
)
def test_region_attention_matches_a_dense_masked_reference(seed, views, gh, gw, window, cross_view):
    fusion = build("region", seed, views=views, grid=(gh, gw), window=window, cross_view=cross_view)
    x, y, m = inputs(seed, t=views * gh * gw, p_valid=0.6)
    torch.testing.assert_close(fusion(x, y, m), dense_reference(fusion, x, y, m))


def test_region_attention_is_local_and_keeps_2d_tokens_without_geometry():
    fusion = build("region", 0, views=2, grid=(4, 5), window=3)
    x, y, m = inputs(0, t=40, p_valid=1.0)
    out = fusion(x, y, m)
    y2 = y.clone()
    y2[:, 1 * 20 + 2 * 5 + 2] = torch.randn(2, D3, dtype=y.dtype)  # view 1, patch (2, 2)
    changed = (fusion(x, y2, m) - out).abs().amax((0, 2)) > 0
    grid = changed.reshape(2, 4, 5)
    assert not grid[0].any() and grid[1, 1:4, 1:4].all() and grid[1].sum() == 9
    # Across views, the same window in the other view changes too.
    xv = build("region", 0, views=2, grid=(4, 5), window=3, cross_view=True)
    changed = (xv(x, y2, m) - xv(x, y, m)).abs().amax((0, 2)).reshape(2, 4, 5) > 0
    assert changed[0, 1:4, 1:4].all() and changed.sum() == 18
    # A window without valid geometry leaves the 2D token exactly as it was.
    m0 = torch.ones_like(m)
    m0[:, 20:] = False  # view 1 has no geometry
    assert torch.equal(fusion(x, y, m0)[:, 20:], x[:, 20:])


def test_window_index_is_linear_in_tokens():
    index, slot = window_index(2, (16, 16), 3, cross_view=True)
    assert index.shape == (512, 18) and slot.tolist() == list(range(18))
    assert index[0, 4] == 0 and index[0, 9 + 4] == 256  # own patch, then the same patch in view 1
    assert (index[0, [0, 1, 2, 3, 6]] == 512).all()  # outside the grid
    with pytest.raises(ValueError, match="window"):
        window_index(1, (4, 4), 2)


def test_wrong_shapes_name_the_argument():
    fusion = GlobalBroadcastFusion(D2, D3)
    x, y, m = (t.float() if t.is_floating_point() else t for t in inputs(0))
    with pytest.raises(TypeCheckError, match="tokens_3d"):
        fusion(x, y[:, :5], m)
    with pytest.raises(TypeCheckError, match="mask"):
        fusion(x, y, m[:, :5])
    with pytest.raises(TypeCheckError, match="tokens_2d"):
        fusion(x[0], y, m)
    with pytest.raises(ValueError, match="tokens_3d"):
        fusion(x, torch.zeros(2, 12, D3 + 1), m)
    region = RegionCrossAttentionFusion(D2, D3, grid_size=(2, 2), num_views=2, num_heads=2)
    with pytest.raises(ValueError, match="tokens_2d: expected 8 tokens"):
        region(x, y, m)
    with pytest.raises(KeyError, match="unknown fusion"):
        create_fusion("nope", D2, D3)
    with pytest.raises(ValueError, match="mode"):
        TokenAlignedFusion(D2, D3, mode="mul")
