"""``FixedLayerRouter``: a fixed choice of VLM layers, spread over the DiT blocks.

The seed's first/last-layer rule (``"first"``, ``"last"``), GR00T's single selected layer (``12``)
and starVLA's layerwise mapping (``"all"`` with as many blocks as layers: block ``i`` reads layer
``i``) are all instances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flowvla.routing.base import LayerRouter, RoutedContexts, mix_layers, select_layers
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["FixedLayerRouter", "spread_over_blocks"]


@typechecked
def spread_over_blocks(selected: Sequence[int], num_layers: int, num_blocks: int) -> Float[Tensor, "K L"]:
    """Weights ``[K, L]`` spreading ``m`` selected layers over ``K`` blocks in order.

    ``m == K``: block ``i`` reads ``selected[i]``. ``m < K``: consecutive blocks share a layer
    (``m = 1``: every block reads it). ``m > K``: block ``i`` averages a consecutive group.
    """
    m = len(selected)
    weights = torch.zeros(num_blocks, num_layers)
    for block in range(num_blocks):
        if m <= num_blocks:
            weights[block, selected[block * m // num_blocks]] = 1.0
        else:
            group = selected[block * m // num_blocks : (block + 1) * m // num_blocks]
            weights[block, group] = 1.0 / len(group)
    return weights


class FixedLayerRouter(LayerRouter):
    """Route a fixed selection of layers (no parameters).

    Args:
        num_layers: ``L``, layers in the hidden states.
        num_blocks: ``K``, contexts to produce.
        layers: a rule or indices for [`select_layers`][flowvla.routing.base.select_layers] (``"last"``,
            ``12``, ``"last:4"``, ``"every:2"``, ``[0, -1]`` ...), spread over blocks by
            [`spread_over_blocks`][flowvla.routing.fixed.spread_over_blocks].
    """

    weight_table: Tensor

    def __init__(self, num_layers: int, num_blocks: int, layers: int | str | Sequence[int] = "last") -> None:
        super().__init__(num_layers, num_blocks)
        self.layers = select_layers(layers, num_layers)
        self.register_buffer("weight_table", spread_over_blocks(self.layers, num_layers, num_blocks))

    def _route(self, layers: Sequence[Tensor], mask: Tensor | None) -> RoutedContexts:
        """Contexts from the fixed weight table (single layers are passed through uncopied)."""
        first = layers[self.layers[0]]
        weights = self.weight_table.to(first.dtype)
        contexts = tuple(mix_layers(layers, weights[k]) for k in range(self.num_blocks))
        batch = first.shape[0]
        return RoutedContexts(
            contexts=contexts,
            weights=weights.unsqueeze(0).expand(batch, -1, -1),
            aux_loss=first.new_zeros(()),
        )
