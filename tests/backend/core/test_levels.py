"""Export levels read off the tree: they find the scene's granularities whatever its distance scale."""

from __future__ import annotations

import numpy as np

from backend.core import linkage_tree
from backend.core.levels import effective_counts, persistent_levels
from backend.core.pointcloud import PointCloud
from backend.core.segment import (SegmentConfig, absorb_dust, export_labels, export_thresholds,
                                  segment_point_cloud)


def hierarchical_cloud(scale: float, seed: int = 0) -> PointCloud:
    """3 groups x 2 parts x 150 points on a line; features: parts 10 * scale apart inside a group, groups
    100 * scale apart, point noise of scale; plus 5 dust points with outlying features."""
    rng = np.random.default_rng(seed)
    pts, feats = [], []
    for g in range(3):
        for p in range(2):
            x = np.linspace(0, 1, 150) + 2.2 * (2 * g + p)
            pts.append(np.stack([x, np.zeros_like(x), np.zeros_like(x)], 1))
            f = np.zeros((150, 8))
            f[:, 0] = 1.0
            f[:, 1 + g] = 100 * scale
            f[:, 4 + p] = 10 * scale
            f += rng.normal(0, scale, f.shape)
            feats.append(f)
    dust = np.stack([np.linspace(0.3, 0.7, 5), np.zeros(5), np.zeros(5)], 1)
    f = np.zeros((5, 8))
    f[:, 0], f[:, 7] = 1.0, 300 * scale
    pts.append(dust)
    feats.append(f)
    feats_a = np.concatenate(feats)
    feats_a /= np.linalg.norm(feats_a, axis=1, keepdims=True)
    pts_a = np.concatenate(pts)
    return PointCloud(points=pts_a.astype(np.float32), colors=np.zeros((len(pts_a), 3), np.uint8),
                      features=feats_a.astype(np.float32))


def counts_at(seg, thresholds, cfg) -> list[int]:
    lab = export_labels(seg, thresholds, cfg)
    return [len(np.unique(row[row >= 0])) for row in lab]


def test_persistent_levels_find_parts_and_groups_at_any_scale():
    cfg = SegmentConfig(significant_share=0.02)
    found, shares = [], []
    for scale in (1e-2, 1e-4):  # the same hierarchy, distances 100x smaller
        seg = segment_point_cloud(hierarchical_cloud(scale), SegmentConfig(knn=8))
        th = export_thresholds(seg, cfg)
        assert th == sorted(th)
        found.append(counts_at(seg, th, cfg))
        shares.append([np.bincount(row).max() / len(row) for row in export_labels(seg, th, cfg)])
    for f in found:  # the parts (6), the groups (3) and 2 at both distance scales; fragments of parts above
        assert f[-3:] == [6, 3, 2] and min(f[:-3]) > 6, found
    assert max(shares[0]) < 0.9, "no exported cut is one segment"
    # the fixed cuts of the released code see one segment on the small-scale tree
    seg = segment_point_cloud(hierarchical_cloud(1e-4), SegmentConfig(knn=8))
    fixed = SegmentConfig(export_levels="fixed", significant_share=0.02)
    assert max(counts_at(seg, export_thresholds(seg, fixed), fixed)) <= 1


def test_effective_counts_and_dust():
    # two pairs merge (2 segments of 2), then everything
    t = linkage_tree.SingleLinkageTree(np.array([4, 4, 5, 5, 6, 6, 6]), np.array([0, 0, 0, 0, 0.1, 0.2, 0.9]), 4)
    alt, eff = effective_counts(t)
    assert alt.tolist() == [0.1, 0.2, 0.9] and np.allclose(eff, [16 / 6, 2, 1])
    assert persistent_levels(t, 5, coarsest=3.0).size == 0  # never more than 3 effective segments
    pts = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [3.0, 0, 0], [3.1, 0, 0], [3.2, 0, 0], [1.0, 0, 0]])
    lab = absorb_dust(pts, np.array([[0, 0, 0, 1, 1, 1, 2], [0, 0, 0, 1, 1, 1, -1]]), 2)
    assert lab.tolist() == [[0, 0, 0, 1, 1, 1, 0]] * 2
