"""Sample-adaptive routing: a small gating network scores the layers from pooled hidden states.

[`LayerGate`][flowvla.routing.gated.LayerGate] is the scoring network shared by
[`SampleGatedRouter`][flowvla.routing.gated.SampleGatedRouter] (dense softmax weights) and
[`TopKRouter`][flowvla.routing.topk.TopKRouter] (sparse top-k weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flowvla.routing.base import (
    LayerRouter,
    RoutedContexts,
    masked_mean,
    mix_layers,
    normalize_layers,
    select_layers,
)
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["LayerGate", "SampleGatedRouter", "scatter_to_layers"]


class LayerGate(nn.Module):
    """Logits ``[B, K, m]`` over ``m`` candidate layers for each of ``K`` blocks, per sample.

    The gate reads the masked mean over tokens of a few probe layers (by default only the last
    candidate, so gating costs one pass over one layer), layer-normalised and concatenated, then
    an MLP. The output layer starts at zero: a fresh gate weighs all candidates equally.

    Args:
        width: ``D``, the hidden-state width.
        num_blocks: ``K``.
        num_candidates: ``m``.
        probe_layers: how many pooled layers feed the gate.
        hidden_dim: the MLP's hidden width.
        num_outputs: logit sets per (block, layer) (2 for noisy top-k: clean and noise logits).
    """

    def __init__(
        self,
        width: int,
        num_blocks: int,
        num_candidates: int,
        *,
        probe_layers: int = 1,
        hidden_dim: int = 256,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.shape = (num_outputs, num_blocks, num_candidates)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(probe_layers * width, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, num_outputs * num_blocks * num_candidates),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @typechecked
    def forward(
        self, probes: Sequence[Float[Tensor, "B T D"]], mask: Bool[Tensor, "B T"] | None = None
    ) -> Float[Tensor, "O B K M"]:
        """Logits ``[num_outputs, B, K, m]`` from the probe layers' masked token means."""
        pooled = torch.cat([self.norm(masked_mean(h, mask)) for h in probes], dim=-1)
        logits = self.mlp(pooled.to(self.mlp[0].weight.dtype))
        return logits.unflatten(-1, self.shape).movedim(1, 0)


@typechecked
def scatter_to_layers(
    probs: Float[Tensor, "*B M"], candidates: Sequence[int], num_layers: int
) -> Float[Tensor, "*B L"]:
    """Place weights ``[..., m]`` over candidate layers into ``[..., L]`` (zeros elsewhere)."""
    full = probs.new_zeros(*probs.shape[:-1], num_layers)
    return full.index_copy(-1, torch.tensor(list(candidates), device=probs.device), probs)


class SampleGatedRouter(LayerRouter):
    """Per sample and block, softmax weights over candidate layers from a gating network.

    Args:
        num_layers: ``L``, layers in the hidden states.
        num_blocks: ``K``, contexts to produce.
        width: ``D``, the hidden-state width.
        layers: candidate layers (a [`select_layers`][flowvla.routing.base.select_layers] rule); default all.
        probe: the layers the gate pools (a rule over all layers); default the last candidate.
        hidden_dim: gate MLP width.
        temperature: softmax temperature.
        normalize: layer-normalise layers before mixing (see
            [`ScalarMixRouter`][flowvla.routing.scalar_mix.ScalarMixRouter]).
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        width: int,
        layers: int | str | Sequence[int] = "all",
        *,
        probe: int | str | Sequence[int] | None = None,
        hidden_dim: int = 256,
        temperature: float = 1.0,
        normalize: bool = True,
    ) -> None:
        super().__init__(num_layers, num_blocks)
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.layers = select_layers(layers, num_layers)
        self.probe = select_layers(probe if probe is not None else self.layers[-1], num_layers)
        self.temperature = temperature
        self.normalize = normalize
        self.gate = self._make_gate(width, hidden_dim)

    def _make_gate(self, width: int, hidden_dim: int) -> LayerGate:
        return LayerGate(
            width, self.num_blocks, len(self.layers), probe_layers=len(self.probe), hidden_dim=hidden_dim
        )

    @typechecked
    def gate_logits(
        self, layers: Sequence[Float[Tensor, "B T D"]], mask: Bool[Tensor, "B T"] | None
    ) -> Float[Tensor, "O B K M"]:
        """The gate's logits ``[num_outputs, B, K, m]``."""
        return self.gate([layers[i] for i in self.probe], mask)

    @typechecked
    def mix(
        self, layers: Sequence[Float[Tensor, "B T D"]], weights: Float[Tensor, "B K L"]
    ) -> tuple[Tensor, ...]:
        """One context per block from per-sample weights ``[B, K, L]``."""
        if self.normalize:
            used = (weights != 0).reshape(-1, weights.shape[-1]).any(dim=0).nonzero().flatten().tolist()
            layers = normalize_layers(layers, used)
        return tuple(mix_layers(layers, weights[:, k]) for k in range(self.num_blocks))

    def _route(self, layers: Sequence[Tensor], mask: Tensor | None) -> RoutedContexts:
        """Dense per-sample mixing with softmax gate weights."""
        probs = torch.softmax(self.gate_logits(layers, mask)[0] / self.temperature, dim=-1)
        weights = scatter_to_layers(probs, self.layers, self.num_layers)
        return RoutedContexts(self.mix(layers, weights), weights, probs.new_zeros(()))
