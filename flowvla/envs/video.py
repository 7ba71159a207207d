"""Write rollout videos: MP4 through ``imageio`` + ``imageio-ffmpeg`` when installed, GIF through Pillow
otherwise (Pillow comes with LIBERO's dependencies)."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from flowvla.extras import install_command, requires_extra
from flowvla.io import atomic_path

__all__ = ["mp4_available", "tile_views", "write_video"]


def mp4_available() -> bool:
    """Whether MP4 encoding works here (``imageio`` with the ``imageio-ffmpeg`` binary)."""
    return all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))


def tile_views(images: np.ndarray) -> np.ndarray:
    """Views side by side: ``[V, 3, H, W]`` uint8 -> ``[H, V * W, 3]`` uint8 (a video frame)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [V, 3, H, W], got shape {images.shape}")
    return np.ascontiguousarray(np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=1))


def write_video(frames: Sequence[np.ndarray], path: str | os.PathLike, fps: float = 10.0) -> Path:
    """Write ``frames`` (each ``[H, W, 3]`` uint8) to ``path`` atomically and return the path written.

    ``.mp4`` needs ``imageio-ffmpeg``; without it the video is written as a GIF next to the requested
    path (the returned path says which). ``.gif`` always uses Pillow.
    """
    if not frames:
        raise ValueError("frames is empty: nothing to write")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"frames must all be [H, W, 3] with one shape, got shapes {sorted(shapes)}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"path must end in .mp4 or .gif, got {str(path)!r}")
    if path.suffix.lower() == ".mp4" and not mp4_available():
        warnings.warn(
            "imageio-ffmpeg is not installed; writing a GIF instead of an MP4 (the data extra has it: "
            f"{install_command('data')})",
            stacklevel=2,
        )
        path = path.with_suffix(".gif")
    arr = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".mp4":
            with requires_extra("data", "writing MP4 videos"):
                import imageio.v2 as imageio

            # libx264 with yuv420p needs even sizes; macro_block_size=2 pads by at most a pixel.
            imageio.mimwrite(
                tmp,
                arr,
                fps=fps,
                codec="libx264",
                quality=7,
                macro_block_size=2,
                ffmpeg_log_level="error",
                pixelformat="yuv420p",
            )
        else:
            with requires_extra("data", "writing GIF videos"):
                from PIL import Image

            pil = [Image.fromarray(f) for f in arr]
            pil[0].save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=pil[1:],
                duration=max(1, round(1000 / fps)),
                loop=0,
            )
    return path
