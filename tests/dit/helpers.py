"""Tiny heads for tests, and a way to leave the zero initialisation (which makes outputs trivially 0)."""

import torch

from flowvla.dit import FlowActionHead


def tiny_head(context_dim: int = 12, **kwargs) -> FlowActionHead:
    defaults = dict(action_dim=3, horizon=5, dim=16, depth=2, num_heads=2)
    defaults.update(kwargs)
    return FlowActionHead(context_dim=context_dim, **defaults)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised gates and outputs carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module
