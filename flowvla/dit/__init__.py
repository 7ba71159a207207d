"""The flow-matching action head: a cross-attention DiT over action tokens, and its parts."""

from flowvla.dit.attention import CrossAttention, KeyValue, SelfAttention
from flowvla.dit.block import DiTBlock, modulate
from flowvla.dit.embeddings import RotaryEmbedding, TimestepEmbedder, apply_rotary, sinusoidal_embedding
from flowvla.dit.head import BLOCK_PATTERNS, ContextCache, FlowActionHead
from flowvla.dit.mlp import GeluMlp, SwiGLU, make_mlp

__all__ = [
    "BLOCK_PATTERNS",
    "ContextCache",
    "CrossAttention",
    "DiTBlock",
    "FlowActionHead",
    "GeluMlp",
    "KeyValue",
    "RotaryEmbedding",
    "SelfAttention",
    "SwiGLU",
    "TimestepEmbedder",
    "apply_rotary",
    "make_mlp",
    "modulate",
    "sinusoidal_embedding",
]
