"""What ``predict_action`` reports besides actions: token signatures, layer RMS, DiT block statistics.

A token signature changes whenever the tokenised prompt or the placement of image tokens changes
(a tokenizer upgrade, a new joiner, a template edit), which is how silent tokenisation regressions
show up in logs. Per-layer RMS and per-block statistics show dead or exploding layers at a glance.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from flowvla.typing import Bool, Float, Int, Tensor, typechecked

__all__ = ["PER_SAMPLE_DEBUG", "layer_rms", "record_block_stats", "sample_debug", "token_signatures"]

#: The ``debug_info`` entries of ``predict_action`` that hold one item per sample (the rest describe
#: the whole call: layer RMS, block statistics, timings, the solver).
PER_SAMPLE_DEBUG = ("token_signature", "image_tokens", "router_weights", "keypoints")


@typechecked
def token_signatures(
    input_ids: Int[Tensor, "B T"], attention_mask: Bool[Tensor, "B T"], image_token_mask: Bool[Tensor, "B T"]
) -> list[str]:
    """Per sample, a 16-hex-digit hash of its real token ids and its image-token positions."""
    out = []
    for ids, valid, image in zip(input_ids.cpu(), attention_mask.cpu(), image_token_mask.cpu(), strict=True):
        h = hashlib.sha1()
        h.update(str(ids[valid].tolist()).encode())
        h.update(str(image.nonzero().flatten().tolist()).encode())
        out.append(h.hexdigest()[:16])
    return out


@typechecked
def layer_rms(hidden_states: Sequence[Float[Tensor, "B T D"]], mask: Bool[Tensor, "B T"]) -> list[float]:
    """Root mean square of each layer's hidden states over valid tokens (one float per layer)."""
    m = mask.unsqueeze(-1).float()
    count = (m.sum() * hidden_states[0].shape[-1]).clamp_min(1)
    # One host transfer for all layers (a GPU sync per layer would stall inference).
    return torch.stack([((h.float() * m) ** 2).sum().div(count).sqrt() for h in hidden_states]).tolist()


@contextlib.contextmanager
def record_block_stats(blocks: nn.ModuleList) -> Iterator[list[dict[str, float]]]:
    """Record, per block, the RMS of its output and of its update (output - input), averaged over calls.

    Yields a list that is filled when the context exits: one ``{"rms_out", "rms_update", "calls"}``
    per block.
    """
    # Accumulated on the device and read once at exit: no host sync inside the solver loop.
    sums: list[list] = [[0.0, 0.0, 0] for _ in blocks]

    def hook(index: int):
        def fn(module: nn.Module, args: tuple, output: Tensor) -> None:
            x = args[0]
            sums[index][0] = sums[index][0] + output.detach().float().pow(2).mean().sqrt()
            sums[index][1] = sums[index][1] + (output - x).detach().float().pow(2).mean().sqrt()
            sums[index][2] += 1

        return fn

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(blocks)]
    stats: list[dict[str, float]] = []
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        for rms_out, rms_update, calls in sums:
            n = max(calls, 1)
            stats.append({"rms_out": float(rms_out) / n, "rms_update": float(rms_update) / n, "calls": calls})


@typechecked
def sample_debug(debug: dict[str, Any], index: int, batch: int) -> dict[str, Any]:
    """Sample ``index``'s view of a batch's ``debug_info``, shaped as a batch of one reports it: the
    ``PER_SAMPLE_DEBUG`` lists (token signature, image tokens, router weights, keypoints) and the
    padding cut to that sample, every other entry as it is."""
    if batch == 1:
        return debug
    out = dict(debug)
    for key in PER_SAMPLE_DEBUG:
        if isinstance(out.get(key), list) and len(out[key]) == batch:
            out[key] = [out[key][index]]
    padding = out.get("padding")
    if isinstance(padding, dict) and isinstance(padding.get("padded_tokens"), list):
        tokens = padding["padded_tokens"]
        if len(tokens) == batch:
            out["padding"] = {**padding, "padded_tokens": [tokens[index]], "any": bool(tokens[index])}
    return out
