"""What an evaluation measures beyond success: the Wilson interval of a success rate, and the
smoothness of the executed arm actions (overall, and within a chunk vs across re-plans)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from flowvla.envs.libero import ACTION_DIM

__all__ = ["SEAM_SMOOTHNESS", "action_smoothness", "wilson_interval"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%); ``(0, 1)`` when ``n == 0``.

    Unlike the normal approximation it stays inside ``[0, 1]`` and is sensible at 0 / n successes,
    which is where LIBERO success rates live.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp the float round-off at 0 / n successes so the interval contains p exactly.
    return max(0.0, min(centre - half, p)), min(1.0, max(centre + half, p))


#: The keys [`action_smoothness`][flowvla.envs.metrics.action_smoothness] adds when it knows the re-plans.
SEAM_SMOOTHNESS = ("second_diff_within", "second_diff_across", "third_diff_within", "third_diff_across")


def action_smoothness(actions: np.ndarray, chunk_starts: Sequence[int] | None = None) -> dict[str, float]:
    """Mean squared 2nd and 3rd finite differences over time of executed ``[T, 7]`` actions.

    Only the six arm dimensions count: the gripper command is a step (-1 -> +1) whose differences
    would swamp the arm's. A difference needs 3 (4) actions; shorter episodes give 0.

    Args:
        actions: ``[T, 7]`` executed actions.
        chunk_starts: the steps at which a freshly predicted chunk began (re-plans). When given, each
            difference is also counted as *within* one chunk or *across* a re-plan (its window holds a
            chunk's first action after its own first one): a chunk-smoothness loss can only act
            within, the seams between chunks are the re-planning's.

    Returns:
        ``second_diff`` and ``third_diff``; with ``chunk_starts`` also ``second_diff_within``,
        ``second_diff_across``, ``third_diff_within`` and ``third_diff_across`` (0 where no window of
        that kind exists).
    """
    if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"actions: expected [T, {ACTION_DIM}], got {list(actions.shape)}")
    arm = actions[:, : ACTION_DIM - 1]
    seam = np.zeros(len(arm), dtype=bool)
    if chunk_starts is not None:
        starts = np.asarray(list(chunk_starts), dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() >= len(arm)):
            raise ValueError(f"chunk_starts: steps must lie in [0, {len(arm)}), got {starts.tolist()}")
        seam[starts] = True
    out: dict[str, float] = {}
    for name, n in (("second_diff", 2), ("third_diff", 3)):
        sq = np.square(np.diff(arm, n=n, axis=0)).sum(-1)  # [T - n]
        out[name] = float(sq.mean()) if len(sq) else 0.0
        if chunk_starts is not None:
            # Window t covers steps t..t+n; a seam at t+1..t+n means two chunks meet inside it.
            across = np.zeros(0, dtype=bool)
            if len(sq):  # a window view needs at least one whole window
                across = np.lib.stride_tricks.sliding_window_view(seam[1:], n).any(-1)
            for part, mask in (("within", ~across), ("across", across)):
                out[f"{name}_{part}"] = float(sq[mask].mean()) if mask.any() else 0.0
    return out
