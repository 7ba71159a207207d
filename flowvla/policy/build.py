"""Parts of a policy from their configs: the geometry branch, backbones by kind (``get_*`` returns a
registered class or loader, ``create_*`` builds one); ``build_*`` are the deprecated names of before."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import nn

from flowvla.backbones import VisionLanguageBackbone
from flowvla.deprecation import deprecated_alias
from flowvla.flow import create_time_sampler
from flowvla.fusion import Fusion, create_fusion
from flowvla.geometry import FourierPointEncoder, MLPPositionEncoder
from flowvla.policy.config import FusionConfig, RouterConfig
from flowvla.routing import LayerRouter, create_router

__all__ = [
    "BACKBONES",
    "build_geometry_branch",
    "build_router",
    "build_time_sampler",
    "create_backbone",
    "create_geometry_branch",
    "get_backbone_class",
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


def _router_from_config(cfg: RouterConfig, num_layers: int, num_blocks: int, width: int) -> LayerRouter:
    return create_router(
        cfg.kind,
        num_layers,
        num_blocks,
        width,
        layers=cfg.layers,
        k=cfg.k,
        temperature=cfg.temperature,
        hidden_dim=cfg.hidden_dim,
    )


build_router = deprecated_alias("flowvla.policy.build_router", create_router, adapt=_router_from_config)
build_time_sampler = deprecated_alias("flowvla.policy.build_time_sampler", create_time_sampler)


def create_geometry_branch(
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


build_geometry_branch = deprecated_alias("flowvla.policy.build_geometry_branch", create_geometry_branch)


def get_backbone_class(kind: str) -> Callable[[dict[str, Any], str | os.PathLike], VisionLanguageBackbone]:
    """The loader registered for backbone specs of ``kind`` (see
    [`register_backbone`][flowvla.policy.build.register_backbone])."""
    if kind not in BACKBONES:
        raise ValueError(f"backbone kind {kind!r} is not registered; known: {sorted(BACKBONES)}")
    return BACKBONES[kind]


def create_backbone(spec: dict[str, Any], directory: str | os.PathLike) -> VisionLanguageBackbone:
    """The backbone a saved ``spec`` (``backbone.spec()``, its ``kind`` registered) describes, with
    the files it saved in ``directory``."""
    return get_backbone_class(spec.get("kind"))(spec, directory)
