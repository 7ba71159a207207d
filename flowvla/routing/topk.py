"""``TopKRouter``: sparse mixture-of-experts-style routing over layers.

Per sample and block, the gate's logits over ``m`` candidate layers select the top ``k``; their
softmax gives the weights, the rest are exactly zero, so a context reads only ``k`` layers.
Training adds learned Gaussian noise to the logits before the selection (noisy top-k gating,
Shazeer et al. 2017) to explore, and returns the Switch-Transformer load-balancing loss
``m * sum_l f_l * P_l`` (``f_l``: fraction of routing slots that chose layer ``l``; ``P_l``: mean gate
probability of ``l``), averaged over blocks; it is 1 when routing is uniform. In eval mode there is
no noise and exactly ``k`` weights are non-zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from flowvla.routing.base import RoutedContexts, select_layers
from flowvla.routing.gated import LayerGate, SampleGatedRouter, scatter_to_layers
from flowvla.typing import Tensor

__all__ = ["TopKRouter"]


class TopKRouter(SampleGatedRouter):
    """Sparse top-``k`` layer routing per sample and block (see module docs).

    Args:
        num_layers: ``L``, layers in the hidden states.
        num_blocks: ``K``, contexts to produce.
        width: ``D``, the hidden-state width.
        k: layers used per block and sample.
        layers: candidate layers (a [`select_layers`][flowvla.routing.base.select_layers] rule); default all.
        probe: the layers the gate pools; default the last candidate.
        hidden_dim: gate MLP width.
        noisy: add learned noise to the logits in training mode.
        normalize: layer-normalise layers before mixing.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        width: int,
        k: int = 2,
        layers: int | str | Sequence[int] = "all",
        *,
        probe: int | str | Sequence[int] | None = None,
        hidden_dim: int = 256,
        noisy: bool = True,
        normalize: bool = True,
    ) -> None:
        candidates = len(select_layers(layers, num_layers))
        if not 1 <= k <= candidates:
            raise ValueError(f"k: must be in [1, {candidates}] (the number of candidate layers), got {k}")
        self.k = k
        self.noisy = noisy
        super().__init__(
            num_layers, num_blocks, width, layers, probe=probe, hidden_dim=hidden_dim, normalize=normalize
        )

    def _make_gate(self, width: int, hidden_dim: int) -> LayerGate:
        return LayerGate(
            width,
            self.num_blocks,
            len(self.layers),
            probe_layers=len(self.probe),
            hidden_dim=hidden_dim,
            num_outputs=2,
        )

    def _route(self, layers: Sequence[Tensor], mask: Tensor | None) -> RoutedContexts:
        """Sparse per-sample mixing of the top-``k`` layers, with the load-balancing loss."""
        clean, noise_logits = self.gate_logits(layers, mask)
        logits = clean
        if self.training and self.noisy:
            logits = clean + torch.randn_like(clean) * F.softplus(noise_logits)
        top_values, top_index = logits.topk(self.k, dim=-1)
        # A chosen layer keeps a positive weight even when its softmax underflows (logit gaps > ~100):
        # exactly k layers are routed, as promised.
        chosen_weights = torch.softmax(top_values, dim=-1).clamp_min(torch.finfo(top_values.dtype).tiny)
        sparse = torch.zeros_like(logits).scatter(-1, top_index, chosen_weights)
        weights = scatter_to_layers(sparse, self.layers, self.num_layers)

        m = len(self.layers)
        chosen = torch.zeros_like(clean).scatter(-1, top_index, 1.0 / self.k)
        load = chosen.mean(dim=0)  # [K, m], fraction of slots per layer; not differentiable
        importance = torch.softmax(clean, dim=-1).mean(dim=0)  # [K, m]
        aux_loss = (m * (load * importance).sum(dim=-1)).mean()
        return RoutedContexts(self.mix(layers, weights), weights, aux_loss)
