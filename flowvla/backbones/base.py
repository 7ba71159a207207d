"""The backbone contract: images + instructions -> every hidden layer, masks, and a fusion hook.

A backbone owns its tokenizer and image preprocessing. It reads upright RGB views
``[B, V, 3, H, W]`` (uint8, or float in ``[0, 1]``) and one instruction per sample, and returns the
hidden states of every layer (embedding output first) with the attention mask and the mask of
image-token positions. A ``visual_hook`` receives the visual tokens where the architecture makes
them, before they enter the language model (before the projector), as ``[B, V * N, Dv]`` ordered
view, patch row, patch column on ``VisionLanguageBackbone.patch_grid``, and returns tokens of
the same shape: that is where 2D-3D fusion goes. Passing back the ``visual_features`` a call
returned re-reads the same images with other instructions without encoding them again.

Legend: ``B`` batch, ``V`` views, ``N`` patches per view, ``T`` sequence tokens, ``D`` LM width,
``Dv`` visual width, ``L`` hidden-state layers.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from flowvla.geometry import PatchGrid
from flowvla.typing import Float, Shaped, Tensor, typechecked

__all__ = ["BackboneOutput", "VisionLanguageBackbone", "VisualHook", "images_to_float"]

#: ``hook(visual_tokens [B, V * N, Dv]) -> [B, V * N, Dv]``.
VisualHook = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class BackboneOutput:
    """What a backbone returns.

    Attributes:
        hidden_states: ``L`` tensors ``[B, T, D]``, the embedding output first, the last layer last.
        attention_mask: ``[B, T]`` bool, True on real (non-padding) tokens.
        image_token_mask: ``[B, T]`` bool, True on positions holding visual tokens.
        input_ids: ``[B, T]`` token ids (image positions hold the image token id).
        padding_side: ``"left"`` or ``"right"``: where padding sits in the sequence.
        visual_features: ``[B, V * N, Dv]`` the vision encoder's patch tokens (after the visual hook,
            before the projector), view after view; None where a backbone does not expose them.
    """

    hidden_states: tuple[Tensor, ...]
    attention_mask: Tensor
    image_token_mask: Tensor
    input_ids: Tensor
    padding_side: str
    visual_features: Tensor | None = None


@typechecked
def images_to_float(images: Shaped[Tensor, "B V 3 H W"]) -> Float[Tensor, "B V 3 H W"]:
    """uint8 images to float32 in ``[0, 1]``; float images are checked to lie in ``[0, 1]``."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images: expected uint8 or float in [0, 1], got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"images: float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return images


class VisionLanguageBackbone(nn.Module, ABC):
    """Base class of VLM backbones (see module docs).

    Subclasses set these attributes in ``__init__``:

    Attributes:
        hidden_size: ``D``, width of the returned hidden states.
        num_hidden_states: ``L``, how many hidden-state layers ``forward`` returns.
        visual_dim: ``Dv``, width of the tokens the ``visual_hook`` sees.
        patch_grid: the per-view grid of those tokens (``N = patch_grid.num_patches``).
        image_size: the ``(H, W)`` the backbone expects (inputs of another size are an error).
    """

    hidden_size: int
    num_hidden_states: int
    visual_dim: int
    patch_grid: PatchGrid
    image_size: tuple[int, int]

    @abstractmethod
    @typechecked
    def forward(
        self,
        images: Shaped[Tensor, "B V 3 H W"],
        instructions: Sequence[str],
        *,
        visual_hook: VisualHook | None = None,
        visual_features: Float[Tensor, "B VN Dv"] | None = None,
    ) -> BackboneOutput:
        """Run the VLM on images and instructions; see
        [`BackboneOutput`][flowvla.backbones.base.BackboneOutput].

        ``visual_features`` ``[B, V * N, Dv]``: the ``visual_features`` an earlier call returned for
        the same ``images``, to read them again with other ``instructions``: they replace the visual
        tokens (``visual_hook`` must then be None, they were fused already), so the result equals a
        full call on ``images``. Backbones that run their own vision tower may still run it.
        """

    @staticmethod
    def _check_visual_features(
        visual_features: Tensor, expected: tuple[int, ...], visual_hook: VisualHook | None
    ) -> None:
        """Raise a clear error if reused ``visual_features`` do not fit this call."""
        if visual_hook is not None:
            raise ValueError(
                "visual_features: given together with a visual_hook (reused features are fused already)"
            )
        if tuple(visual_features.shape) != tuple(expected):
            raise ValueError(
                f"visual_features: expected {tuple(expected)} [B, V * N, Dv] for these images, "
                f"got {tuple(visual_features.shape)}"
            )

    @typechecked
    def check_images(self, images: Shaped[Tensor, "..."]) -> None:
        """Raise a clear error if ``images`` is not ``[B, V, 3, H, W]`` at ``image_size``."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images: expected [B, V, 3, H, W], got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != tuple(self.image_size):
            raise ValueError(
                f"images: size {tuple(images.shape[-2:])} but the backbone expects {tuple(self.image_size)} "
                "(resize in the data pipeline, or build the backbone for this size)"
            )

    def freeze(self, part: str = "all") -> None:
        """Stop gradients into a part: ``"all"``, ``"vision"`` or ``"language"`` (subclasses name
        their parts in [`parameter_groups`][flowvla.backbones.base.VisionLanguageBackbone.parameter_groups]).
        """
        groups = self.parameter_groups()
        if part != "all" and part not in groups:
            raise ValueError(f"part: choose 'all' or one of {sorted(groups)}, got {part!r}")
        modules = list(groups.values()) if part == "all" else [groups[part]]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable architecture description with a ``"kind"`` key, from which the
        backbone registered under that kind rebuilds it (weights are saved separately)."""
        raise NotImplementedError(f"{type(self).__name__} cannot describe its architecture for saving")

    def save_tokenizer(self, directory: str | os.PathLike) -> None:
        """Write the files the backbone needs besides weights (tokenizer, processor) to ``directory``."""
        raise NotImplementedError(f"{type(self).__name__} cannot save its tokenizer")

    def parameter_groups(self) -> dict[str, nn.Module]:
        """Named sub-modules for partial freezing (``{"vision": ..., "language": ...}``)."""
        return {"all": self}
