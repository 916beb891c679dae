"""Segmentation at inference (Sec. 4.2 of the paper): 2D from a rendered feature map, 3D from a fused feature
point cloud; one single-linkage tree each, cuts at any threshold; labels carried to novel views.

3D: kNN graph (k = 16) with feature-distance (1 - cosine) edges, plus a fold cost on edges across a fold of
the surface (:func:`edge_lengths`; a departure from Sec. 4.2, on by default); the
connected components of edges shorter than ``t`` are the segments at granularity ``t``; the N = 200
largest are kept. All thresholds come from ONE tree (the components of all thresholds form one
single-linkage dendrogram). Novel views are labelled by the mode of the k = 5 nearest labelled
points, unassigned when the nearest is farther than a gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from scipy.spatial import cKDTree

from backend.core import linkage_tree
from backend.core.graphs import (concave_edges, connect_components, core_distances, crease_edges, crease_lengths,
                                 feature_distances, fold_contrast, grid_graph_4, knn_graph, mutual_reachability,
                                 orient_normals, point_normals)
from backend.core.geometry import unproject_depth
from backend.core.pointcloud import PointCloud
from backend.wire import presets


def default_thresholds() -> np.ndarray:
    """The paper's 50 evaluation thresholds, 0.01 to 0.50."""
    return np.round(np.linspace(0.01, 0.50, 50), 4)


LINKAGES = ("single", "average")
"""How the 3D tree merges segments (:attr:`SegmentConfig.linkage`)."""

EXPORT_LEVELS = ("persistent", "fixed")
"""How exported cuts are chosen (:attr:`SegmentConfig.export_levels`)."""


