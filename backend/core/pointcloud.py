"""The fused feature point cloud of Sec. 4.2 and its settings (the fusion itself, with Open3D, is
:func:`backend.method.fusion.fuse_points`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PointCloudConfig:
    voxel_size: float = 2e-3
    """Voxel edge for downsampling (normalised units); points, colours and features are averaged per voxel."""
    outlier_radius: float = 4e-3
    """Radius of the outlier test (normalised units)."""
    outlier_min_neighbours: int = 1
    """A point is kept when at least this many *other* points lie within ``outlier_radius``."""
    voxel_at_least_feature_cell: bool = False
    """Raise ``voxel_size`` to the feature grid's finest cell (``2 * bound / max_resolution``; a departure from
    Sec. 4.2). The paper's 2e-3 voxel is 8 times finer than its feature grid's cell (max resolution 64): points
    closer than one cell carry only interpolated features, so where two objects touch, the points inside the
    one-cell-wide transition band chain them with near-zero edges; one point per cell keeps a band crossing at
    about half the objects' feature distance. Off by default: measured on the bundled scenes with classical masks
    it fragments objects whose field is not smooth (NC_obj 61.8 -> 52.8 on the bookshelf; docs/quality.md)."""


@dataclass
class PointCloud:
    """``points`` float32 [N,3] (normalised units), ``colors`` uint8 [N,3], ``features`` float32 [N,D] or None,
    ``view_dirs`` float32 [N,3] or None: the mean unit vector from each point towards the cameras it was seen from
    (orients the surface normals for the concave-fold test of :class:`backend.core.segment.SegmentConfig`)."""

    points: np.ndarray
    colors: np.ndarray
    features: np.ndarray | None = None
    view_dirs: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "PointCloud":
        """The points at indices (or mask) ``keep``, every per-point array alike."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[keep]

        return PointCloud(points=self.points[keep], colors=self.colors[keep], features=pick(self.features),
                          view_dirs=pick(self.view_dirs))

    def __len__(self) -> int:
        return int(self.points.shape[0])
