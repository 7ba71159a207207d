"""The exponential moving average of the weights."""

import pytest
import torch

from flowvla.training import EMA


def test_update_follows_the_warmed_up_decay():
    net = torch.nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # frozen parameters are not averaged
    ema = EMA(net, decay=0.99)
    assert ema.names == ["weight"]
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    ema.update()
    assert torch.allclose(ema.shadow[0], w0 + 0.9)
    for _ in range(1000):
        ema.update()
    assert ema.current_decay() == pytest.approx(0.99)
    assert torch.allclose(ema.shadow[0], net.weight, atol=1e-6)


def test_applied_swaps_in_the_average_and_restores():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.5)
    raw = net.weight.detach().clone()
    ema.shadow[0].fill_(7.0)
    with ema.applied():
        assert torch.all(net.weight == 7.0)
    assert torch.equal(net.weight, raw)


def test_full_state_dict_round_trips():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.9)
    ema.update()
    state = ema.full_state_dict()
    other = EMA(torch.nn.Linear(3, 2), decay=0.9)
    other.load_full_state_dict(state, updates=ema.updates)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, other.shadow, strict=True))
    assert other.updates == 1
    with pytest.raises(ValueError, match="no averaged weights"):
        other.load_full_state_dict({}, updates=0)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)
