"""Routers by name, so a config string (``"scalar_mix"``) picks one:
[`get_router_class`][flowvla.routing.registry.get_router_class] returns the class,
[`create_router`][flowvla.routing.registry.create_router] builds one."""

from __future__ import annotations

from typing import Any

from flowvla.routing.base import LayerRouter
from flowvla.routing.fixed import FixedLayerRouter
from flowvla.routing.gated import SampleGatedRouter
from flowvla.routing.scalar_mix import ScalarMixRouter
from flowvla.routing.topk import TopKRouter

__all__ = ["ROUTERS", "create_router", "get_router_class"]

#: Registered names -> router classes.
ROUTERS: dict[str, type[LayerRouter]] = {
    "fixed": FixedLayerRouter,
    "scalar_mix": ScalarMixRouter,
    "sample_gated": SampleGatedRouter,
    "topk": TopKRouter,
}


def get_router_class(kind: str) -> type[LayerRouter]:
    """The router class registered as ``kind``."""
    if kind not in ROUTERS:
        raise ValueError(f"router.kind: choose one of {sorted(ROUTERS)}, got {kind!r}")
    return ROUTERS[kind]


def create_router(
    kind: str,
    num_layers: int,
    num_blocks: int,
    width: int,
    *,
    layers: Any = "last",
    k: int = 2,
    temperature: float = 1.0,
    hidden_dim: int = 128,
) -> LayerRouter:
    """The router ``kind`` for ``num_layers`` hidden states of ``width`` channels and ``num_blocks``
    contexts; ``layers`` is its [`select_layers`][flowvla.routing.base.select_layers] rule, the other
    arguments go to the kinds that take them (``k``: top-k; ``temperature``: scalar mix and gated;
    ``hidden_dim``: gated and top-k)."""
    cls = get_router_class(kind)
    if cls is FixedLayerRouter:
        return FixedLayerRouter(num_layers, num_blocks, layers)
    if cls is ScalarMixRouter:
        return ScalarMixRouter(num_layers, num_blocks, layers, temperature=temperature)
    if cls is SampleGatedRouter:
        return SampleGatedRouter(
            num_layers, num_blocks, width, layers, hidden_dim=hidden_dim, temperature=temperature
        )
    return TopKRouter(num_layers, num_blocks, width, k, layers, hidden_dim=hidden_dim)
