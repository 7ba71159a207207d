"""``SpatialSoftmax``: keypoints (expected image positions) of features on a patch grid.

The visual-imitation recipes that learn from ~50 demonstrations (robomimic, Diffusion Policy) read a
CNN's last feature map with a spatial softmax: per keypoint, a 1x1 projection of the features, a
softmax over the grid cells, and the expected cell position under that distribution. The result is
a few numbers per keypoint that move with what the keypoint responds to (an object, the gripper), so
a small head can regress "where things are" without having to learn it through attention.
[`VLAPolicy`][flowvla.policy.VLAPolicy] uses it as a short path from the vision encoder to the flow
head (``PolicyConfig.keypoints``), beside the tokens that go through the language model.

Legend: ``B`` feature maps, ``N`` grid cells (row-major), ``D`` feature width, ``K`` keypoints.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flowvla.typing import Float, Tensor, typechecked

__all__ = ["SpatialSoftmax"]


class SpatialSoftmax(nn.Module):
    """Patch tokens ``[B, N, D]`` on a ``rows x cols`` grid -> keypoints ``[B, K, 2]`` in ``[-1, 1]``.

    ``(x, y)`` per keypoint: x grows to the right (columns), y downwards (rows); a cell's position is
    its centre, so a distribution peaked on one cell gives that cell's centre.

    Args:
        grid_size: ``(rows, cols)`` of the token grid; ``N = rows * cols``.
        in_dim: ``D``, the token width.
        num_keypoints: ``K``.
        temperature: initial softmax temperature (learned, kept positive).
    """

    def __init__(
        self, grid_size: tuple[int, int], in_dim: int, num_keypoints: int, temperature: float = 1.0
    ) -> None:
        super().__init__()
        rows, cols = (int(g) for g in grid_size)
        if rows < 1 or cols < 1:
            raise ValueError(f"grid_size: expected positive (rows, cols), got {tuple(grid_size)}")
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints: must be >= 1, got {num_keypoints}")
        if temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.grid_size = (rows, cols)
        self.num_keypoints = int(num_keypoints)
        self.proj = nn.Linear(in_dim, num_keypoints)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        ys = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows * 2 - 1
        xs = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols * 2 - 1
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("positions", torch.stack([grid_x, grid_y], -1).reshape(-1, 2), persistent=False)

    @typechecked
    def forward(self, tokens: Float[Tensor, "B N D"]) -> Float[Tensor, "B K 2"]:
        """Expected ``(x, y)`` of each keypoint's softmax over the ``N`` cells."""
        if tokens.shape[1] != self.positions.shape[0]:
            raise ValueError(
                f"tokens: {tokens.shape[1]} grid cells, expected {self.positions.shape[0]} "
                f"(a {self.grid_size[0]}x{self.grid_size[1]} grid)"
            )
        logits = self.proj(tokens) / self.log_temperature.exp()  # [B, N, K]
        weights = logits.float().softmax(dim=1)
        return torch.einsum("bnk,nc->bkc", weights, self.positions).to(tokens.dtype)
