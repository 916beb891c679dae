"""Fuse per-view surface points into one clean point cloud (Open3D voxel grid + radius outliers).

Sec. 4.2 of the paper (3D inference): unproject the training views' depth and features, voxel-downsample
(2e-3) and drop points with no neighbour within 4e-3, all in normalised scene units.
"""

from __future__ import annotations

import numpy as np

from backend.core.pointcloud import PointCloud, PointCloudConfig


def fuse_points(points: np.ndarray, colors: np.ndarray, features: np.ndarray | None,
                cfg: PointCloudConfig | None = None, view_dirs: np.ndarray | None = None) -> PointCloud:
    """Voxel-downsample then remove radius outliers, carrying colours, features and view directions.

    Shapes: ``points`` [N,3], ``colors`` uint8 [N,3], ``features`` [N,D] (or None), ``view_dirs`` [N,3] (or None:
    each point's unit vector towards the camera whose pixel it came from). Features and view directions are
    averaged per voxel and re-normalised to unit length.
    """
    import open3d as o3d

    cfg = cfg or PointCloudConfig()
    if points.shape[0] == 0:
        raise ValueError("no surface points to fuse: every depth map is empty (is the scene in view?)")
    pcd = o3d.t.geometry.PointCloud()
    pcd.point.positions = o3d.core.Tensor(np.ascontiguousarray(points, np.float32))
    pcd.point.colors = o3d.core.Tensor(np.ascontiguousarray(colors, np.float32) / 255.0)
    if features is not None:
        pcd.point.features = o3d.core.Tensor(np.ascontiguousarray(features, np.float32))
    if view_dirs is not None:
        if np.shape(view_dirs) != np.shape(points):
            raise ValueError(f"view_dirs must be [N, 3] like the points, got {np.shape(view_dirs)}")
        pcd.point.view_dirs = o3d.core.Tensor(np.ascontiguousarray(view_dirs, np.float32))
    if cfg.voxel_size > 0:
        pcd = pcd.voxel_down_sample(cfg.voxel_size)
    if cfg.outlier_radius > 0 and cfg.outlier_min_neighbours > 0:
        # Open3D counts the query point itself among its radius neighbours.
        pcd, _ = pcd.remove_radius_outliers(cfg.outlier_min_neighbours + 1, cfg.outlier_radius)
    pts = pcd.point.positions.numpy().astype(np.float32)
    col = np.clip(np.rint(pcd.point.colors.numpy() * 255), 0, 255).astype(np.uint8)

    def unit_rows(name: str) -> np.ndarray:  # a per-voxel mean of unit vectors, made unit again
        a = getattr(pcd.point, name).numpy().astype(np.float32)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-8)

    feat = None if features is None else unit_rows("features")
    dirs = None if view_dirs is None else unit_rows("view_dirs")
    if pts.shape[0] == 0:
        raise ValueError("every point was removed as an outlier: the depth maps are too sparse for "
                         f"outlier_radius={cfg.outlier_radius}")
    # Open3D's voxel hash map hands the voxels back in an order that changes from run to run (threads); the
    # subsampling and the tree downstream depend on the order, so the cloud is put in one canonical order
    # (by z, then y, then x): the same views and features give the same cloud, tree and labels every run.
    order = np.lexsort(pts.T)
    return PointCloud(points=pts, colors=col, features=feat, view_dirs=dirs).subset(order)
