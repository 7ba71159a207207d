"""Prompt processing: ``<image>`` expansion aligned with visual features, tokenizer checks, instructions."""

from flowvla.processing.instructions import normalize_instruction
from flowvla.processing.multimodal import MultimodalProcessor, detect_joiner, scatter_image_features

__all__ = ["MultimodalProcessor", "detect_joiner", "normalize_instruction", "scatter_image_features"]
