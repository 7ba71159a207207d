"""Layer routers: layer rules, weight simplex/sparsity, masking, cost (layers touched), gradients."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowvla.dit import FlowActionHead
from flowvla.routing import (
    FixedLayerRouter,
    SampleGatedRouter,
    ScalarMixRouter,
    TopKRouter,
    mix_layers,
    select_layers,
    spread_over_blocks,
)
from flowvla.typing import TypeCheckError
from tests.dit.helpers import randomize_


def _hidden(L, B, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    # deeper layers larger, as in real LMs
    return [torch.randn(B, T, D, generator=g) * (1 + layer) for layer in range(L)]


def _mask(B, T, data):
    valid = data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    return torch.arange(T)[None] < torch.tensor(valid)[:, None]


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("last", [5]),
        ("first", [0]),
        ("all", [0, 1, 2, 3, 4, 5]),
        ("last:2", [4, 5]),
        ("first:3", [0, 1, 2]),
        ("every:2", [1, 3, 5]),
        ("every:4", [1, 5]),
        (-2, [4]),
        ([0, -1], [0, 5]),
    ],
)
def test_select_layers_rules(rule, expected):
    assert select_layers(rule, 6) == expected


@pytest.mark.parametrize("rule", [6, -7, [0, 9], "last:0", "last:7", "middle", []])
def test_select_layers_rejects_bad_rules_naming_layers(rule):
    with pytest.raises(ValueError, match="layers"):
        select_layers(rule, 6)


def test_spread_over_blocks_covers_the_seed_gr00t_and_layerwise_rules():
    one_per_block = spread_over_blocks([0, 1, 2, 3], 4, 4)
    assert torch.equal(one_per_block, torch.eye(4))  # starVLA layerwise: block i reads layer i
    shared = spread_over_blocks([2], 4, 3)
    assert torch.equal(shared, torch.tensor([[0.0, 0, 1, 0]] * 3))  # GR00T: one layer for all blocks
    grouped = spread_over_blocks([0, 1, 2, 3], 4, 2)  # more layers than blocks: averaged in groups
    assert torch.equal(grouped, torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]))
    fewer = spread_over_blocks([0, 3], 4, 4)  # fewer layers than blocks: consecutive blocks share
    assert fewer.argmax(-1).tolist() == [0, 0, 3, 3]


def _routers(L, K, D, k):
    return [
        FixedLayerRouter(L, K, "all"),
        ScalarMixRouter(L, K, temperature=0.7),
        SampleGatedRouter(L, K, D, hidden_dim=8),
        TopKRouter(L, K, D, k=k, hidden_dim=8),
    ]


@given(
    L=st.integers(1, 6),
    K=st.integers(1, 4),
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    train=st.booleans(),
    data=st.data(),
)
def test_weights_are_a_simplex_and_top_k_is_exactly_k_sparse(L, K, B, T, train, data):
    D = 8
    torch.manual_seed(0)  # noisy gating draws from the global RNG in training mode
    k = data.draw(st.integers(1, L))
    hidden, mask = _hidden(L, B, T, D), _mask(B, T, data)
    for router in _routers(L, K, D, k):
        randomize_(router, std=1.0).train(train)
        out = router(hidden, mask)
        assert len(out.contexts) == K and all(c.shape == (B, T, D) for c in out.contexts)
        assert out.weights.shape == (B, K, L)
        assert (out.weights >= 0).all()
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(B, K))
        assert out.aux_loss.shape == () and torch.isfinite(out.aux_loss)
        if isinstance(router, TopKRouter):
            assert ((out.weights > 0).sum(-1) == k).all()


def test_top_k_keeps_k_layers_when_the_softmax_underflows():
    router = TopKRouter(4, 1, 8, k=2, hidden_dim=8, noisy=False).eval()
    with torch.no_grad():
        router.gate.mlp[-1].bias.view(2, 1, 4)[0, 0] = torch.tensor([0.0, 200.0, -5.0, -9.0])
    weights = router(_hidden(4, 2, 3, 8)).weights
    assert ((weights > 0).sum(-1) == 2).all() and torch.allclose(weights.sum(-1), torch.ones(2, 1))


@given(L=st.integers(2, 5), B=st.integers(1, 3), T=st.integers(2, 6), data=st.data())
def test_padding_does_not_change_routing_or_valid_context_tokens(L, B, T, data):
    D, K = 8, 3
    hidden, mask = _hidden(L, B, T, D), _mask(B, T, data)
    garbage = [torch.where(mask[..., None], h, torch.tensor(float("nan"))) for h in hidden]
    for router in _routers(L, K, D, 2):
        randomize_(router, std=1.0).eval()
        a, b = router(hidden, mask), router(garbage, mask)
        assert torch.equal(a.weights, b.weights)
        for ca, cb in zip(a.contexts, b.contexts, strict=True):
            assert torch.equal(ca[mask], cb[mask])


def test_stacked_and_sequence_hidden_states_agree():
    hidden = _hidden(4, 2, 3, 8)
    for router in _routers(4, 3, 8, 2):
        randomize_(router).eval()
        a, b = router(hidden), router(torch.stack(hidden))
        assert torch.equal(a.weights, b.weights)
        assert all(torch.equal(x, y) for x, y in zip(a.contexts, b.contexts, strict=True))


def test_fixed_router_passes_layers_through_without_copying():
    hidden = _hidden(6, 2, 3, 8)
    out = FixedLayerRouter(6, 4, [1, 4])(hidden)
    assert [c is hidden[i] for c, i in zip(out.contexts, [1, 1, 4, 4], strict=True)] == [True] * 4


def test_top_k_router_computes_only_with_the_layers_it_uses():
    """Unused layers replaced by NaN leave the contexts bitwise unchanged: a dense mix with zero
    weights would turn them into NaN, so the router never does arithmetic on them."""
    L, K, k = 12, 3, 2
    router = randomize_(TopKRouter(L, K, 8, k=k, hidden_dim=8), std=1.0).eval()
    hidden = _hidden(L, 1, 4, 8)
    out = router(hidden)
    used = set((out.weights[0] > 0).any(0).nonzero().flatten().tolist()) | set(router.probe)
    assert len(used) <= K * k + 1 < L
    poisoned = [h if i in used else torch.full_like(h, float("nan")) for i, h in enumerate(hidden)]
    again = router(poisoned)
    assert all(torch.equal(a, b) for a, b in zip(out.contexts, again.contexts, strict=True))


def test_mix_layers_matches_a_dense_weighted_sum():
    hidden = _hidden(5, 3, 4, 6)
    w = torch.softmax(torch.randn(3, 5), -1)
    w[:, 2] = 0
    dense = torch.einsum("bl,lbtd->btd", w, torch.stack(hidden))
    torch.testing.assert_close(mix_layers(hidden, w), dense)


def test_scalar_mix_with_a_sharp_preference_returns_that_layer():
    hidden = _hidden(4, 2, 3, 8)
    router = ScalarMixRouter(4, 2, temperature=0.01, normalize=False)
    with torch.no_grad():
        router.logits.copy_(torch.tensor([[0.0, 0, 1, 0], [1.0, 0, 0, 0]]))
    out = router(hidden)
    torch.testing.assert_close(out.contexts[0], hidden[2])
    torch.testing.assert_close(out.contexts[1], hidden[0])


@pytest.mark.parametrize("make", [ScalarMixRouter, SampleGatedRouter, TopKRouter])
def test_gradients_reach_every_router_parameter_through_the_head(make):
    L, B, T, D = 4, 3, 5, 8
    router = make(L, 2) if make is ScalarMixRouter else make(L, 2, D, hidden_dim=8)
    head = randomize_(FlowActionHead(3, 4, D, dim=16, depth=2, num_heads=2))
    params = list(router.parameters())
    opt = torch.optim.Adam(params, 1e-2)
    hidden, mask = _hidden(L, B, T, D), torch.ones(B, T, dtype=torch.bool)
    for _ in range(2):  # the gate's zero-initialised output layer opens after one step
        opt.zero_grad()
        routed = router(hidden, mask)
        (head.loss(torch.randn(B, 4, 3), routed.contexts, mask).loss + routed.aux_loss).backward()
        opt.step()
    missing = [n for n, p in router.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_load_balancing_loss_penalises_collapse_and_training_on_it_spreads_the_load():
    L, K, D = 4, 2, 8
    router = TopKRouter(L, K, D, k=1, hidden_dim=16, noisy=False)
    with torch.no_grad():  # collapse: every sample and block prefers layer 0
        router.gate.mlp[-1].bias.view(2, K, L)[0, :, 0] = 5.0
    hidden = _hidden(L, 16, 4, D, seed=1)
    collapsed = router(hidden).aux_loss.item()
    assert collapsed > 0.9 * L  # ~ m when all load and probability sit on one layer
    opt = torch.optim.Adam(router.parameters(), 5e-2)
    for _ in range(60):
        opt.zero_grad()
        router(hidden).aux_loss.backward()
        opt.step()
    weights = router(hidden).weights
    assert router(hidden).aux_loss.item() < 0.5 * collapsed
    assert (weights > 0).any(0).sum(-1).min() >= 2  # each block now routes to several layers


def test_noisy_gating_explores_in_training_and_is_deterministic_in_eval():
    router = randomize_(TopKRouter(6, 2, 8, k=2, hidden_dim=8), std=0.5)
    hidden = _hidden(6, 8, 3, 8)
    router.train()
    torch.manual_seed(0)
    a = router(hidden).weights
    b = router(hidden).weights
    assert not torch.equal(a, b)
    router.eval()
    assert torch.equal(router(hidden).weights, router(hidden).weights)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: TopKRouter(4, 2, 8, k=5), "k"),
        (lambda: ScalarMixRouter(4, 2, temperature=0.0), "temperature"),
        (lambda: FixedLayerRouter(4, 2, 4), "layers"),
        (lambda: FixedLayerRouter(0, 2), "num_layers"),
    ],
)
def test_bad_router_construction_names_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_wrong_hidden_states_raise_errors_naming_the_argument():
    router = ScalarMixRouter(4, 2)
    with pytest.raises(ValueError, match="hidden_states"):
        router(_hidden(3, 2, 3, 8))
    with pytest.raises(TypeCheckError, match="mask"):
        router(_hidden(4, 2, 3, 8), torch.ones(2, 5, dtype=torch.bool))
