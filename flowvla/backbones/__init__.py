"""VLM backbones: images + instructions -> every hidden layer, with a hook for 2D-3D fusion.

``ComposedBackbone`` (vision encoder + projector + causal LM) and ``HFVisionLanguageBackbone``
(a wrapped ``transformers`` VLM) import ``transformers`` only when built; ``TimmEncoder`` and
``FusedTimmEncoder`` (timm vision towers by name) import ``timm`` only when built.
``SpatialSoftmax`` reads keypoints off a patch grid of visual features.
"""

from flowvla.backbones.base import BackboneOutput, VisionLanguageBackbone, VisualHook, images_to_float
from flowvla.backbones.composed import ComposedBackbone
from flowvla.backbones.hf import HFVisionLanguageBackbone
from flowvla.backbones.hf_adapters import ADAPTERS, HFAdapter
from flowvla.backbones.keypoints import SpatialSoftmax
from flowvla.backbones.timm_encoders import FusedTimmEncoder, TimmEncoder

__all__ = [
    "ADAPTERS",
    "BackboneOutput",
    "ComposedBackbone",
    "FusedTimmEncoder",
    "HFAdapter",
    "HFVisionLanguageBackbone",
    "SpatialSoftmax",
    "TimmEncoder",
    "VisionLanguageBackbone",
    "VisualHook",
    "images_to_float",
]
