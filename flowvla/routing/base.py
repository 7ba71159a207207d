"""The layer-router interface: VLM hidden states of every layer -> one context per DiT block.

A router reads the VLM's per-layer hidden states (``[L, B, T, D]`` or a sequence of ``L`` tensors
``[B, T, D]``, as ``transformers`` returns them) and a padding mask, and returns a context for each
of the head's ``K`` cross-attention blocks, plus routing weights ``[B, K, L]`` for ``debug_info``
and an auxiliary loss (zero unless the router balances load).

Routers never stack the layers: a context is built only from the layers its weights use, so a
router that uses ``k`` of ``L`` layers reads ``k`` of them.

Legend: ``L`` VLM layers, ``B`` batch, ``T`` tokens, ``D`` VLM width, ``K`` DiT blocks.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = [
    "HiddenStates",
    "LayerRouter",
    "RoutedContexts",
    "masked_mean",
    "mix_layers",
    "normalize_layers",
    "select_layers",
]

HiddenStates = Float[Tensor, "L B T D"] | Sequence[Float[Tensor, "B T D"]]


@dataclass(frozen=True)
class RoutedContexts:
    """What a router returns.

    Attributes:
        contexts: ``K`` contexts ``[B, T, D]``, block ``i``'s first (the same tensor object may
            serve several blocks).
        weights: ``[B, K, L]`` non-negative routing weights over all ``L`` layers; each row sums to 1.
        aux_loss: scalar auxiliary loss (load balancing for [`TopKRouter`][flowvla.routing.topk.TopKRouter],
            else 0).
    """

    contexts: tuple[Tensor, ...]
    weights: Tensor
    aux_loss: Tensor


@typechecked
def select_layers(rule: int | str | Sequence[int], num_layers: int) -> list[int]:
    """Resolve a layer-selection rule to non-negative layer indices, in order.

    Args:
        rule: an index (negative counts from the end), a sequence of indices, or a string:
            ``"first"``, ``"last"``, ``"all"``, ``"last:k"`` (the last ``k`` layers),
            ``"first:k"``, ``"every:n"`` (every ``n``-th layer, ending with the last).
        num_layers: ``L``, the number of hidden-state layers available.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers: must be >= 1, got {num_layers}")
    if isinstance(rule, str):
        match = re.fullmatch(r"(first|last|all|every)(?::(\d+))?", rule.strip())
        if match is None:
            raise ValueError(
                f"layers: unknown rule {rule!r}; use 'first', 'last', 'all', 'first:k', 'last:k', 'every:n'"
            )
        name, arg = match.group(1), match.group(2)
        n = int(arg) if arg is not None else None
        if name == "all" or (name in ("first", "last") and n is None):
            indices = list(range(num_layers)) if name == "all" else [0 if name == "first" else num_layers - 1]
        elif n is None or not 1 <= n <= num_layers:
            raise ValueError(f"layers: {rule!r} needs a count in [1, {num_layers}]")
        elif name == "first":
            indices = list(range(n))
        elif name == "last":
            indices = list(range(num_layers - n, num_layers))
        else:
            indices = list(range(num_layers - 1, -1, -n))[::-1]
        return indices
    raw = [rule] if isinstance(rule, int) else list(rule)
    if not raw:
        raise ValueError("layers: empty selection")
    out = []
    for i in raw:
        if not -num_layers <= i < num_layers:
            raise ValueError(f"layers: index {i} is out of range for {num_layers} layers")
        out.append(i % num_layers)
    return out


@typechecked
def masked_mean(x: Float[Tensor, "B T D"], mask: Bool[Tensor, "B T"] | None = None) -> Float[Tensor, "B D"]:
    """Mean over valid tokens (``mask`` True); padded tokens, even NaN ones, do not count."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.unsqueeze(-1)
    total = torch.where(m, x, 0.0).sum(dim=1)
    return total / m.sum(dim=1).clamp_min(1).to(x.dtype)


@typechecked
def mix_layers(
    layers: Sequence[Float[Tensor, "B T D"]],
    weights: Float[Tensor, " L"] | Float[Tensor, "B L"],
) -> Float[Tensor, "B T D"]:
    """``sum_l weights[:, l] * layers[l]`` touching only layers with a non-zero weight.

    ``weights`` is ``[L]`` (shared by the batch) or ``[B, L]``; a fixed (no grad) one-hot shared
    weight returns the layer itself (no copy).
    """
    used = (weights != 0).reshape(-1, weights.shape[-1]).any(dim=0).nonzero().flatten().tolist()
    one_hot = weights.dim() == 1 and len(used) == 1 and not weights.requires_grad
    if one_hot and float(weights[used[0]]) == 1.0:
        return layers[used[0]]
    weights = weights.to(layers[used[0]].dtype)
    out = None
    for index in used:
        w = weights[index] if weights.dim() == 1 else weights[:, index, None, None]
        out = layers[index] * w if out is None else torch.addcmul(out, layers[index], w)
    return out


@typechecked
def normalize_layers(layers: Sequence[Float[Tensor, "B T D"]], indices: Iterable[int]) -> list[Tensor]:
    """``layers`` with the listed ones layer-normalised (no affine), each once; the rest untouched.

    Deep LM layers have much larger norms than shallow ones; normalising before mixing makes
    routing weights compare layers rather than their scales.
    """
    out = list(layers)
    for i in set(indices):
        out[i] = F.layer_norm(out[i], out[i].shape[-1:])
    return out


class LayerRouter(nn.Module, ABC):
    """Base class: maps hidden states of ``num_layers`` layers to contexts of ``num_blocks`` blocks.

    Args:
        num_layers: ``L``, the number of hidden-state layers the router is given.
        num_blocks: ``K``, the number of contexts to produce (the head's cross-attention blocks).
    """

    def __init__(self, num_layers: int, num_blocks: int) -> None:
        super().__init__()
        if num_layers < 1 or num_blocks < 1:
            raise ValueError(f"num_layers, num_blocks: must be >= 1, got {num_layers}, {num_blocks}")
        self.num_layers = num_layers
        self.num_blocks = num_blocks

    def _layers(self, hidden_states: HiddenStates) -> Sequence[Tensor]:
        layers = hidden_states.unbind(0) if isinstance(hidden_states, Tensor) else list(hidden_states)
        if len(layers) != self.num_layers:
            raise ValueError(
                f"hidden_states: got {len(layers)} layers, the router expects num_layers={self.num_layers}"
            )
        return layers

    @abstractmethod
    def _route(self, layers: Sequence[Tensor], mask: Tensor | None) -> RoutedContexts:
        """Route validated layers; subclasses implement this."""

    @typechecked
    def forward(self, hidden_states: HiddenStates, mask: Bool[Tensor, "B T"] | None = None) -> RoutedContexts:
        """Contexts for each block from ``hidden_states`` (``[L, B, T, D]`` or ``L`` x ``[B, T, D]``).

        Args:
            hidden_states: every layer's hidden states (embedding output first, as ``transformers``
                returns them with ``output_hidden_states=True``).
            mask: ``[B, T]``, True on valid (non-padding) tokens; used where the router pools.
        """
        return self._route(self._layers(hidden_states), mask)
