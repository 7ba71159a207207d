"""The head and routers on a GPU: agreement with the CPU, cache equality, masking under bf16.

Skipped without CUDA (CI has none); run on a GPU machine with ``python -m pytest tests/dit/test_cuda.py``.
"""

import pytest
import torch

from flowvla.routing import ScalarMixRouter, TopKRouter
from tests.dit.helpers import randomize_, tiny_head

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _case(head, device, dtype=torch.float32, b=3, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, b, head.horizon, head.action_dim, generator=g)
    tt = torch.rand(2, b, generator=g)
    ctx = torch.randn(b, t, head.context_dim, generator=g)
    mask = torch.arange(t)[None] < torch.tensor([t, 3, 1][:b])[:, None]
    state = torch.randn(b, head.state_dim, generator=g)
    return [
        v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        for v in (x, tt, ctx, mask, state)
    ]


def _head(**kwargs):
    opts = dict(
        depth=4, block_pattern="interleaved", state_dim=5, state_conditioning="both", num_future_tokens=3
    )
    opts.update(kwargs)
    return randomize_(tiny_head(dim=64, num_heads=4, **opts)).eval()


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_cuda_matches_cpu_in_float32(positions):
    head = _head(positions=positions)
    cpu = head(*_case(head, "cpu"))
    gpu_head = head.to("cuda")
    x, tt, ctx, mask, state = _case(head, "cuda")
    torch.testing.assert_close(gpu_head(x, tt, ctx, mask, state).cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_cache_and_masking_are_exact(dtype):
    head = _head().to(device="cuda", dtype=dtype)
    x, tt, ctx, mask, state = _case(head, "cuda", dtype)
    v = head(x, tt, ctx, mask, state)
    assert torch.equal(v, head(x, tt, state=state, cache=head.encode_context(ctx, mask)))
    garbage = ctx.masked_fill(~mask[..., None], float("nan"))
    assert torch.equal(v, head(x, tt, garbage, mask, state))
    assert torch.isfinite(v).all() and v.dtype == dtype


def test_cuda_autocast_bf16_is_close_to_float32():
    head = _head().to("cuda")
    x, tt, ctx, mask, state = _case(head, "cuda")
    ref = head(x, tt, ctx, mask, state)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = head(x, tt, ctx, mask, state)
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_cuda_sampling_is_seeded_and_training_steps_run():
    head = _head().to("cuda")
    _, _, ctx, mask, state = _case(head, "cuda")
    draw = lambda: head.sample(
        ctx, mask, state, solver="midpoint", steps=4, generator=torch.Generator("cuda").manual_seed(3)
    )
    assert torch.equal(draw(), draw())
    head.train()
    opt = torch.optim.AdamW(head.parameters(), 1e-3)
    actions = torch.randn(3, head.horizon, head.action_dim, device="cuda")
    for _ in range(3):
        loss = head.loss(actions, ctx, mask, state).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_cuda_routers_keep_their_guarantees():
    hidden = [torch.randn(4, 6, 32, device="cuda") for _ in range(5)]
    mask = torch.ones(4, 6, dtype=torch.bool, device="cuda")
    mask[0, 3:] = False
    for router in (ScalarMixRouter(5, 3), TopKRouter(5, 3, 32, k=2, hidden_dim=16)):
        out = randomize_(router, std=1.0).to("cuda").eval()(hidden, mask)
        torch.testing.assert_close(out.weights.sum(-1), torch.ones(4, 3, device="cuda"))
        if isinstance(router, TopKRouter):
            assert ((out.weights > 0).sum(-1) == 2).all()