@dataclass
class SegmentConfig:
    knn: int = 16
    """Neighbours per point in the 3D feature graph."""
    max_segments: int = 200
    """Keep the N largest components at each threshold; the rest are unassigned (-1)."""
    thresholds: list[float] = field(default_factory=lambda: default_thresholds().tolist())
    """Thresholds (feature distance, 1 - cosine) for evaluation and the full label stack."""
    export_levels: str = "persistent"
    """How the exported cuts (PLY, hierarchy.json, the server's reply, the add-on's first view) are chosen:
    ``persistent`` reads them off the tree (:func:`backend.core.levels.persistent_levels`: spread evenly in log
    effective segment count, each in the middle of the altitude range its band spans), ``fixed`` uses
    ``export_thresholds`` as given."""
    export_count: int = 5
    """How many persistent levels to export (fewer when the tree has fewer)."""
    export_thresholds: list[float] = field(default_factory=lambda: list(presets.DEFAULT_EXPORT_THRESHOLDS))
    """Thresholds written to the PLY / hierarchy.json / sent to clients with ``export_levels="fixed"``
    (:data:`backend.wire.presets.DEFAULT_EXPORT_THRESHOLDS`)."""
    significant_share: float = 0.001
    """At an exported cut, a segment with fewer points than this share of the cloud (and at least
    ``significant_min_points``) is dust: its points join the segment of their nearest significant neighbour in
    space. 0 = keep dust as it is."""
    significant_min_points: int = 20
    """Lower bound of the significant segment size in points."""
    propagate_k: int = 5
    """Neighbours voting for a novel-view pixel's label."""
    bridge_min_fraction: float = 0.002
    """Components of the spatial kNN graph with at least this fraction of the points are joined to their
    nearest neighbours (smaller ones are fusion debris and stay apart)."""
    propagate_max_distance: float = 5e-3
    """A pixel stays unassigned when its nearest labelled point is farther (normalised units)."""
    propagate_gate: str = "nearest"
    """Which of the ``propagate_k`` voters the distance gate tests: ``nearest`` (Sec. 4.2 as written) or
    ``farthest`` (the authors' code: a pixel is labelled only when all k voters are close)."""
    min_samples: int = 0
    """Mutual-reachability linkage (HDBSCAN-like, a departure from Sec. 4.2's single linkage): edge ``(a, b)``
    gets the length ``max(d(a, b), core(a), core(b))`` with ``core(p)`` the ``min_samples``-th shortest feature
    distance among ``p``'s kNN edges. Points in the band where the field changes from one object's feature to
    its neighbour's have large core distances, so they no longer chain touching objects together at fine cuts.
    0 = plain single linkage (the paper)."""
    min_cluster_size: int = 0
    """Segments with fewer points at a cut are noise (-1, HDBSCAN's rule); novel-view pixels then take the vote
    of the nearest *labelled* points. 0 = off (only the ``max_segments`` rule applies)."""

    linkage: str = "single"
    """How the 3D tree merges segments: ``single`` (Sec. 4.2: at the shortest edge between them, the minimax
    ultrametric of the feature graph) or ``average`` (at the mean length of all edges between them,
    :func:`backend.core.linkage_tree.average_linkage_tree`: a few band points where two touching objects meet
    cannot chain them). Cuts give nested segments either way."""
    background_segment: bool = True
    """Label a view's empty pixels (depth 0: no surface behind the pixel) as ONE segment of their own at every cut
    (id ``N``, the cloud's point count, never a point's label), as the 2D inference does with the field's
    background feature (Sec. 4.2). False leaves them unassigned (-1), together with the foreground pixels no point
    reaches. Measured (docs/quality.md): NC_mean +0.4 to +6 on the bundled scenes, never lower."""
    boundary_fraction: float = 0.0
    """Boundary-aware point filter (a departure from Sec. 4.2): this fraction of the points with the largest local
    feature spread (median ``1 - cos`` to their kNN neighbours, i.e. where the field changes between objects) is left
    out of the tree, so they cannot chain two objects at fine cuts; they are noise (-1) in the cloud and novel-view
    pixels near them take the vote of the nearest labelled points. 0 = off."""

    crease_angle: float = 30.0
    """Geometry-aware edges (a departure from Sec. 4.2, which weighs edges by feature distance alone): a kNN edge
    whose end points' surface normals (:func:`backend.core.graphs.point_normals`) differ by more than this many
    degrees crosses a fold of the surface and costs the median length of such edges on top of its feature distance
    (:func:`backend.core.graphs.crease_lengths`). Objects in contact meet at a fold (a cup on a table, a sofa on
    the floor, a shelf against a wall), and the few contact edges where the field blends their features no longer
    chain them at fine cuts. 0 = off (the paper). Measured (docs/quality.md, 3 seeds at 200 px, classical masks):
    ours-3D NC_mean +5.5 on the closed room, +0.9 on the surroundings, +0.3 on the table set (20 degrees:
    +4.6 / +2.0 / +1.1)."""
    concave_angle: float = 10.0
    """Edges across a *concave* fold of more than this many degrees also carry the fold cost
    (:func:`backend.core.graphs.concave_edges`; normals oriented towards the cameras that saw each point,
    :attr:`backend.core.pointcloud.PointCloud.view_dirs`). Where an object rests on or against another the
    surface folds inward, while the faces of one convex object fold outward, so a smaller angle than
    :attr:`crease_angle` can be used: it catches the contacts where the fitted normals turn gradually (a sofa's
    bottom edge on the floor, a plate's rim on a table, two walls in a corner). Needs the cloud's view directions
    (every cloud the pipeline fuses has them; without them only :attr:`crease_angle` applies) and exact geometry
    (a ``nerf`` run's cloud, from the field's rendered depth, is segmented without it:
    :func:`backend.method.pipeline.for_geometry`). 0 = off. Measured
    (docs/quality.md, the same fields, 3 seeds at 200 px, classical masks): ours-3D NC_mean +1.4 on the closed
    room (NC_obj +5.6, NC_coll -2.9), +1.1 on the surroundings, +3.1 on the table set, +3.9 on the bookshelf."""
    crease_cost: float | None = None
    """The cost of crossing a fold (1 - cos units); None = the median feature distance of the fold edges."""
    fold_contrast_hops: int = 2
    """A concave fold edge's feature distance is raised to its fold's regional contrast when that is larger: the
    mean feature distance of the concave fold edges at its end points and their graph neighbours (2 hops;
    :func:`backend.core.graphs.fold_contrast`). Where two objects touch (the surface folds inward there, see
    :attr:`concave_angle`), the field blends their features at a few points, and single linkage would merge them at
    their most blended contact edge; with the contrast they merge in the order of how different the two sides of
    the whole contact are, while folds inside one object (the features alike on both sides) stay cheap. Convex
    folds (an object's own edges) keep their own distance: raising them too split small objects (docs/quality.md).
    Needs the concave test (exact geometry and view directions). 0 = off (each fold edge its own distance).
    Measured (docs/quality.md, the same fields, classical masks, 200 px): ours-3D NC_mean +1.9 on the closed room
    over 3 seeds (+1.9 over 5), -0.2 on the surroundings, -0.1 on the table set."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.crease_angle < 90.0:
            raise ValueError(f"crease_angle must be in [0, 90) degrees, got {self.crease_angle}")
        if not 0.0 <= self.concave_angle < 90.0:
            raise ValueError(f"concave_angle must be in [0, 90) degrees, got {self.concave_angle}")
        if self.fold_contrast_hops < 0:
            raise ValueError(f"fold_contrast_hops must be >= 0, got {self.fold_contrast_hops}")
        if self.crease_cost is not None and not (np.isfinite(self.crease_cost) and self.crease_cost >= 0):
            raise ValueError(f"crease_cost must be None or a finite number >= 0, got {self.crease_cost}")
        if self.linkage not in LINKAGES:
            raise ValueError(f"linkage must be one of {LINKAGES}, got {self.linkage!r}")
        if self.export_levels not in EXPORT_LEVELS:
            raise ValueError(f"export_levels must be one of {EXPORT_LEVELS}, got {self.export_levels!r}")
        if self.export_count < 1 or not 0.0 <= self.significant_share < 1.0:
            raise ValueError("export_count must be >= 1 and significant_share in [0, 1)")
        if not 0.0 <= self.boundary_fraction < 1.0:
            raise ValueError(f"boundary_fraction must be in [0, 1), got {self.boundary_fraction}")
        if self.propagate_gate not in ("nearest", "farthest"):
            raise ValueError(f"propagate_gate must be 'nearest' or 'farthest', got {self.propagate_gate!r}")
        if self.min_samples < 0 or self.min_cluster_size < 0:
            raise ValueError("min_samples and min_cluster_size must be >= 0")


@dataclass
class Segmentation3D:
    """A point cloud with its single-linkage tree over the kNN feature graph."""

    cloud: PointCloud
    tree: linkage_tree.SingleLinkageTree
    min_cluster_size: int = 0
    """Segments smaller than this are noise (-1) at every cut (see :class:`SegmentConfig`)."""

    def labels(self, thresholds, max_segments: int = 200) -> np.ndarray:
        """int [T,N] labels (-1 unassigned), nested as thresholds grow."""
        lab = linkage_tree.cut_many(self.tree, np.asarray(thresholds, np.float64), max_segments=max_segments)
        if self.min_cluster_size > 1:
            for row in lab:
                ok = row >= 0
                if ok.any():
                    counts = np.bincount(row[ok])
                    row[ok & (counts[np.maximum(row, 0)] < self.min_cluster_size)] = -1
        return lab


def edge_lengths(cloud: PointCloud, src: np.ndarray, dst: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Lengths of the 3D graph's edges: the feature distance ``1 - cos`` (Sec. 4.2), plus the fold cost on edges
    across a fold of the surface (:attr:`SegmentConfig.crease_angle`, and :attr:`SegmentConfig.concave_angle`
    when the cloud has view directions), a concave fold edge's feature distance raised to its fold's regional
    contrast (:attr:`SegmentConfig.fold_contrast_hops`). float64 [E]."""
    if cloud.features is None:
        raise ValueError("the point cloud has no features to segment")
    w = feature_distances(cloud.features, src, dst)
    view_dirs = cloud.view_dirs if cfg.concave_angle > 0 else None
    if cfg.crease_angle > 0 or view_dirs is not None:
        normals = point_normals(cloud.points, cfg.knn)
        folds = np.zeros(len(w), bool)
        if cfg.crease_angle > 0:
            folds |= crease_edges(normals, src, dst, cfg.crease_angle)
        contrast = None
        if view_dirs is not None:
            concave = concave_edges(cloud.points, orient_normals(normals, view_dirs), src, dst, cfg.concave_angle)
            folds |= concave
            if cfg.fold_contrast_hops > 0 and concave.any():  # contacts fold inward; an object's own edges outward
                contrast = np.where(concave, fold_contrast(len(cloud), src, dst, w, concave, cfg.fold_contrast_hops),
                                    0.0)
        w = crease_lengths(w, folds, cfg.crease_cost, contrast)
    return w


