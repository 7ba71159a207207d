"""Write rollout videos: MP4 through ``imageio`` + ``imageio-ffmpeg`` when installed, GIF through Pillow
otherwise (Pillow comes with LIBERO's dependencies); views tiled side by side
([`tile_views`][flowvla.envs.video.tile_views]) and text drawn above them
([`caption_frames`][flowvla.envs.video.caption_frames]: the instruction, the step, the outcome)."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowvla.extras import install_command, requires_extra
from flowvla.io import atomic_path

__all__ = ["caption_frames", "mp4_available", "tile_views", "write_video"]


def mp4_available() -> bool:
    """Whether MP4 encoding works here (``imageio`` with the ``imageio-ffmpeg`` binary)."""
    return all(importlib.util.find_spec(m) is not None for m in ("imageio", "imageio_ffmpeg"))


def tile_views(images: np.ndarray) -> np.ndarray:
    """Views side by side: ``[V, 3, H, W]`` uint8 -> ``[H, V * W, 3]`` uint8 (a video frame)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [V, 3, H, W], got shape {images.shape}")
    return np.ascontiguousarray(np.concatenate(list(images.transpose(0, 2, 3, 1)), axis=1))


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (FreeType), Pillow >= 10.1
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()  # Pillow's small bitmap font


def _wrap(text: str, font: Any, width: float) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels in ``font``, broken between words (a word
    longer than a line stands alone)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def caption_frames(
    frames: Sequence[np.ndarray],
    header: str,
    footers: Sequence[str] | None = None,
    *,
    font_size: int | None = None,
    background: tuple[int, int, int] = (24, 24, 24),
    color: tuple[int, int, int] = (240, 240, 240),
) -> list[np.ndarray]:
    """``frames`` with a text band above each: ``header`` (wrapped to the frame's width) and the
    frame's own line from ``footers`` (e.g. its step). The band has one height for every frame, so a
    video's frames keep one size; the images below it are unchanged.

    Args:
        frames: ``[H, W, 3]`` uint8 frames of one shape.
        header: text on every frame (the instruction, the outcome).
        footers: one line per frame, or None.
        font_size: text height in pixels (default: the frame's width / 40, at least 11).
        background: the band's colour.
        color: the text's colour.

    Returns:
        ``[H + band, W, 3]`` uint8 frames.
    """
    if not frames:
        raise ValueError("frames is empty: nothing to caption")
    if footers is not None and len(footers) != len(frames):
        raise ValueError(f"footers: expected one line per frame ({len(frames)}), got {len(footers)}")
    h, w = frames[0].shape[:2]
    if any(f.shape != frames[0].shape or f.ndim != 3 or f.shape[2] != 3 for f in frames):
        raise ValueError("frames must all be [H, W, 3] with one shape")
    with requires_extra("data", "drawing text on video frames"):
        from PIL import Image, ImageDraw
    font = _font(font_size or max(11, w // 40))
    pad = 4
    line_h = int(font.getbbox("Ag")[3]) + 2
    lines = [line for part in header.splitlines() for line in _wrap(part, font, w - 2 * pad)]
    band = pad * 2 + line_h * (len(lines) + (footers is not None))
    band += (h + band) % 2  # an even height: H.264 (yuv420p) needs one, or the writer pads
    out = []
    for i, frame in enumerate(frames):
        canvas = Image.new("RGB", (w, h + band), background)
        canvas.paste(Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)), (0, band))
        draw = ImageDraw.Draw(canvas)
        for k, line in enumerate([*lines, *([footers[i]] if footers is not None else [])]):
            draw.text((pad, pad + k * line_h), line, fill=color, font=font)
        out.append(np.asarray(canvas))
    return out


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
