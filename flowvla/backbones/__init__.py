"""VLM backbones: images + instructions -> every hidden layer, with a hook for 2D-3D fusion."""

from flowvla.backbones.base import BackboneOutput, VisionLanguageBackbone, VisualHook, images_to_float

__all__ = ["BackboneOutput", "VisionLanguageBackbone", "VisualHook", "images_to_float"]
