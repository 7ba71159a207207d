"""Per-architecture facts that :class:`~flowvla.backbones.hf.HFVisionLanguageBackbone` needs.

Everything that differs between ``transformers`` image-text-to-text families lives in one
:class:`HFAdapter` row, keyed by ``config.model_type``: where the vision tower, the projector and
the language model sit, how many prefix tokens (CLS) reach the projector before the patches, how
many LM tokens one image becomes, the prompt layout, how pixels are batched, and how positions
are numbered. The wrapper itself has no per-architecture branches.

Prompt templates are ``str.format`` strings with ``{bos}`` (the tokenizer's BOS token, or ``""``),
``{images}`` (one ``view_prefix + <image> + view_suffix`` per view) and ``{instruction}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["ADAPTERS", "HFAdapter", "adapter_for"]


@dataclass(frozen=True)
class HFAdapter:
    """How one VLM family is wired (see module docs).

    Attributes:
        name: short family name.
        model_types: the ``config.model_type`` values it serves.
        vision: attribute of the inner model (``model.model``) holding the vision tower.
        projector: attribute holding the module that maps visual tokens into the LM (the hook point).
        language: attribute holding the decoder-only language model (with ``.layers``).
        prompt: default prompt template (see module docs).
        view_prefix: text before each view's image tokens.
        view_suffix: text after each view's image tokens.
        required_tokens: tokens of the template that must be single tokens of the tokenizer.
        pixels_per_sample: pixels go in as ``[B, V, 3, H, W]`` (else flattened ``[B * V, 3, H, W]``).
        position_offset: position id of the first real token, counted from the attention mask so
            that left padding does not shift positions; ``None`` lets the model number positions.
        bidirectional_prefix: the whole prompt attends bidirectionally (PaliGemma's prefix-LM).
        prefix_tokens: ``config -> `` tokens before the patches in each image's projector input
            (a CLS token the model keeps); the visual hook sees the patches only.
        tokens_per_image: ``config ->`` LM tokens (image-token slots) per image.
        visual_dim: ``model -> Dv``, width of the projector's input tokens.
    """

    name: str
    model_types: tuple[str, ...]
    vision: str
    projector: str
    language: str
    prompt: str
    view_prefix: str
    view_suffix: str
    required_tokens: tuple[str, ...]
    pixels_per_sample: bool
    position_offset: int | None
    bidirectional_prefix: bool
    prefix_tokens: Callable[[Any], int]
    tokens_per_image: Callable[[Any], int]
    visual_dim: Callable[[nn.Module], int]


def _patches(config: Any) -> int:
    vc = config.vision_config
    return (vc.image_size // vc.patch_size) ** 2


def _llava_prefix(config: Any) -> int:
    # "default" drops CLIP's CLS before the projector; "full" keeps it in front of the patches.
    return 0 if config.vision_feature_select_strategy == "default" else 1


ADAPTERS: tuple[HFAdapter, ...] = (
    HFAdapter(
        name="paligemma",
        model_types=("paligemma",),
        vision="vision_tower",
        projector="multi_modal_projector",
        language="language_model",
        # PaliGemma's processor layout: images, BOS, prompt, newline; the prefix is bidirectional.
        prompt="{images}{bos}{instruction}\n",
        view_prefix="",
        view_suffix="",
        required_tokens=(),
        pixels_per_sample=False,
        position_offset=1,  # PaliGemma numbers positions from 1
        bidirectional_prefix=True,
        prefix_tokens=lambda config: 0,
        tokens_per_image=_patches,
        visual_dim=lambda inner: inner.multi_modal_projector.linear.in_features,
    ),
    HFAdapter(
        name="llava",
        model_types=("llava",),
        vision="vision_tower",
        projector="multi_modal_projector",
        language="language_model",
        # The llava-1.5 chat layout; all views sit at the one placeholder, back to back.
        prompt="{bos}USER: {images}\n{instruction} ASSISTANT:",
        view_prefix="",
        view_suffix="",
        required_tokens=(),
        pixels_per_sample=False,
        position_offset=0,
        bidirectional_prefix=False,
        prefix_tokens=_llava_prefix,
        tokens_per_image=lambda config: _patches(config) + _llava_prefix(config),
        visual_dim=lambda inner: inner.multi_modal_projector.linear_1.in_features,
    ),
    HFAdapter(
        name="idefics3",
        model_types=("idefics3", "smolvlm"),
        vision="vision_model",
        projector="connector",  # pixel shuffle + MLP: the hook runs before the shuffle
        language="text_model",
        # The Idefics3 / SmolVLM chat layout without image splitting (one global image per view).
        prompt="{bos}User:{images}{instruction}<end_of_utterance>\nAssistant:",
        view_prefix="<fake_token_around_image><global-img>",
        view_suffix="<fake_token_around_image>",
        required_tokens=("<fake_token_around_image>", "<global-img>", "<end_of_utterance>"),
        pixels_per_sample=True,
        position_offset=0,
        bidirectional_prefix=False,
        prefix_tokens=lambda config: 0,
        tokens_per_image=lambda config: _patches(config) // config.scale_factor**2,
        visual_dim=lambda inner: inner.config.vision_config.hidden_size,
    ),
)


def adapter_for(config: Any) -> HFAdapter:
    """The :class:`HFAdapter` serving ``config.model_type``.

    Args:
        config: a ``transformers`` VLM config.
    """
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise ValueError(
        f"model: architecture {model_type!r} has no adapter; supported: {supported} "
        "(add an HFAdapter row to flowvla.backbones.hf_adapters.ADAPTERS)"
    )
