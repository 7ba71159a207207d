"""``ScalarMixRouter``: learned softmax weights over layers, one set per DiT block (ELMo's scalar mix)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flowvla.routing.base import LayerRouter, RoutedContexts, mix_layers, normalize_layers, select_layers
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["ScalarMixRouter"]


class ScalarMixRouter(LayerRouter):
    """Per block ``k``: ``context_k = gamma_k * sum_l softmax(w_k / temperature)_l * h_l``.

    Args:
        num_layers: ``L``, layers in the hidden states.
        num_blocks: ``K``, contexts to produce.
        layers: candidate layers to mix (a [`select_layers`][flowvla.routing.base.select_layers] rule);
            default all.
        temperature: softmax temperature (lower: sharper choices).
        normalize: layer-normalise each layer before mixing, so the weights compare layers rather
            than their scales (deep LM layers have much larger norms).
        learn_scale: learn the per-block scale ``gamma_k`` (else fixed at 1).
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        layers: int | str | Sequence[int] = "all",
        *,
        temperature: float = 1.0,
        normalize: bool = True,
        learn_scale: bool = True,
    ) -> None:
        super().__init__(num_layers, num_blocks)
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.layers = select_layers(layers, num_layers)
        self.temperature = temperature
        self.normalize = normalize
        self.logits = nn.Parameter(torch.zeros(num_blocks, len(self.layers)))
        self.scale = nn.Parameter(torch.ones(num_blocks), requires_grad=learn_scale)

    @typechecked
    def layer_weights(self) -> Float[Tensor, "K L"]:
        """``[K, L]`` mixing weights over all layers (zero outside the candidates)."""
        probs = torch.softmax(self.logits / self.temperature, dim=-1)
        full = probs.new_zeros(self.num_blocks, self.num_layers)
        return full.index_copy(1, torch.tensor(self.layers, device=probs.device), probs)

    def _route(self, layers: Sequence[Tensor], mask: Tensor | None) -> RoutedContexts:
        """Mix the candidate layers with each block's weights."""
        weights = self.layer_weights()
        if self.normalize:
            layers = normalize_layers(layers, self.layers)
        contexts = tuple(mix_layers(layers, weights[k]) * self.scale[k] for k in range(self.num_blocks))
        batch = contexts[0].shape[0]
        return RoutedContexts(
            contexts=contexts,
            weights=weights.unsqueeze(0).expand(batch, -1, -1),
            aux_loss=weights.new_zeros(()),
        )
