"""Occupancy grid for empty-space skipping (Instant-NGP style, pure torch).

A ``R^3`` grid over ``[-bound, bound]^3`` keeps an exponential moving maximum of the density sampled in each cell
(``ema = max(decay * ema, sigma(cell centre + jitter))``); a cell is occupied when its value exceeds
``min(threshold, mean(ema))``. The renderer evaluates the field only at samples in occupied cells (others get
density 0). Until the first :meth:`OccupancyGrid.update` every cell counts as occupied.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """Bitfield of occupied cells, updated from the density every few steps (buffers are checkpointed)."""

    def __init__(self, resolution: int = 64, bound: float = 0.5, threshold: float = 0.01, decay: float = 0.95,
                 device: torch.device | str = "cpu"):
        super().__init__()
        if resolution < 1 or bound <= 0:
            raise ValueError("resolution must be >= 1 and bound > 0")
        self.resolution = int(resolution)
        self.bound = float(bound)
        self.threshold = float(threshold)
        self.decay = float(decay)
        n = self.resolution ** 3
        self.register_buffer("density_ema", torch.zeros(n, device=device))
        self.register_buffer("occupied", torch.ones(n, dtype=torch.bool, device=device))

    def cell_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell index of each point and whether it lies inside the box. Shape: [..., 3] -> ([...], [...])."""
        u = (points.float() + self.bound) / (2 * self.bound)  # [0, 1]
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = (u * self.resolution).long().clamp(0, self.resolution - 1)
        r = self.resolution
        return ijk[..., 0] * r * r + ijk[..., 1] * r + ijk[..., 2], inside

    def query(self, points: Tensor) -> Tensor:
        """True for points inside the box and in an occupied cell. Shape: [..., 3] -> bool [...]."""
        idx, inside = self.cell_index(points)
        return inside & self.occupied[idx]

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator | None = None,
               chunk: int = 1 << 16) -> float:
        """Re-sample the density once per cell (jittered inside the cell) and refresh the bitfield.

        ``density_fn`` maps points [B, 3] to densities [B]. Returns the occupied fraction.
        """
        r = self.resolution
        dev = self.density_ema.device
        ar = torch.arange(r, device=dev)
        ijk = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3).float()
        jitter = torch.rand(ijk.shape, generator=generator,
                            device=generator.device if generator is not None else None).to(dev)
        pts = (ijk + jitter) / r * (2 * self.bound) - self.bound
        new = torch.cat([density_fn(pts[i:i + chunk]).float().reshape(-1) for i in range(0, len(pts), chunk)])
        self.density_ema.copy_(torch.maximum(self.density_ema * self.decay, new))
        thr = min(self.threshold, float(self.density_ema.mean()))
        self.occupied.copy_(self.density_ema > thr)
        return float(self.occupied.float().mean())
