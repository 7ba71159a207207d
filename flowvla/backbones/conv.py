"""``ConvEncoder``: a small GroupNorm ResNet that turns an image into patch tokens on a grid.

The visual-imitation recipes that learn from ~50 demonstrations train a CNN from scratch (Diffusion
Policy, robomimic: ResNet-18 with GroupNorm instead of BatchNorm, since batch statistics of highly
correlated frames are poor). This encoder is such a CNN, sized for CPU training: a stride-2 stem and
one stride-2 residual stage per further width, so the output stride is ``2 ** len(channels)``. Its
last feature map, flattened row-major, is a ``[N, D]`` token sequence on a
[`PatchGrid`][flowvla.geometry.PatchGrid] whose patch size is that stride, which is what a
[`ComposedBackbone`][flowvla.backbones.composed.ComposedBackbone] projects into its language model
and what 2D-3D fusion aligns depth with. A learned position embedding per grid cell is added, so
attention downstream knows where each token lies (convolutions alone leave that implicit).

Legend: ``B`` images, ``C`` channels, ``N`` grid cells, ``D`` output width.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flowvla.geometry import PatchGrid
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["ConvEncoder"]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class _ResidualStage(nn.Module):
    """``blocks`` basic residual blocks; the first one strides by 2 and changes the width. With
    ``blocks=0``, one plain stride-2 convolution (GroupNorm, ReLU): half the cost, no shortcut."""

    def __init__(self, c_in: int, c_out: int, blocks: int, groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if blocks == 0:
            layers = [
                nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False),
                _norm(c_out, groups),
                nn.ReLU(inplace=True),
            ]
        for i in range(blocks):
            layers.append(_BasicBlock(c_in if i == 0 else c_out, c_out, 2 if i == 0 else 1, groups))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class _StridedPointwise(nn.Conv2d):
    """A bias-free 1x1 convolution with stride ``s``, computed as ``s``-subsampling then a unit-stride
    1x1 convolution (the same result, parameters and state-dict keys as ``nn.Conv2d(c_in, c_out, 1,
    s)``).

    Why not ``nn.Conv2d`` itself: oneDNN's AVX2 kernel for the weight gradient of a strided 1x1
    convolution on channels-last input with fewer input channels than its 8-wide block (2-7) writes
    past its workspace (uxlfoundation/oneDNN#6035, still in torch 2.13): heap corruption with one
    thread, silently wrong weight gradients (8x off) with two. Unit stride takes a different kernel.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        sh, sw = self.stride
        return nn.functional.conv2d(x[:, :, ::sh, ::sw], self.weight)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out, groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(_StridedPointwise(c_in, c_out, stride), _norm(c_out, groups))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(y)) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """GroupNorm ResNet from images ``[B, 3, H, W]`` to patch tokens ``[B, N, D]`` (see module docs).

    Args:
        image_size: input ``H`` (= ``W``) or ``(H, W)``; each must be divisible by the output stride.
        channels: width of the stem, then of each stride-2 stage (output stride ``2 ** len``).
        blocks: residual blocks per stage; 0 makes each stage one plain stride-2 convolution (the
            small CNN of the field's pixel-control recipes, about half the cost per image).
        groups: GroupNorm groups (fewer when a width is smaller).

    Attributes:
        patch_grid: the token grid (patch size = output stride).
        num_features: ``D``, the token width (``channels[-1]``).
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 128,
        channels: Sequence[int] = (32, 64, 128, 256),
        blocks: int = 1,
        groups: int = 8,
    ) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(channels) < 1 or min(channels) < 1:
            raise ValueError(f"channels: expected positive widths, got {tuple(channels)}")
        if blocks < 0:
            raise ValueError(f"blocks: must be >= 0, got {blocks}")
        stride = 2 ** len(channels)
        if size[0] % stride or size[1] % stride:
            raise ValueError(
                f"image_size: {size} is not divisible by the output stride {stride} of "
                f"{len(channels)} stride-2 stages; choose a multiple of {stride}"
            )
        self.config: dict[str, Any] = {
            "image_size": list(size),
            "channels": [int(c) for c in channels],
            "blocks": int(blocks),
            "groups": int(groups),
        }
        self.patch_grid = PatchGrid(size, stride)
        self.num_features = int(channels[-1])
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), _norm(channels[0], groups), nn.ReLU(inplace=True)
        )
        self.stages = nn.Sequential(
            *(_ResidualStage(a, b, blocks, groups) for a, b in itertools.pairwise(channels))
        )
        self.pos_embed = nn.Parameter(torch.randn(self.patch_grid.num_patches, self.num_features) * 0.02)
        # oneDNN's convolutions run 25-30% faster on the CPU with channels-last weights and inputs.
        self.stem.to(memory_format=torch.channels_last)
        self.stages.to(memory_format=torch.channels_last)

    @typechecked
    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N D"]:
        """Tokens of normalised images, row-major over the grid, plus the position embedding."""
        if tuple(images.shape[-2:]) != self.patch_grid.image_size:
            raise ValueError(
                f"images: size {tuple(images.shape[-2:])}, expected {self.patch_grid.image_size}"
            )
        x = self.stages(self.stem(images.contiguous(memory_format=torch.channels_last)))
        return x.flatten(2).transpose(1, 2) + self.pos_embed

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ConvEncoder:
        """Rebuild from ``config`` (as saved in a backbone spec)."""
        return cls(**config)
