"""The batch contract between data, environments and policies, and the collate that produces it.

A batch is a ``dict``; training items and environment observations are the same dict without the
``B`` axis. Keys (constants below), shapes and meaning:

| key | shape, dtype | meaning |
|---|---|---|
| ``images`` | ``[B, V, 3, H, W]`` uint8 | upright RGB views (float in ``[0, 1]`` also accepted) |
| ``instruction`` | ``list[str]`` of length B | the task instruction |
| ``state`` | ``[B, S]`` float32 | proprioception, padded/truncated to the policy's S |
| ``state_mask`` | ``[B, S]`` bool | True where ``state`` holds a real value |
| ``depth`` | ``[B, V, H, W]`` float32 | optional: metric z-depth in metres |
| ``intrinsics`` | ``[B, V, 3, 3]`` float32 | optional: ``K`` of each upright view (OpenCV) |
| ``extrinsics`` | ``[B, V, 4, 4]`` float32 | optional: camera-to-world pose, OpenCV axes |
| ``actions`` | ``[B, H, A]`` float32 | training only: the action chunk from this step on |
| ``action_mask`` | ``[B, H]`` bool | training: False on padding past the episode's end |

Any other key is carried along: numbers and arrays are stacked into tensors, strings into lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from flowvla.typing import Bool, Float, Shaped, typechecked

__all__ = [
    "ACTIONS",
    "ACTION_MASK",
    "DEPTH",
    "EXTRINSICS",
    "IMAGES",
    "INSTRUCTION",
    "INTRINSICS",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "STATE",
    "STATE_MASK",
    "collate",
    "pad_state",
]

IMAGES = "images"
INSTRUCTION = "instruction"
STATE = "state"
STATE_MASK = "state_mask"
DEPTH = "depth"
INTRINSICS = "intrinsics"
EXTRINSICS = "extrinsics"
ACTIONS = "actions"
ACTION_MASK = "action_mask"

#: Keys every observation batch has.
REQUIRED_KEYS = (IMAGES, INSTRUCTION, STATE)
#: Keys a batch may have; geometry keys come together, as do the action keys.
OPTIONAL_KEYS = (STATE_MASK, DEPTH, INTRINSICS, EXTRINSICS, ACTIONS, ACTION_MASK)


@typechecked
def pad_state(
    state: Shaped[np.ndarray, " S0"], dim: int
) -> tuple[Float[np.ndarray, " S"], Bool[np.ndarray, " S"]]:
    """Zero-pad or truncate a state vector to ``dim`` entries: ``[S0] -> ([dim], mask [dim])``.

    The mask is True for entries that came from ``state``; truncation drops trailing entries.
    """
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    out = np.zeros(dim, dtype=np.float32)
    n = min(dim, state.shape[0])
    out[:n] = state[:n]
    mask = np.zeros(dim, dtype=bool)
    mask[:n] = True
    return out, mask


def _to_tensor(key: str, values: list[Any]) -> torch.Tensor:
    try:
        arrays = [v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
    except Exception as e:  # pragma: no cover - exotic payloads
        raise TypeError(f"collate: cannot convert {key!r} to an array: {e}") from e
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"collate: {key!r} has different shapes across items: {sorted(shapes)}")
    stacked = np.stack(arrays)
    if stacked.dtype == np.float64:
        stacked = stacked.astype(np.float32)
    if stacked.dtype.kind not in "biuf":
        raise TypeError(f"collate: {key!r} has dtype {stacked.dtype}, which is not numeric")
    return torch.from_numpy(np.ascontiguousarray(stacked))


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack unbatched items / observations into a batch (see the module table).

    numpy arrays become tensors (float64 -> float32); strings become lists. Every item must have the
    same keys, and images must be ``[V, 3, H, W]``.

    Raises:
        ValueError: empty input, keys that differ between items (naming them), shape mismatches.
    """
    if not items:
        raise ValueError("collate: items is empty")
    keys = list(items[0].keys())
    for i, item in enumerate(items[1:], start=1):
        if set(item.keys()) != set(keys):
            diff = sorted(set(item.keys()) ^ set(keys))
            raise ValueError(f"collate: item {i} differs from item 0 in keys {diff}")
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise ValueError(f"collate: items lack required keys {missing}")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [item[key] for item in items]
        if all(isinstance(v, str) for v in values):
            batch[key] = list(values)
        else:
            batch[key] = _to_tensor(key, values)
    img = batch[IMAGES]
    if img.ndim != 5 or img.shape[2] != 3:
        raise ValueError(f"collate: images must be [V, 3, H, W] per item, got batch shape {tuple(img.shape)}")
    if STATE_MASK not in batch:
        batch[STATE_MASK] = torch.ones(batch[STATE].shape, dtype=torch.bool)
    return batch
