"""3D segmentation from a fused feature point cloud: one single-linkage tree, cuts at any threshold.

PAPER.md, "Inference / 3D": kNN graph (k = 16) with feature-distance (1 - cosine) edges; the
connected components of edges shorter than ``t`` are the segments at granularity ``t``; the N = 200
largest are kept. All thresholds come from ONE tree (the components of all thresholds form one
single-linkage dendrogram). Novel views are labelled by the mode of the k = 5 nearest labelled
points, unassigned when the nearest is farther than a gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from backend.core import linkage_tree
from backend.core.geometry import unproject_depth
from backend.core.pointcloud import PointCloud


def default_thresholds() -> np.ndarray:
    """The paper's 50 evaluation thresholds, 0.01 to 0.50."""
    return np.round(np.linspace(0.01, 0.50, 50), 4)


@dataclass
class SegmentConfig:
    knn: int = 16
    """Neighbours per point in the 3D feature graph."""
    max_segments: int = 200
    """Keep the N largest components at each threshold; the rest are unassigned (-1)."""
    thresholds: list[float] = field(default_factory=lambda: default_thresholds().tolist())
    """Thresholds (feature distance, 1 - cosine) for evaluation and the full label stack."""
    export_thresholds: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.4])
    """Thresholds written to the PLY / hierarchy.json / sent to clients."""
    propagate_k: int = 5
    """Neighbours voting for a novel-view pixel's label."""
    propagate_max_distance: float = 5e-3
    """A pixel stays unassigned when its nearest labelled point is farther (normalised units)."""


@dataclass
class Segmentation3D:
    """A point cloud with its single-linkage tree over the kNN feature graph."""

    cloud: PointCloud
    tree: linkage_tree.SingleLinkageTree

    def labels(self, thresholds, max_segments: int = 200) -> np.ndarray:
        """int [T,N] labels (-1 unassigned), nested as thresholds grow."""
        return linkage_tree.cut_many(self.tree, np.asarray(thresholds, np.float64), max_segments=max_segments)


def feature_distance_edges(features: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of unit features at each edge's endpoints (float64 [E])."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)
    return np.clip(1.0 - np.einsum("ed,ed->e", f[sources], f[targets]), 0.0, 2.0).astype(np.float64)


def bridge_components(points: np.ndarray, src: np.ndarray, dst: np.ndarray,
                      min_fraction: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Link every sizeable connected component of a kNN graph to its nearest point outside it.

    Objects that do not touch (a chair beside a table) make the spatial kNN graph fall apart, and a
    single-linkage tree over it could never merge them at any threshold; one bridge edge per component
    lets the *feature* distance decide when they merge, as in the paper's scene level. Components with
    fewer than ``min_fraction`` of the points are left alone (fusion debris). ``O(C N log N)`` for C
    sizeable components (a handful in practice).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(points)
    ncomp, lab = connected_components(coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n)),
                                      directed=False)
    if ncomp <= 1:
        return src, dst
    sizes = np.bincount(lab, minlength=ncomp)
    big = np.flatnonzero(sizes >= max(min_fraction * n, 2))
    if len(big) <= 1:
        return src, dst
    in_big = np.isin(lab, big)
    new_s, new_t = [], []
    for c in big[np.argsort(-sizes[big])][1:]:
        inside = np.flatnonzero(lab == c)
        outside = np.flatnonzero(in_big & (lab != c))
        dist, j = cKDTree(points[outside]).query(points[inside], k=1)
        best = int(np.argmin(dist))
        new_s.append(inside[best])
        new_t.append(outside[j[best]])
    return np.concatenate([src, np.asarray(new_s, np.int64)]), np.concatenate([dst, np.asarray(new_t, np.int64)])


def segment_point_cloud(cloud: PointCloud, cfg: SegmentConfig = SegmentConfig()) -> Segmentation3D:
    """Build the kNN graph (sizeable components bridged) and its single-linkage tree once."""
    if cloud.features is None:
        raise ValueError("the point cloud has no features to segment")
    src, dst = linkage_tree.knn_graph(cloud.points, k=cfg.knn)
    src, dst = bridge_components(cloud.points, src, dst)
    w = feature_distance_edges(cloud.features, src, dst)
    tree = linkage_tree.single_linkage_tree(len(cloud), src, dst, w)
    return Segmentation3D(cloud=cloud, tree=tree)


def propagate_label_stack(points: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int = 5,
                          max_distance: float = 5e-3) -> np.ndarray:
    """Labels int [T,N] of ``points`` [N,3] -> int [T,Q] for ``queries`` [Q,3]: the mode of the k nearest
    labelled points (nearest first wins ties), one kNN query for all T thresholds; -1 when the nearest
    point is farther than ``max_distance`` or none of the k is labelled (PAPER.md "Inference / 3D")."""
    from scipy.spatial import cKDTree

    t = labels.shape[0]
    out = np.full((t, len(queries)), -1, np.int64)
    if len(queries) == 0 or len(points) == 0:
        return out
    k = min(k, len(points))
    dist, idx = cKDTree(points).query(queries, k=k)
    dist, idx = dist.reshape(len(queries), k), idx.reshape(len(queries), k)
    near = dist[:, 0] <= max_distance
    for i in range(t):
        out[i, near] = linkage_tree.mode_vote(labels[i][idx[near]])
    return out


def view_labels(seg: Segmentation3D, labels: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                cfg: SegmentConfig = SegmentConfig()) -> np.ndarray:
    """Label a (novel) view: unproject its depth, vote among the k nearest labelled points.

    ``labels`` int [T,N] of the cloud; ``depth`` [H,W] planar (0 = background). Returns int [T,H,W].
    """
    h, w = depth.shape
    out = np.full((labels.shape[0], h, w), -1, np.int64)
    fg = depth > 0
    if not fg.any():
        return out
    pts = unproject_depth(depth, K, c2w)[fg]
    out[:, fg] = propagate_label_stack(seg.cloud.points, labels, pts, k=cfg.propagate_k,
                                       max_distance=cfg.propagate_max_distance)
    return out


def segment_hierarchy(labels: np.ndarray, thresholds) -> dict:
    """``hierarchy.json`` of segments: for each threshold its segments (id, size) and, for every
    segment, its parent segment at the next coarser threshold (labels are nested by construction)."""
    thresholds = [float(t) for t in thresholds]
    levels = []
    for i, t in enumerate(thresholds):
        lab = labels[i]
        ids, sizes = np.unique(lab[lab >= 0], return_counts=True)
        parent = {}
        if i + 1 < len(thresholds):
            coarse = labels[i + 1]
            ok = lab >= 0
            pairs = np.unique(np.stack([lab[ok], coarse[ok]], 1), axis=0)
            for a, b in pairs:
                parent[int(a)] = int(b) if b >= 0 else None
        levels.append({
            "threshold": t,
            "segments": [{"id": int(s), "size": int(n), "parent": parent.get(int(s))} for s, n in zip(ids, sizes)],
        })
    return {"thresholds": thresholds, "levels": levels}
