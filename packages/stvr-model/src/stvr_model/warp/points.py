"""The fixed point sets of the warp: every pixel centre, and TensorFlow's zero-flow border.

Points are (y, x) pixel coordinates, float64.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=64)
def grid_locations(height: int, width: int, device: torch.device) -> Tensor:
    """All pixel centres of an `height x width` map as `[H*W, 2]` (y, x), float64, row-major."""
    ys = torch.arange(height, dtype=torch.float64, device=device)
    xs = torch.arange(width, dtype=torch.float64, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=1)


def _float32_linspace(stop: int, num: int) -> Tensor:
    # TensorFlow builds the boundary lattice in float32 as start + i * delta with the last
    # point set to `stop`; emulate that rounding so that non-integer boundary points match.
    delta = torch.tensor(float(stop), dtype=torch.float32) / max(num - 1, 1)
    values = torch.arange(num, dtype=torch.float32) * delta
    values[-1] = float(stop)
    return values


@lru_cache(maxsize=64)
def boundary_locations(
    height: int, width: int, num_boundary_points: int, device: torch.device
) -> Tensor:
    """The zero-flow border points TensorFlow adds: `[4 * n, 2]` (y, x), float64.

    `n = num_boundary_points`: 1 gives the 4 corners, 2 adds the middle of each edge, and
    in general each edge holds `n + 1` evenly spaced points, corners shared.
    """
    ys = _float32_linspace(height - 1, num_boundary_points + 1)
    xs = _float32_linspace(width - 1, num_boundary_points + 1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    on_border = (grid_x == 0) | (grid_x == width - 1) | (grid_y == 0) | (grid_y == height - 1)
    points = torch.stack([grid_y[on_border], grid_x[on_border]], dim=1)
    return points.to(device=device, dtype=torch.float64)
