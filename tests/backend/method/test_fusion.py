"""Fusion density against the field's resolution (Sec. 4.2's 3D inference on a feature field of finite resolution).

A synthetic field with the failure the real one has: a plate lying on a table, the feature changing from the
plate's to the table's across a band one finest feature cell wide (trilinear interpolation cannot be sharper).
Real Open3D fusion, the real kNN graph and single-linkage tree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backend.core.pointcloud import PointCloudConfig
from backend.core.scene import Scene
from backend.core.segment import SegmentConfig, edge_lengths, segment_point_cloud
from backend.method.config import PipelineConfig
from backend.method.fusion import fuse_points
from backend.method.pipeline import adapt_to_resolution

CELL = 1 / 64  # the cpu preset's finest feature cell over the unit box


def plate_on_table(n: int = 60_000, seed: int = 0):
    """Points of a flat table with a round plate (radius 0.1) in it; features change over one cell at the rim."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-0.3, 0.3, (n, 2))
    points = np.c_[xy, rng.normal(0, 2e-4, n)].astype(np.float32)
    r = np.linalg.norm(xy, axis=1)
    alpha = np.clip((r - (0.1 - CELL / 2)) / CELL, 0, 1)[:, None]  # 0 on the plate, 1 on the table
    plate, table = np.eye(16)[0], np.eye(16)[1]
    features = ((1 - alpha) * plate + alpha * table + rng.normal(0, 0.01, (n, 16))).astype(np.float32)
    return points, features, r


def plate_apart(voxel: float, threshold: float, linkage: str = "single") -> bool:
    points, features, _ = plate_on_table()
    cloud = fuse_points(points, np.zeros((len(points), 3), np.uint8), features,
                        PointCloudConfig(voxel_size=voxel, outlier_radius=max(4e-3, 2 * voxel)))
    labels = segment_point_cloud(cloud, SegmentConfig(linkage=linkage)).labels([threshold])[0]
    r = np.linalg.norm(cloud.points[:, :2], axis=1)
    inside, outside = labels[r < 0.08], labels[r > 0.12]
    return bool(np.bincount(inside[inside >= 0]).argmax() != np.bincount(outside[outside >= 0]).argmax())


def test_points_denser_than_the_feature_cell_chain_touching_objects():
    """With the paper's 2e-3 voxel on a 1/64 feature grid, the plate joins the table at the finest cut; with one
    point per feature cell it stays apart at the fine cuts (t = 0.01, 0.05; the objects' features are 1 - cos = 1
    apart, a band point halfway between is 0.29 from either)."""
    assert not plate_apart(2e-3, 0.01)
    assert plate_apart(CELL, 0.01) and plate_apart(CELL, 0.05)


def test_average_linkage_keeps_the_plate_apart_at_the_paper_voxel():
    """The same dense cloud: single linkage chains the plate into the table at every fine cut; average linkage
    (all contact edges decide, not the shortest) keeps it apart, and neither object falls apart (one segment each
    inside and outside the band)."""
    assert not plate_apart(2e-3, 0.01) and not plate_apart(2e-3, 0.05)
    assert plate_apart(2e-3, 0.01, "average") and plate_apart(2e-3, 0.05, "average")
    points, features, _ = plate_on_table()
    cloud = fuse_points(points, np.zeros((len(points), 3), np.uint8), features, PointCloudConfig())
    labels = segment_point_cloud(cloud, SegmentConfig(linkage="average")).labels([0.05])[0]
    r = np.linalg.norm(cloud.points[:, :2], axis=1)
    for part in (r < 0.08, (r > 0.12) & (np.abs(cloud.points[:, :2]).max(1) < 0.28)):
        assert len(np.unique(labels[part])) == 1


def test_voxel_is_raised_to_the_feature_cell_only_when_asked_and_only_upwards():
    scene = Scene(rgb=np.zeros((1, 8, 8, 3), np.uint8), c2w=np.eye(4)[None], K=np.diag([1000.0, 1000.0, 1.0])[None],
                  depth=np.ones((1, 8, 8), np.float32))
    base = PipelineConfig()
    on = dataclasses.replace(base, pointcloud=dataclasses.replace(base.pointcloud, voxel_at_least_feature_cell=True))
    assert adapt_to_resolution(base, scene, CELL).pointcloud.voxel_size == base.pointcloud.voxel_size
    got = adapt_to_resolution(on, scene, CELL)
    assert got.pointcloud.voxel_size == CELL
    assert got.pointcloud.outlier_radius >= 2 * CELL and got.segment.propagate_max_distance >= CELL
    fine = 1.0 / 2048  # a grid whose cell is finer than the 2e-3 voxel: nothing changes
    assert adapt_to_resolution(on, scene, fine).pointcloud.voxel_size == base.pointcloud.voxel_size