def segment_point_cloud(cloud: PointCloud, cfg: SegmentConfig | None = None,
                        should_stop: Callable[[], bool] | None = None) -> Segmentation3D:
    """Build the kNN graph (sizeable components bridged) and its single-linkage tree once.

    ``should_stop()`` is looked at between the steps (graph, bridges, edge lengths, tree): True raises
    ``InterruptedError``."""
    cfg = cfg or SegmentConfig()

    def check() -> None:
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled while building the 3D tree")

    if cloud.features is None:
        raise ValueError("the point cloud has no features to segment")
    check()
    src, dst = knn_graph(cloud.points, k=cfg.knn)
    check()
    # Objects that do not touch are joined by their nearest points, so feature distance decides when they
    # merge; debris under 0.2% of the points stays apart.
    src, dst = connect_components(cloud.points, src, dst, min_size=max(int(cfg.bridge_min_fraction * len(cloud)), 2))
    check()
    w = edge_lengths(cloud, src, dst, cfg)
    check()
    min_cluster = cfg.min_cluster_size
    if cfg.boundary_fraction > 0:
        spread = core_distances(len(cloud), src, dst, w, max(cfg.knn // 2, 1))
        drop = spread > np.quantile(spread, 1.0 - cfg.boundary_fraction)
        keep = ~(drop[src] | drop[dst])
        src, dst, w = src[keep], dst[keep], w[keep]
        min_cluster = max(min_cluster, 2)  # the dropped points are singletons: noise
    w = mutual_reachability(len(cloud), src, dst, w, cfg.min_samples)
    check()
    build = linkage_tree.average_linkage_tree if cfg.linkage == "average" else linkage_tree.single_linkage_tree
    tree = build(len(cloud), src, dst, w)
    return Segmentation3D(cloud=cloud, tree=tree, min_cluster_size=min_cluster)


def propagate_label_stack(points: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int = 5,
                          max_distance: float = 5e-3, labelled_fallback: bool = False,
                          gate: str = "nearest") -> np.ndarray:
    """Labels int [T,N] of ``points`` [N,3] -> int [T,Q] for ``queries`` [Q,3]: the mode of the k nearest
    labelled points (nearest first wins ties), one kNN query for all T thresholds; -1 when the nearest
    point (``gate="farthest"``: the k-th) is farther than ``max_distance`` or none of the k is labelled
    (Sec. 4.2, 3D). ``labelled_fallback``: queries whose k neighbours are all unlabelled (noise segments) take
    the vote of the k nearest labelled points, under the same gate."""
    from scipy.spatial import cKDTree

    t = labels.shape[0]
    out = np.full((t, len(queries)), -1, np.int64)
    if len(queries) == 0 or len(points) == 0:
        return out
    k = min(k, len(points))
    dist, idx = cKDTree(points).query(queries, k=k)
    dist, idx = dist.reshape(len(queries), k), idx.reshape(len(queries), k)
    near = (dist[:, -1] if gate == "farthest" else dist[:, 0]) <= max_distance
    for i in range(t):
        out[i, near] = mode_vote(labels[i][idx[near]])
        if labelled_fallback:
            miss = np.flatnonzero(near & (out[i] < 0))
            if len(miss):
                out[i, miss] = propagate_labels(points, labels[i], queries[miss], k=k, max_distance=max_distance)
    return out


def view_labels(seg: Segmentation3D, labels: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                cfg: SegmentConfig | None = None) -> np.ndarray:
    """Label a (novel) view: unproject its depth, vote among the k nearest labelled points.

    ``labels`` int [T,N] of the cloud; ``depth`` [H,W] planar (0 = background). Returns int [T,H,W].
    """
    cfg = cfg or SegmentConfig()
    h, w = depth.shape
    out = np.full((labels.shape[0], h, w), -1, np.int64)
    fg = depth > 0
    if cfg.background_segment:
        out[:, ~fg] = len(seg.cloud)
    if not fg.any():
        return out
    pts = unproject_depth(depth, K, c2w)[fg]
    out[:, fg] = propagate_label_stack(seg.cloud.points, labels, pts, k=cfg.propagate_k,
                                       max_distance=cfg.propagate_max_distance,
                                       labelled_fallback=seg.min_cluster_size > 1, gate=cfg.propagate_gate)
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


class SegmentInputError(ValueError):
    """Raised for malformed features, labels or points given to this module."""


# ---------------------------------------------------------------------------------------------------------------
# 2D segmentation and label propagation (Sec. 4.2)


def segment_feature_map(features: np.ndarray, thresholds: np.ndarray | None, max_segments: int = 200,
                        valid: np.ndarray | None = None, quantiles: int = 50) -> np.ndarray:
    """2D inference (Sec. 4.2, 2D): 4-neighbour pixel graph with ``1 - cos`` edge lengths, one
    single-linkage tree, a cut per threshold. Pixels outside ``valid`` are not in the graph and get -1.

    ``thresholds`` None cuts at ``quantiles`` quantiles of the tree's own merge altitudes (the whole-tree
    sweep, :func:`altitude_quantiles`).

    Shape: ``features`` [H, W, D], ``valid`` bool [H, W] -> int64 [T, H, W].
    """
    f = np.asarray(features)
    if f.ndim != 3:
        raise SegmentInputError(f"features must be [H, W, D], got shape {f.shape}")
    h, w, d = f.shape
    valid_flat = np.ones(h * w, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    if valid_flat.size != h * w:
        raise SegmentInputError(f"valid must be [H, W] = [{h}, {w}], got {valid_flat.size} values")
    nv = int(valid_flat.sum())
    count = quantiles if thresholds is None else np.atleast_1d(thresholds).size
    out = np.full((count, h * w), -1, np.int64)
    if nv == 0:
        return out.reshape(count, h, w)
    src, dst = grid_graph_4(h, w)
    keep = valid_flat[src] & valid_flat[dst]
    new_id = np.cumsum(valid_flat) - 1
    feats = f.reshape(h * w, d)[valid_flat]
    s, t = new_id[src[keep]], new_id[dst[keep]]
    tree = linkage_tree.single_linkage_tree(nv, s, t, feature_distances(feats, s, t))
    th = altitude_quantiles(tree, quantiles) if thresholds is None else np.atleast_1d(np.asarray(thresholds, float))
    out[:, valid_flat] = linkage_tree.cut_many(tree, th, max_segments=max_segments)
    return out.reshape(count, h, w)


def altitude_quantiles(tree: linkage_tree.SingleLinkageTree, n: int = 50) -> np.ndarray:
    """``n`` cut thresholds spread over a tree's finite merge altitudes (from just above the lowest merge to just
    above the highest), so every granularity the tree holds is visited whatever its distance scale.

    Shape: -> float64 [n], non-decreasing.

    >>> t = linkage_tree.single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> altitude_quantiles(t, 3).round(3).tolist()
    [0.2, 0.35, 0.5]
    """
    alt = tree.altitudes[tree.num_leaves:]
    alt = alt[np.isfinite(alt)]
    if alt.size == 0:
        return np.zeros(n)
    q = np.quantile(alt, np.linspace(0.0, 1.0, n))
    return np.nextafter(q, np.inf)  # cuts keep merges strictly below the threshold: include the quantile's merge


def mode_vote(votes: np.ndarray) -> np.ndarray:
    """Mode of each row of neighbour labels, nearest-first (``-1`` does not vote; ties go to the nearest tied
    label; a row with no vote gives -1).

    Shape: ``votes`` int [Q, k] (columns ordered by distance) -> int64 [Q].

    >>> mode_vote(np.array([[3, 5, 5], [3, 5, -1], [-1, -1, -1]])).tolist()
    [5, 3, -1]
    """
    votes = np.asarray(votes, np.int64)
    counts = (votes[:, :, None] == votes[:, None, :]).sum(-1) * (votes >= 0)  # [Q, k] count of each label
    winner = votes[np.arange(votes.shape[0]), np.argmax(counts, axis=1)]  # first max = nearest among ties
    winner[counts.max(axis=1, initial=0) == 0] = -1
    return winner


def propagate_labels(points: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int = 5,
                     max_distance: float = 5e-3) -> np.ndarray:
    """Label new points by the mode of the ``k`` nearest labelled points (Sec. 4.2, 3D).

    Only points with ``labels >= 0`` vote. A query is unassigned (-1) when its nearest labelled point is farther
    than ``max_distance``. Ties in the vote go to the label of the nearest among the tied neighbours.

    Shape: ``points`` [N, 3], ``labels`` int [N], ``queries`` [Q, 3] -> int64 [Q].

    >>> pts = np.array([[0.0, 0, 0], [0.001, 0, 0], [0.002, 0, 0], [1, 0, 0]])
    >>> propagate_labels(pts, np.array([4, 4, 7, 7]), np.array([[0.0021, 0, 0], [0.5, 0, 0]]), k=3).tolist()
    [4, -1]
    """
    pts = np.asarray(points, np.float64)
    lab = np.asarray(labels).ravel()
    q = np.asarray(queries, np.float64)
    if pts.ndim != 2 or q.ndim != 2 or pts.shape[1] != q.shape[1] or lab.size != pts.shape[0]:
        raise SegmentInputError(
            f"expected points [N, D], labels [N], queries [Q, D]; got {pts.shape}, {lab.shape}, {q.shape}")
    if k < 1:
        raise SegmentInputError(f"k must be >= 1, got {k}")
    out = np.full(q.shape[0], -1, np.int64)
    ok = lab >= 0
    if not ok.any() or q.shape[0] == 0:
        return out
    ref, ref_lab = pts[ok], lab[ok].astype(np.int64)
    kk = min(k, ref.shape[0])
    dist, idx = cKDTree(ref).query(q, k=kk)
    dist = dist.reshape(q.shape[0], kk)
    winner = mode_vote(ref_lab[idx.reshape(q.shape[0], kk)])
    near = dist[:, 0] <= max_distance
    out[near] = winner[near]
    return out


# ---------------------------------------------------------------------------------------------------------------
# What a user receives: the exported cuts


def significant_size(num_points: int, cfg: SegmentConfig) -> int:
    """Points a segment needs to be significant at an exported cut (:attr:`SegmentConfig.significant_share`)."""
    return max(int(np.ceil(cfg.significant_share * num_points)), cfg.significant_min_points, 1)


def export_thresholds(seg: Segmentation3D, cfg: SegmentConfig) -> list[float]:
    """The exported cut thresholds, fine to coarse: the tree's persistent levels, or the fixed ones."""
    from backend.core.levels import FINEST, persistent_levels

    if cfg.export_levels == "fixed":
        return sorted(float(t) for t in cfg.export_thresholds)
    n = len(seg.cloud)
    # the finest level cannot hold more segments than the cloud has room for above the dust size
    levels = persistent_levels(seg.tree, cfg.export_count, finest=min(FINEST, n / significant_size(n, cfg)))
    if not len(levels):  # one segment at every level: the tree's median merge shows what there is
        levels = altitude_quantiles(seg.tree, 3)[1:2]
    return [float(t) for t in levels]


def export_levels_info(cfg: SegmentConfig, num_points: int) -> dict:
    """How the exported levels were chosen, for hierarchy.json and the add-on."""
    if cfg.export_levels == "fixed":
        return {"rule": "fixed", "thresholds": [float(t) for t in cfg.export_thresholds]}
    return {"rule": "persistent", "count": cfg.export_count,
            "dust_points": significant_size(num_points, cfg),
            "description": "levels spread evenly in log effective segment count (inverse Simpson index of the "
                           "segments' shares) from 200 down to 1.5, each cut in the middle (log altitude) of the "
                           "altitude range its band spans; segments under dust_points points joined to their "
                           "nearest larger neighbour"}


def absorb_dust(points: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labels int [T, N] with the points of segments under ``min_size`` points (and unassigned ones) given the
    label of their nearest point in a significant segment of the same cut (unchanged where there is none).

    >>> pts = np.array([[0.0, 0, 0], [0.1, 0, 0], [0.2, 0, 0], [5.0, 0, 0]])
    >>> absorb_dust(pts, np.array([[0, 0, 1, 0]]), 3).tolist()
    [[0, 0, 0, 0]]
    """
    out = np.array(labels, np.int64, copy=True)
    for row in out:
        ok = row >= 0
        counts = np.bincount(row[ok]) if ok.any() else np.zeros(0, np.int64)
        big = ok & (counts[np.maximum(row, 0)] >= min_size) if len(counts) else np.zeros_like(ok)
        small = ~big
        if not big.any() or not small.any():
            continue
        _, nearest = cKDTree(points[big]).query(points[small], k=1)
        row[small] = row[big][nearest]
    return out


def export_labels(seg: Segmentation3D, thresholds, cfg: SegmentConfig) -> np.ndarray:
    """int [T, N] labels of the exported cuts: :meth:`Segmentation3D.labels`, then dust absorbed."""
    labels = seg.labels(thresholds, max_segments=cfg.max_segments)
    if cfg.significant_share <= 0:
        return labels
    absorbed = absorb_dust(seg.cloud.points, labels, significant_size(len(seg.cloud), cfg))
    return np.stack([linkage_tree.relabel_by_size(row, cfg.max_segments) for row in absorbed])
