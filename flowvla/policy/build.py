"""Parts of a policy from their configs: routers, time samplers, the geometry branch, backbones by kind."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from flowvla.backbones import VisionLanguageBackbone
from flowvla.flow import BetaTimeSampler, LogitNormalTimeSampler, TimeSampler, UniformTimeSampler
from flowvla.fusion import Fusion, create_fusion
from flowvla.geometry import FourierPointEncoder, MLPPositionEncoder
from flowvla.policy.config import FusionConfig, RouterConfig
from flowvla.routing import FixedLayerRouter, LayerRouter, SampleGatedRouter, ScalarMixRouter, TopKRouter

__all__ = [
    "BACKBONES",
    "build_geometry_branch",
    "build_router",
    "build_time_sampler",
    "register_backbone",
]

#: ``kind`` of a backbone spec -> ``loader(spec, directory) -> backbone``.
BACKBONES: dict[str, Callable[[dict[str, Any], str | os.PathLike], VisionLanguageBackbone]] = {}


def register_backbone(
    kind: str, loader: Callable[[dict[str, Any], str | os.PathLike], VisionLanguageBackbone]
) -> None:
    """Let saved policies whose ``config.backbone["kind"] == kind`` be rebuilt by ``loader``."""
    BACKBONES[kind] = loader


def _composed_loader(spec: dict[str, Any], directory: str | os.PathLike) -> VisionLanguageBackbone:
    from flowvla.backbones.composed import ComposedBackbone

    return ComposedBackbone.from_spec(spec, directory)


def _hf_loader(spec: dict[str, Any], directory: str | os.PathLike) -> VisionLanguageBackbone:
    from flowvla.backbones.hf import HFVisionLanguageBackbone

    return HFVisionLanguageBackbone.from_spec(spec, directory)


register_backbone("composed", _composed_loader)
register_backbone("hf", _hf_loader)


def build_router(cfg: RouterConfig, num_layers: int, num_blocks: int, width: int) -> LayerRouter:
    """The router named by ``cfg.kind`` for ``num_layers`` hidden states and ``num_blocks`` contexts."""
    if cfg.kind == "fixed":
        return FixedLayerRouter(num_layers, num_blocks, cfg.layers)
    if cfg.kind == "scalar_mix":
        return ScalarMixRouter(num_layers, num_blocks, cfg.layers, temperature=cfg.temperature)
    if cfg.kind == "sample_gated":
        return SampleGatedRouter(
            num_layers, num_blocks, width, cfg.layers, hidden_dim=cfg.hidden_dim, temperature=cfg.temperature
        )
    if cfg.kind == "topk":
        return TopKRouter(num_layers, num_blocks, width, cfg.k, cfg.layers, hidden_dim=cfg.hidden_dim)
    raise ValueError(f"router.kind: choose 'fixed', 'scalar_mix', 'sample_gated' or 'topk', got {cfg.kind!r}")


def build_time_sampler(name: str) -> TimeSampler:
    """``"beta"`` (pi0 / GR00T), ``"uniform"`` or ``"logit_normal"``."""
    samplers = {
        "beta": BetaTimeSampler,
        "uniform": UniformTimeSampler,
        "logit_normal": LogitNormalTimeSampler,
    }
    if name not in samplers:
        raise ValueError(f"loss.time_sampler: choose one of {sorted(samplers)}, got {name!r}")
    return samplers[name]()


def build_geometry_branch(
    cfg: FusionConfig, backbone: VisionLanguageBackbone, num_views: int
) -> tuple[nn.Module, Fusion]:
    """``(geometry encoder, fusion)`` on the backbone's patch grid, fusing into its visual tokens."""
    grid = backbone.patch_grid
    if cfg.encoder == "fourier":
        encoder = FourierPointEncoder(
            cfg.geo_dim, grid.image_size, grid.patch_size, center=cfg.center, scale=cfg.scale
        )
    elif cfg.encoder == "mlp":
        encoder = MLPPositionEncoder(
            cfg.geo_dim, grid.image_size, grid.patch_size, center=cfg.center, scale=cfg.scale
        )
    else:
        raise ValueError(f"fusion.encoder: choose 'fourier' or 'mlp', got {cfg.encoder!r}")
    kwargs: dict[str, Any] = {}
    if cfg.kind == "region":
        kwargs = dict(
            grid_size=grid.grid_size,
            num_views=num_views,
            window=cfg.window,
            cross_view=cfg.cross_view,
            num_heads=cfg.num_heads,
        )
    try:
        fusion = create_fusion(cfg.kind, backbone.visual_dim, cfg.geo_dim, **kwargs)
    except KeyError as e:
        raise ValueError(f"fusion.kind: {e.args[0]}") from None
    return encoder, fusion
