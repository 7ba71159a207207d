"""Embeddings, attention and the DiT block: identity at init, relative positions, masking."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.dit import (
    CrossAttention,
    DiTBlock,
    RotaryEmbedding,
    SelfAttention,
    TimestepEmbedder,
    apply_rotary,
    make_mlp,
    sinusoidal_embedding,
)
from flowvla.typing import TypeCheckError
from tests.dit.helpers import randomize_


def test_sinusoidal_embedding_is_bounded_and_separates_times():
    t = torch.linspace(0, 1, 101)
    emb = sinusoidal_embedding(t, 64)
    assert emb.shape == (101, 64) and emb.abs().max() <= 1.0
    # distinct times get distinct features, neighbours are closer than far-apart times
    d = torch.cdist(emb, emb)
    assert d[0, 1] > 0 and d[0, 1] < d[0, 100]


def test_sinusoidal_embedding_rejects_odd_dim():
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_embedding(torch.zeros(2), 7)


def test_timestep_embedder_any_leading_shape():
    emb = TimestepEmbedder(8, frequency_dim=16)
    assert emb(torch.rand(3, 2)).shape == (3, 2, 8)
    assert emb(torch.rand(())).shape == (8,)


@given(i=st.integers(0, 30), j=st.integers(0, 30), shift=st.integers(0, 30))
def test_rotary_scores_depend_only_on_relative_position(i, j, shift):
    rope = RotaryEmbedding(8)
    cos, sin = rope(64)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 8, generator=g, dtype=torch.float32)

    def score(a, b):
        qa = apply_rotary(q[None], cos[a : a + 1], sin[a : a + 1])
        kb = apply_rotary(k[None], cos[b : b + 1], sin[b : b + 1])
        return float((qa * kb).sum())

    assert score(i, j) == pytest.approx(score(i + shift, j + shift), abs=1e-4)


def test_rotary_preserves_norm():
    cos, sin = RotaryEmbedding(16)(10)
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


@pytest.mark.parametrize("kind", ["gelu", "swiglu"])
def test_mlp_kinds_have_comparable_size(kind):
    mlp = make_mlp(kind, 48, 4.0)
    assert mlp(torch.randn(2, 5, 48)).shape == (2, 5, 48)
    n = sum(p.numel() for p in mlp.parameters())
    assert 0.9 < n / (2 * 48 * 192) < 1.15
    with pytest.raises(ValueError, match="mlp"):
        make_mlp("relu", 8, 4.0)


@given(
    r=st.integers(1, 3),
    b=st.integers(1, 3),
    n=st.integers(1, 6),
    t=st.integers(1, 5),
    kind=st.sampled_from([(True, True), (True, False), (False, True)]),
    mlp=st.sampled_from(["gelu", "swiglu"]),
)
def test_fresh_block_is_the_identity(r, b, n, t, kind, mlp):
    self_attn, cross = kind
    block = DiTBlock(16, 4, context_dim=6 if cross else None, self_attention=self_attn, mlp=mlp)
    x, cond = torch.randn(r, b, n, 16), torch.randn(r, b, 16)
    kv = block.cross_attn.project_context(torch.randn(b, t, 6)) if cross else None
    assert torch.equal(block(x, cond, kv), x)


def test_block_requires_kv_exactly_when_it_cross_attends():
    cross = DiTBlock(8, 2, context_dim=4)
    self_only = DiTBlock(8, 2)
    x, c = torch.randn(1, 1, 3, 8), torch.randn(1, 1, 8)
    with pytest.raises(ValueError, match="kv"):
        cross(x, c)
    with pytest.raises(ValueError, match="kv"):
        self_only(x, c, cross.cross_attn.project_context(torch.randn(1, 2, 4)))


def test_block_rejects_wrong_cond_shape_naming_it():
    block = DiTBlock(8, 2)
    with pytest.raises(TypeCheckError, match="cond"):
        block(torch.randn(1, 2, 3, 8), torch.randn(1, 3, 8))


@given(b=st.integers(1, 3), n=st.integers(1, 4), t=st.integers(2, 6), data=st.data())
def test_cross_attention_ignores_padded_tokens(b, n, t, data):
    attn = randomize_(CrossAttention(8, 5, 2))
    valid = data.draw(st.integers(1, t - 1))
    ctx = torch.randn(b, t, 5)
    mask = torch.arange(t) < valid
    mask = mask.expand(b, t)
    x = torch.randn(b, n, 8)
    full = attn(x, attn.project_context(ctx), mask)
    truncated = attn(x, attn.project_context(ctx[:, :valid]))
    torch.testing.assert_close(full, truncated, rtol=1e-5, atol=1e-6)


def test_self_attention_with_rope_is_permutation_sensitive_without_it_equivariant():
    attn = randomize_(SelfAttention(8, 2))
    x = torch.randn(2, 5, 8)
    perm = torch.tensor([3, 1, 4, 0, 2])
    torch.testing.assert_close(attn(x)[:, perm], attn(x[:, perm]), rtol=1e-5, atol=1e-6)
    cos, sin = RotaryEmbedding(4)(5)
    assert not torch.allclose(attn(x, (cos, sin))[:, perm], attn(x[:, perm], (cos, sin)), atol=1e-4)


def test_cross_attention_rejects_wrong_context_width_naming_it():
    attn = CrossAttention(8, 5, 2)
    with pytest.raises(ValueError, match="context"):
        attn.project_context(torch.randn(1, 3, 6))
