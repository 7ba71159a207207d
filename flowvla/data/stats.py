"""Normalisation statistics (computed once, saved as JSON) and the normaliser that applies them.

Statistics per feature dimension: ``mean``, ``std``, ``min``, ``max``, ``q01``, ``q99`` (1st / 99th
percentiles, exact, over every frame) and ``count``. Two normalisations:

- ``"mean_std"``: ``(x - mean) / (std + eps)``.
- ``"quantile"``: ``q01 -> -1``, ``q99 -> +1`` linearly (openpi's choice for actions: robust to the
  rare large deltas LIBERO demos contain); values outside are not clipped unless ``clip=True``.

Dimensions whose spread is (nearly) zero are passed through centred, never divided by ~0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowvla.io import write_json_atomic
from flowvla.typing import Float, typechecked

__all__ = ["FeatureStats", "Normalizer", "compute_stats", "load_stats", "save_stats"]

_EPS = 1e-8


@dataclasses.dataclass
class FeatureStats:
    """Per-dimension statistics of one feature (all lists have the feature's dimension)."""

    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    q01: list[float]
    q99: list[float]
    count: int

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def from_array(cls, x: np.ndarray) -> FeatureStats:
        """Statistics of ``x [N, D]`` over its rows."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"need a non-empty [N, D] array, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("values contain NaN or Inf; statistics would be meaningless")
        q = np.quantile(x, [0.01, 0.99], axis=0)
        return cls(
            mean=x.mean(0).tolist(),
            std=x.std(0).tolist(),
            min=x.min(0).tolist(),
            max=x.max(0).tolist(),
            q01=q[0].tolist(),
            q99=q[1].tolist(),
            count=int(x.shape[0]),
        )


def compute_stats(features: Mapping[str, Iterable[np.ndarray]]) -> dict[str, FeatureStats]:
    """Statistics of each feature from its per-episode arrays (each ``[T_i, D]``), over all frames.

    Example: ``compute_stats({"actions": [src.actions(i) for i in range(len(src))]})``.
    """
    out = {}
    for name, chunks in features.items():
        arrays = [np.asarray(c) for c in chunks]
        if not arrays:
            raise ValueError(f"feature {name!r} has no data")
        dims = {a.shape[-1] for a in arrays}
        if len(dims) != 1 or any(a.ndim != 2 for a in arrays):
            raise ValueError(
                f"feature {name!r}: episodes must all be [T, D] with one D, got "
                f"{sorted({a.shape for a in arrays})}"
            )
        out[name] = FeatureStats.from_array(np.concatenate(arrays, axis=0))
    return out


def save_stats(
    stats: Mapping[str, FeatureStats], path: str | os.PathLike, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write statistics (plus optional metadata, e.g. the source files) as JSON, atomically."""
    payload: dict[str, Any] = {name: dataclasses.asdict(s) for name, s in stats.items()}
    if meta:
        payload["_meta"] = dict(meta)
    return write_json_atomic(path, payload)


def load_stats(path: str | os.PathLike) -> dict[str, FeatureStats]:
    """Read statistics written by [`save_stats`][flowvla.data.stats.save_stats] (metadata ignored)."""
    with open(path) as f:
        payload = json.load(f)
    fields = {f.name for f in dataclasses.fields(FeatureStats)}
    out = {}
    for name, d in payload.items():
        if name == "_meta":
            continue
        missing = fields - set(d)
        if missing:
            raise ValueError(f"{path}: feature {name!r} lacks {sorted(missing)}")
        out[name] = FeatureStats(**{k: d[k] for k in fields})
    return out


class Normalizer:
    """Normalise / unnormalise one feature with its [`FeatureStats`][flowvla.data.stats.FeatureStats].

    Works on numpy arrays and torch tensors of shape ``[..., D']``. With ``D' > D`` (a state padded
    to the policy's size) the extra trailing dimensions are left as they are (zeros stay zeros).

    Args:
        stats: the feature's statistics.
        mode: ``"mean_std"`` or ``"quantile"``.
        clip: clip normalised values to ``[-1, 1]`` (quantile mode) / ``[-5, 5]`` (mean_std).
    """

    def __init__(self, stats: FeatureStats, mode: str = "quantile", clip: bool = False) -> None:
        if mode not in ("mean_std", "quantile"):
            raise ValueError(f"mode={mode!r}: choose 'mean_std' or 'quantile'")
        self.mode, self.clip, self.stats = mode, clip, stats
        if mode == "mean_std":
            centre = np.asarray(stats.mean)
            scale = np.asarray(stats.std)
        else:
            lo, hi = np.asarray(stats.q01), np.asarray(stats.q99)
            centre, scale = (hi + lo) / 2.0, (hi - lo) / 2.0
        # Constant dimensions (e.g. an unused gripper finger): centre them, do not divide by ~0.
        self.centre = centre.astype(np.float64)
        self.scale = np.where(scale > _EPS, scale, 1.0).astype(np.float64)
        self.bound = 1.0 if mode == "quantile" else 5.0

    def _params(self, x: Any) -> tuple[Any, Any, int]:
        d = self.centre.shape[0]
        if x.shape[-1] < d:
            raise ValueError(f"input has {x.shape[-1]} dims in its last axis; these statistics have {d}")
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(self.centre, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.scale, dtype=x.dtype, device=x.device),
                d,
            )
        return self.centre.astype(x.dtype), self.scale.astype(x.dtype), d

    @typechecked
    def normalize(
        self, x: Float[np.ndarray, "*batch D"] | Float[torch.Tensor, "*batch D"]
    ) -> Float[np.ndarray, "*batch D"] | Float[torch.Tensor, "*batch D"]:
        """Raw -> normalised (the first ``len(stats)`` dims; the rest copied)."""
        c, s, d = self._params(x)
        out = x.clone() if isinstance(x, torch.Tensor) else x.copy()
        y = (x[..., :d] - c) / s
        if self.clip:
            y = (
                y.clamp(-self.bound, self.bound)
                if isinstance(y, torch.Tensor)
                else np.clip(y, -self.bound, self.bound)
            )
        out[..., :d] = y
        return out

    @typechecked
    def unnormalize(
        self, y: Float[np.ndarray, "*batch D"] | Float[torch.Tensor, "*batch D"]
    ) -> Float[np.ndarray, "*batch D"] | Float[torch.Tensor, "*batch D"]:
        """Normalised -> raw (inverse of [`normalize`][flowvla.data.stats.Normalizer.normalize] where it did
        not clip)."""
        c, s, d = self._params(y)
        out = y.clone() if isinstance(y, torch.Tensor) else y.copy()
        out[..., :d] = y[..., :d] * s + c
        return out
