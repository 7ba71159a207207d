"""Validate a policy batch before any compute: missing keys, dtypes, shapes, NaN/Inf, sizes.

Every error names the key and says what was expected, so a data-pipeline mismatch (the most common
cause of a reproduction scoring far below the reported number) fails loudly at the first batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from flowvla.data.batch import ACTION_MASK, ACTIONS, DEPTH, EXTRINSICS, IMAGES, INSTRUCTION, INTRINSICS, STATE

__all__ = ["BatchError", "check_batch"]


class BatchError(ValueError):
    """A batch does not match the policy's contract (the message names the key)."""


def _tensor(batch: Mapping[str, Any], key: str) -> torch.Tensor:
    value = batch[key]
    if not isinstance(value, torch.Tensor):
        raise BatchError(f"{key}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def _finite(key: str, x: torch.Tensor) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise BatchError(f"{key}: contains NaN or Inf")


def _shape(key: str, x: torch.Tensor, expected: tuple[int | None, ...], meaning: str) -> None:
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape, strict=True))
    if not ok:
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise BatchError(f"{key}: expected shape {want} ({meaning}), got {tuple(x.shape)}")


def check_batch(
    batch: Mapping[str, Any],
    *,
    num_views: int,
    image_size: tuple[int, int],
    state_dim: int,
    truncate_state: bool = False,
    horizon: int | None = None,
    action_dim: int | None = None,
    needs_depth: bool = False,
    training: bool = False,
) -> int:
    """Check ``batch`` against the contract of [`flowvla.data.batch`][flowvla.data.batch]; return the batch
    size.

    Args:
        batch: the batch dict.
        num_views: ``V`` expected in ``images``.
        image_size: ``(H, W)`` expected in ``images`` (and ``depth``).
        state_dim: the policy's ``S``; a shorter state is fine (zero-padded), a longer one is an error
            unless ``truncate_state``; 0 means the policy takes no state.
        truncate_state: allow states longer than ``state_dim``.
        horizon: ``H`` of ``actions`` (training).
        action_dim: ``A`` of ``actions`` (training).
        needs_depth: the policy fuses geometry, so ``depth`` is required.
        training: ``actions`` are required.
    """
    required = [IMAGES, INSTRUCTION] + ([STATE] if state_dim else []) + ([DEPTH] if needs_depth else [])
    required += [ACTIONS] if training else []
    missing = [k for k in required if k not in batch]
    if missing:
        raise BatchError(f"batch: missing keys {missing} (has {sorted(batch)})")
    images = _tensor(batch, IMAGES)
    if images.dim() != 5 or images.shape[2] != 3:
        raise BatchError(f"images: expected [B, V, 3, H, W], got {tuple(images.shape)}")
    b = images.shape[0]
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise BatchError(f"images: expected uint8 or float in [0, 1], got {images.dtype}")
    _finite(IMAGES, images)
    if images.is_floating_point() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise BatchError("images: float images must lie in [0, 1] (uint8 images are scaled automatically)")
    _shape(IMAGES, images, (b, num_views, 3, *image_size), f"{num_views} views at {image_size}")

    instructions = batch[INSTRUCTION]
    if isinstance(instructions, str) or not all(isinstance(s, str) for s in instructions):
        raise BatchError("instruction: expected a list of strings, one per sample")
    if len(instructions) != b:
        raise BatchError(f"instruction: {len(instructions)} strings for a batch of {b}")
    if any(not s.strip() for s in instructions):
        raise BatchError("instruction: empty instruction")

    if state_dim:
        state = _tensor(batch, STATE)
        if state.dim() != 2 or state.shape[0] != b or not state.is_floating_point():
            raise BatchError(f"state: expected float [B={b}, S], got {state.dtype} {tuple(state.shape)}")
        if state.shape[1] > state_dim and not truncate_state:
            raise BatchError(
                f"state: {state.shape[1]} dims but the policy's state_dim is {state_dim} "
                "(pad/truncate in the data pipeline, or build the policy with truncate_state=True)"
            )
        _finite(STATE, state)
    if DEPTH in batch:
        depth = _tensor(batch, DEPTH)
        # Non-finite or zero depth marks missing measurements: allowed, the point map masks it.
        _shape(DEPTH, depth, (b, num_views, *image_size), "metric depth per view at the image size")
    for key, size in ((INTRINSICS, 3), (EXTRINSICS, 4)):
        if key in batch and batch[key] is not None:
            x = _tensor(batch, key)
            _shape(key, x, (b, num_views, size, size), f"one {size}x{size} matrix per view")
            _finite(key, x)
    if training:
        actions = _tensor(batch, ACTIONS)
        _shape(ACTIONS, actions, (b, horizon, action_dim), "the action chunk")
        _finite(ACTIONS, actions)
        if ACTION_MASK in batch:
            mask = _tensor(batch, ACTION_MASK)
            if mask.dtype != torch.bool:
                raise BatchError(f"action_mask: expected bool, got {mask.dtype}")
            _shape(ACTION_MASK, mask, (b, horizon), "valid horizon steps")
    return b