def test_fusion_gives_the_same_cloud_every_run():
    """Open3D's voxel hash map returns voxels in a thread-dependent order; the fused cloud must not depend on it
    (the subsampling to max_points and the tree downstream read the order)."""
    rng = np.random.default_rng(3)
    points = rng.uniform(0, 0.5, (300_000, 3)).astype(np.float32)
    colors = rng.integers(0, 255, (300_000, 3), dtype=np.uint8)
    features = rng.normal(size=(300_000, 8)).astype(np.float32)
    runs = [fuse_points(points, colors, features) for _ in range(3)]
    for other in runs[1:]:
        assert np.array_equal(runs[0].points, other.points) and np.array_equal(runs[0].features, other.features)
        assert np.array_equal(runs[0].colors, other.colors)
    assert np.all(np.diff(runs[0].points[:, 2]) >= 0), "canonical order: by z first"


def box_on_table(n: int = 60_000, seed: int = 0):
    """A box (10 cm cube) standing on a table: the feature changes from the table's to the box's over one cell
    around their contact, on the table around the footprint and up the box's sides; the points and the surface
    normals are exact geometry. Returns points, features and a part id (0 table, 1 box top, 2 box sides)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-0.3, 0.3, (n, 2))
    out = np.maximum(np.abs(xy).max(1) - 0.05, 0.0)  # distance outside the footprint (Chebyshev, as the box)
    table = np.c_[xy, np.zeros(len(xy))][out > 0]
    a_table = np.clip(0.5 + out[out > 0] / CELL, 0, 1)
    top = np.c_[rng.uniform(-0.05, 0.05, (n // 36, 2)), np.full(n // 36, 0.1)]
    u, z = rng.uniform(-0.05, 0.05, n // 9), rng.uniform(0, 0.1, n // 9)
    face = rng.integers(0, 4, n // 9)
    sides = np.where((face % 2 == 0)[:, None], np.c_[np.where(face == 0, 0.05, -0.05), u, z],
                     np.c_[u, np.where(face == 1, 0.05, -0.05), z])
    a = np.concatenate([a_table, np.zeros(len(top)), np.clip(0.5 - sides[:, 2] / CELL, 0, 1)])[:, None]
    points = np.concatenate([table, top, sides]).astype(np.float32)
    f = (1 - a) * np.eye(16)[0] + a * np.eye(16)[1] + rng.normal(0, 0.01, (len(points), 16))
    part = np.repeat([0, 1, 2], [len(table), len(top), len(sides)])
    return points, f.astype(np.float32), part


def test_fold_cost_keeps_a_box_off_the_table_below_it():
    """Single linkage over feature distance alone chains the box into the table through their blended contact at
    the fine cuts (0.01, 0.05); with the fold cost (``crease_angle``) the cut at 0.01 keeps the box's top apart and
    the table with its blended band one segment (but the few points on the fold itself). Real Open3D fusion and
    normals. (At 0.05 the box joins the table even with the cost: on randomly scattered points the PCA normals turn
    over several points at the box's corners, so some path climbs the fold in steps under 30 degrees.)"""
    points, features, part = box_on_table()
    cloud = fuse_points(points, np.zeros((len(points), 3), np.uint8), features, PointCloudConfig())
    # each fused point's part: that of its nearest input point
    from scipy.spatial import cKDTree

    part = part[cKDTree(points).query(cloud.points)[1]]
    far_table = (part == 0) & (np.abs(cloud.points[:, :2]).max(1) > 0.1) & (np.abs(cloud.points[:, :2]).max(1) < 0.28)

    def same(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.bincount(labels[a][labels[a] >= 0]).argmax() == np.bincount(labels[b][labels[b] >= 0]).argmax())

    plain = segment_point_cloud(cloud, SegmentConfig(crease_angle=0.0)).labels([0.01, 0.05])
    assert same(plain[0], part == 1, far_table) and same(plain[1], part == 1, far_table)
    folds = segment_point_cloud(cloud, SegmentConfig(crease_angle=30.0, crease_cost=0.2)).labels([0.01])
    for row in folds:
        assert not same(row, part == 1, far_table)
        for piece in (part == 0, part == 1):  # the table, blended band included; the box's top
            assert np.bincount(row[piece][row[piece] >= 0]).max() >= 0.97 * piece.sum()  # (fold points aside)


def test_concave_folds_catch_the_contact_edges_the_fold_angle_misses():
    """Where the PCA normals turn over several points at the box's foot, the 30-degree fold test misses a quarter
    of the table-box contact edges (the previous test: the box then joins the table at 0.05). Fused with view
    directions (a camera in front of each face), the concave test at 10 degrees costs more than 90 % of them, and
    spares the box's own convex edges (top to sides); the box still stays off the table at 0.01 and the table and
    the box are each whole. Without view directions only the 30-degree test runs."""
    from scipy.spatial import cKDTree

    from backend.core.graphs import feature_distances, knn_graph

    points, features, part = box_on_table()
    side = part == 2
    outward = np.tile([0.0, 0.0, 1.0], (len(points), 1))
    on_x = side & (np.abs(np.abs(points[:, 0]) - 0.05) < 1e-6)
    outward[side] = 0.0
    outward[on_x, 0] = np.sign(points[on_x, 0])
    outward[side & ~on_x, 1] = np.sign(points[side & ~on_x, 1])
    view_dirs = outward + 0.3 * np.array([0.0, 0.0, 1.0])  # cameras in front of each face, a little above
    colors = np.zeros((len(points), 3), np.uint8)
    with_dirs = fuse_points(points, colors, features, PointCloudConfig(), view_dirs=view_dirs)
    assert with_dirs.view_dirs is not None and np.allclose(np.linalg.norm(with_dirs.view_dirs, axis=1), 1, atol=1e-5)
    without = fuse_points(points, colors, features, PointCloudConfig())
    assert without.view_dirs is None and np.array_equal(without.points, with_dirs.points)
    part = part[cKDTree(points).query(with_dirs.points)[1]]

    cfg = SegmentConfig(crease_angle=30.0, concave_angle=10.0, crease_cost=0.2)
    src, dst = knn_graph(with_dirs.points, k=cfg.knn)
    w = feature_distances(with_dirs.features, src, dst)
    costed_with = edge_lengths(with_dirs, src, dst, cfg) > w + 0.1
    costed_without = edge_lengths(without, src, dst, cfg) > w + 0.1
    assert np.array_equal(costed_without, edge_lengths(with_dirs, src, dst, SegmentConfig(
        crease_angle=30.0, concave_angle=0.0, crease_cost=0.2)) > w + 0.1)
    contact = ((part[src] == 0) & (part[dst] == 2)) | ((part[src] == 2) & (part[dst] == 0))
    assert costed_without[contact].mean() < 0.8 and costed_with[contact].mean() > 0.9
    top_edge = ((part[src] == 1) & (part[dst] == 2)) | ((part[src] == 2) & (part[dst] == 1))
    assert (costed_with & ~costed_without)[top_edge].mean() < 0.02  # convex: no new cost
    radius = np.abs(with_dirs.points[:, :2]).max(1)
    far_table = (part == 0) & (radius > 0.1) & (radius < 0.28)
    row = segment_point_cloud(with_dirs, cfg).labels([0.01])[0]
    assert np.bincount(row[part == 1][row[part == 1] >= 0]).argmax() != np.bincount(row[far_table]).argmax()
    for piece in (part == 0, part > 0):  # the table, blended band included; the whole box
        assert np.bincount(row[piece][row[piece] >= 0]).max() >= 0.95 * piece.sum()


def test_concave_folds_only_on_exact_geometry():
    """A depth-geometry run keeps the concave-fold test; a nerf run (its cloud from the field's rendered depth) is
    segmented without it; an explicit 0 stays 0."""
    from backend.method.pipeline import for_geometry

    cfg = PipelineConfig()
    assert for_geometry(cfg, "depth").segment.concave_angle == cfg.segment.concave_angle == 10.0
    nerf = for_geometry(cfg, "nerf")
    assert nerf.segment.concave_angle == 0.0 and nerf.segment.crease_angle == cfg.segment.crease_angle
    off = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, concave_angle=0.0))
    assert for_geometry(off, "depth").segment.concave_angle == 0.0
