"""An exponential moving average of a module's trainable weights."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


def _full(t: torch.Tensor) -> torch.Tensor:
    # A parameter sharded by FSDP2 is a DTensor: gathering it is a collective every process joins.
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class EMA:
    """Shadow copies of the trainable parameters, updated as ``shadow += (1 - d) (param - shadow)``.

    The decay warms up, ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
    averages are not dominated by the random initialisation. Shadows are float32 (a bfloat16
    average could not move by ``1 - d``); with sharded (FSDP2) parameters each process keeps its
    shard.

    Args:
        module: the module whose parameters (those with ``requires_grad``) are averaged.
        decay: the target decay in ``(0, 1)``.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: must be in (0, 1), got {decay}")
        self.decay = decay
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().to(torch.float32, copy=True) for p in self.params]
        self.updates = 0

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """Move the shadows towards the current parameters."""
        w = 1.0 - self.current_decay()
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach().to(s.dtype), w)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the parameters hold the averaged weights; restored afterwards."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for s, p in zip(self.shadow, self.params, strict=True):
                p.copy_(s.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for keep, p in zip(saved, self.params, strict=True):
                    p.copy_(keep)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """``{parameter name: averaged weight}``, gathered whole (a collective under FSDP2)."""
        return {n: _full(s).detach().cpu() for n, s in zip(self.names, self.shadow, strict=True)}

    @torch.no_grad()
    def load_full_state_dict(self, state: Mapping[str, torch.Tensor], updates: int) -> None:
        """Restore shadows from whole tensors (e.g. read back from ``model_ema.safetensors``).

        Raises:
            ValueError: a tracked parameter missing from ``state``, or a shape that differs.
        """
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"state: no averaged weights for {missing[:5]}")
        for n, s in zip(self.names, self.shadow, strict=True):
            full = state[n].to(torch.float32)
            if hasattr(s, "device_mesh"):  # FSDP2 shard: take this process's part of the whole tensor
                from torch.distributed.tensor import distribute_tensor

                full = distribute_tensor(full.to(s.device), s.device_mesh, s.placements)
            elif tuple(full.shape) != tuple(s.shape):
                raise ValueError(f"state: {n} has shape {tuple(full.shape)}, expected {tuple(s.shape)}")
            s.copy_(full)
        self.updates = int(updates)
