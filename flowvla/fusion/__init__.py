"""2D-3D token fusion: ``fusion(tokens_2d, tokens_3d, mask) -> tokens`` (see
[`flowvla.fusion.base`][flowvla.fusion.base])."""

from flowvla.fusion.base import Fusion
from flowvla.fusion.global_broadcast import GlobalBroadcastFusion
from flowvla.fusion.region_attention import RegionCrossAttentionFusion, window_index
from flowvla.fusion.registry import FUSIONS, create_fusion, get_fusion_class
from flowvla.fusion.token_aligned import TokenAlignedFusion

__all__ = [
    "FUSIONS",
    "Fusion",
    "GlobalBroadcastFusion",
    "RegionCrossAttentionFusion",
    "TokenAlignedFusion",
    "create_fusion",
    "get_fusion_class",
    "window_index",
]
