"""Layer routers: which VLM hidden layers each DiT block reads (fixed, scalar mix, gated, top-k)."""

from flowvla.routing.base import (
    HiddenStates,
    LayerRouter,
    RoutedContexts,
    masked_mean,
    mix_layers,
    normalize_layers,
    select_layers,
)
from flowvla.routing.fixed import FixedLayerRouter, spread_over_blocks
from flowvla.routing.gated import LayerGate, SampleGatedRouter, scatter_to_layers
from flowvla.routing.registry import ROUTERS, create_router, get_router_class
from flowvla.routing.scalar_mix import ScalarMixRouter
from flowvla.routing.topk import TopKRouter

__all__ = [
    "ROUTERS",
    "FixedLayerRouter",
    "HiddenStates",
    "LayerGate",
    "LayerRouter",
    "RoutedContexts",
    "SampleGatedRouter",
    "ScalarMixRouter",
    "TopKRouter",
    "create_router",
    "get_router_class",
    "masked_mean",
    "mix_layers",
    "normalize_layers",
    "scatter_to_layers",
    "select_layers",
    "spread_over_blocks",
]
