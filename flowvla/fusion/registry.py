"""Fusion modules by name, so a config string (``"gated"``) picks one."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flowvla.fusion.base import Fusion
from flowvla.fusion.global_broadcast import GlobalBroadcastFusion
from flowvla.fusion.region_attention import RegionCrossAttentionFusion
from flowvla.fusion.token_aligned import TokenAlignedFusion

__all__ = ["FUSIONS", "create_fusion", "get_fusion_class"]

#: Registered names: the class and the keyword arguments the name implies.
FUSIONS: dict[str, tuple[type[Fusion], dict[str, Any]]] = {
    "global": (GlobalBroadcastFusion, {}),
    "add": (TokenAlignedFusion, {"mode": "add"}),
    "concat": (TokenAlignedFusion, {"mode": "concat"}),
    "gated": (TokenAlignedFusion, {"mode": "gated"}),
    "region": (RegionCrossAttentionFusion, {}),
}


def get_fusion_class(name: str) -> Callable[..., Fusion]:
    """The class registered as ``name``, with the keyword arguments the name implies bound
    (``"gated"``: ``TokenAlignedFusion`` with ``mode="gated"``)."""
    if name not in FUSIONS:
        raise KeyError(f"unknown fusion {name!r}; registered: {sorted(FUSIONS)}")
    cls, implied = FUSIONS[name]
    return functools.partial(cls, **implied) if implied else cls


def create_fusion(name: str, dim: int, geo_dim: int, **kwargs: Any) -> Fusion:
    """Build a registered fusion: ``create_fusion("region", 1024, 256, grid_size=(16, 16), num_views=2)``.

    Args:
        name: a key of ``FUSIONS``.
        dim: width ``D2`` of the 2D tokens.
        geo_dim: width ``D3`` of the 3D tokens.
        **kwargs: further constructor arguments (``grid_size`` and ``num_views`` for ``"region"``).
    """
    if name not in FUSIONS:
        raise KeyError(f"unknown fusion {name!r}; registered: {sorted(FUSIONS)}")
    cls, implied = FUSIONS[name]
    return cls(dim, geo_dim, **{**implied, **kwargs})
