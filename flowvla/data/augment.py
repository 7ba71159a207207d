"""Image augmentations used for LIBERO policies, geometry-aware.

- **Random shift** (DrQ): pad by ``shift`` pixels (edge replicate), crop back to ``H x W`` at a random
  offset.
- **Random crop** (OpenVLA / openpi): crop a random window of ``crop_scale`` of the area (same aspect)
  and resize it back to ``H x W`` (bilinear).
- **Colour jitter**: brightness, contrast, saturation factors in ``[1 - a, 1 + a]``; hue rotated by up
  to ``hue`` turns (chroma rotation in YIQ space).

When depth and intrinsics are given, crops and shifts are applied to the depth map too (nearest) and
``K`` is updated so that a world point still projects onto the same scene content; extrinsics are
unchanged. Pixel coordinates use the pixel-centre convention of
[`flowvla.envs.cameras`][flowvla.envs.cameras]."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from flowvla.typing import Float, Shaped, Tensor, typechecked

__all__ = ["ImageAugment"]

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(g: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator | None, lo: int, hi: int) -> int:
    """Uniform integer in ``[lo, hi]``."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


@dataclasses.dataclass
class ImageAugment:
    """Random image augmentation of one item's views (see the module docs).

    Attributes:
        shift: random-shift padding in pixels (0: off).
        crop_scale: area fraction kept by the random crop (1: off).
        brightness, contrast, saturation: jitter amplitudes (0: off).
        hue: hue rotation amplitude in turns, at most 0.5 (0: off).
        per_view: draw the parameters independently for each view (else one draw for all).
    """

    shift: int = 0
    crop_scale: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    per_view: bool = True

    def __post_init__(self) -> None:
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")

    @property
    def active(self) -> bool:
        return bool(
            self.shift
            or self.crop_scale < 1.0
            or self.brightness
            or self.contrast
            or self.saturation
            or self.hue
        )

    @typechecked
    def __call__(
        self,
        images: Shaped[Tensor, "V 3 H W"],
        generator: torch.Generator | None = None,
        depth: Float[Tensor, "V H W"] | None = None,
        intrinsics: Float[Tensor, "V 3 3"] | None = None,
    ) -> tuple[Shaped[Tensor, "V 3 H W"], Float[Tensor, "V H W"] | None, Float[Tensor, "V 3 3"] | None]:
        """Augment ``images`` (uint8 or float in ``[0, 1]``); returns ``(images, depth, intrinsics)``."""
        if (depth is None) != (intrinsics is None):
            raise ValueError("give depth and intrinsics together (crops must update both)")
        v, _, h, w = images.shape
        out_img, out_depth, out_k = [], [], []
        params = None
        for i in range(v):
            if params is None or self.per_view:
                params = self._draw(generator, h, w)
            img = images[i].float() / 255.0 if images.dtype == torch.uint8 else images[i].float()
            d = depth[i] if depth is not None else None
            k = intrinsics[i].clone() if intrinsics is not None else None
            img, d, k = self._geometric(img, d, k, params)
            img = self._colour(img, params)
            out_img.append(img)
            out_depth.append(d)
            out_k.append(k)
        res = torch.stack(out_img)
        if images.dtype == torch.uint8:
            res = (res * 255.0).round().clamp(0, 255).to(torch.uint8)
        else:
            res = res.to(images.dtype)
        return (
            res,
            torch.stack(out_depth) if depth is not None else None,
            torch.stack(out_k) if intrinsics is not None else None,
        )

    def _draw(self, g: torch.Generator | None, h: int, w: int) -> dict[str, float | int]:
        p: dict[str, float | int] = {}
        if self.crop_scale < 1.0:
            s = math.sqrt(self.crop_scale)
            ch, cw = max(1, round(h * s)), max(1, round(w * s))
            p.update(ch=ch, cw=cw, cy=_randint(g, 0, h - ch), cx=_randint(g, 0, w - cw))
        if self.shift:
            p.update(dy=_randint(g, 0, 2 * self.shift), dx=_randint(g, 0, 2 * self.shift))
        p["b"] = _uniform(g, 1 - self.brightness, 1 + self.brightness)
        p["c"] = _uniform(g, 1 - self.contrast, 1 + self.contrast)
        p["s"] = _uniform(g, 1 - self.saturation, 1 + self.saturation)
        p["h"] = _uniform(g, -self.hue, self.hue)
        return p

    def _geometric(
        self, img: Tensor, d: Tensor | None, k: Tensor | None, p: dict[str, float | int]
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        _, h, w = img.shape
        if "ch" in p:
            y0, x0, ch, cw = int(p["cy"]), int(p["cx"]), int(p["ch"]), int(p["cw"])
            img = F.interpolate(
                img[None, :, y0 : y0 + ch, x0 : x0 + cw],
                size=(h, w),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )[0]
            if d is not None and k is not None:
                d = F.interpolate(d[None, None, y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="nearest")[
                    0, 0
                ]
                sx, sy = w / cw, h / ch
                # Pixel centres: u' = (u - x0 + 0.5) * sx - 0.5.
                k[0, 0] *= sx
                k[1, 1] *= sy
                k[0, 2] = (k[0, 2] - x0 + 0.5) * sx - 0.5
                k[1, 2] = (k[1, 2] - y0 + 0.5) * sy - 0.5
        if "dy" in p:
            s, dy, dx = self.shift, int(p["dy"]), int(p["dx"])
            img = F.pad(img[None], (s, s, s, s), mode="replicate")[0, :, dy : dy + h, dx : dx + w]
            if d is not None and k is not None:
                d = F.pad(d[None, None], (s, s, s, s), mode="replicate")[0, 0, dy : dy + h, dx : dx + w]
                k[0, 2] += s - dx
                k[1, 2] += s - dy
        return img, d, k

    def _colour(self, img: Tensor, p: dict[str, float | int]) -> Tensor:
        if self.brightness:
            img = img * p["b"]
        if self.contrast:
            mean = (img * _YIQ[0].view(3, 1, 1)).sum(0).mean()
            img = (img - mean) * p["c"] + mean
        if self.saturation:
            grey = (img * _YIQ[0].view(3, 1, 1)).sum(0, keepdim=True)
            img = (img - grey) * p["s"] + grey
        if self.hue:
            yiq = torch.einsum("ij,jhw->ihw", _YIQ, img)
            a = 2 * math.pi * float(p["h"])
            rot = torch.tensor(
                [[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]]
            )
            img = torch.einsum("ij,jhw->ihw", torch.linalg.inv(_YIQ) @ rot, yiq)
        return img.clamp(0.0, 1.0)
