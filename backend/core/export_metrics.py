"""What a user receives, scored in 3D: the exported cuts of the segmented point cloud against the ground-truth
objects its points lie on.

NC, SI and VC (Sec. 5.1, appendix A.3) pick the best threshold per ground-truth point: they say how good the
tree is, not how good the handful of cuts a user is given are (the add-on imports the exported cuts and opens
its slider on one of them). These metrics score exactly those cuts, over the points of the cloud:

- **object recall** of a cut: the fraction of ground-truth objects holding at least ``min_share`` of the points
  that some segment of the cut matches with IoU >= ``min_iou`` (IoU of point sets);
- **NC of points** per level at a cut: dense Eq. 6 over point sets (mean over the level's masks holding at least
  ``min_share`` of the points of the best IoU with a segment of that one cut);
- **largest share**: the fraction of all points in the cut's largest segment (1.0: the cut is one segment).

Each point gets the ground-truth leaf it lies on from the views it was made from (:func:`point_leaf_ids`).
Everything here is a pure function of arrays; ground truth enters only as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from backend.core.geometry import project, uv_to_pixel

MIN_SHARE = 0.005
"""Objects (and level masks) holding fewer points than this share of the cloud are not counted."""
MIN_IOU = 0.5
"""A segment recalls an object when their IoU reaches this."""


class ExportMetricError(ValueError):
    """Raised for labels, ids or cameras of the wrong shape."""


def point_leaf_ids(points: np.ndarray, depth: np.ndarray, ids: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                   rel_tol: float = 0.02) -> np.ndarray:
    """The ground-truth leaf each point lies on: the most frequent leaf id over the views whose depth agrees
    with the point (``|z - depth| <= rel_tol * depth`` at the pixel it projects into); 0 where no view agrees.

    Shape: ``points`` [N, 3]; ``depth`` [V, H, W] planar (0 = no surface); ``ids`` int [V, H, W] leaf ids
    (0 = background); ``K`` [V, 3, 3]; ``c2w`` [V, 4, 4] -> int64 [N]. Complexity O(N V).

    >>> K = np.array([[[1.0, 0, 1], [0, 1.0, 1], [0, 0, 1]]]); c2w = np.eye(4)[None]
    >>> pts = np.array([[0.1, 0.1, -2.0], [0.1, 0.1, -5.0]])   # on the surface at depth 2; behind it
    >>> point_leaf_ids(pts, np.full((1, 2, 2), 2.0), np.full((1, 2, 2), 7), K, c2w).tolist()
    [7, 0]
    """
    points = np.asarray(points, np.float64)
    depth, ids = np.asarray(depth), np.asarray(ids)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ExportMetricError(f"points must be [N, 3], got {points.shape}")
    if depth.ndim != 3 or ids.shape != depth.shape or len(K) != len(depth) or len(c2w) != len(depth):
        raise ExportMetricError(f"depth [V, H, W], ids [V, H, W], K [V, 3, 3] and c2w [V, 4, 4] must agree, got "
                                f"{depth.shape}, {ids.shape}, {np.shape(K)}, {np.shape(c2w)}")
    n = len(points)
    _, h, w = depth.shape
    pt_idx, leaf = [], []
    for v in range(len(depth)):
        uv, z = project(points, K[v], c2w[v])
        pix = uv_to_pixel(uv, h, w)
        ok = (z > 0) & (pix >= 0)
        d = np.where(ok, depth[v].reshape(-1)[np.maximum(pix, 0)], 0.0)
        ok &= (d > 0) & (np.abs(z - d) <= rel_tol * d)
        lab = ids[v].reshape(-1)[np.maximum(pix, 0)].astype(np.int64)
        ok &= lab > 0
        pt_idx.append(np.flatnonzero(ok))
        leaf.append(lab[ok])
    out = np.zeros(n, np.int64)
    if not pt_idx or not sum(len(p) for p in pt_idx):
        return out
    p, lf = np.concatenate(pt_idx), np.concatenate(leaf)
    pairs, counts = np.unique(np.stack([p, lf], 1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))  # per point, the most frequent leaf first
    first = np.ones(len(order), bool)
    first[1:] = pairs[order[1:], 0] != pairs[order[:-1], 0]
    best = pairs[order[first]]
    out[best[:, 0]] = best[:, 1]
    return out


def best_iou_per_object(labels: np.ndarray, objects: np.ndarray, min_share: float = MIN_SHARE
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The objects holding at least ``min_share`` of the points, and each one's best IoU with a segment.

    ``labels`` int [N] one cut (-1 = in no segment); ``objects`` int [N] ground-truth ids (0 = none) ->
    (ids int64 [G], best IoU float64 [G]).

    >>> best_iou_per_object(np.array([0, 0, 0, 1]), np.array([5, 5, 6, 6]), 0.0)
    (array([5, 6]), array([0.66666667, 0.5       ]))
    """
    labels, objects = np.asarray(labels, np.int64), np.asarray(objects, np.int64)
    if labels.shape != objects.shape or labels.ndim != 1:
        raise ExportMetricError(f"labels and objects must be int [N] alike, got {labels.shape}, {objects.shape}")
    n = len(labels)
    ids, obj_size = np.unique(objects[objects > 0], return_counts=True)
    keep = obj_size >= max(min_share * n, 1)
    ids, obj_size = ids[keep], obj_size[keep]
    best = np.zeros(len(ids))
    if not len(ids):
        return ids, best
    seg_ids, seg_size = np.unique(labels[labels >= 0], return_counts=True)
    both = (labels >= 0) & np.isin(objects, ids)
    if not both.any():
        return ids, best
    pairs, inter = np.unique(np.stack([objects[both], labels[both]], 1), axis=0, return_counts=True)
    g = np.searchsorted(ids, pairs[:, 0])
    s = np.searchsorted(seg_ids, pairs[:, 1])
    iou = inter / (obj_size[g] + seg_size[s] - inter)
    np.maximum.at(best, g, iou)
    return ids, best


def largest_share(labels: np.ndarray) -> float:
    """The fraction of all points in the largest segment of one cut (unassigned points are in none).

    >>> largest_share(np.array([0, 0, 1, -1]))
    0.5
    """
    labels = np.asarray(labels, np.int64)
    if not len(labels) or not (labels >= 0).any():
        return 0.0
    return float(np.max(np.bincount(labels[labels >= 0])) / len(labels))


@dataclass
class CutScore:
    """One exported cut, scored."""

    threshold: float
    segments: int
    """Segments holding at least ``min_share`` of the points (the ones a user can see)."""
    largest_share: float
    object_recall: float
    nc_points: dict[str, float] = field(default_factory=dict)
    """Dense Eq. 6 over point sets, per level name."""
    recalled: list[int] = field(default_factory=list)
    """Ids of the recalled objects."""


def score_cut(labels: np.ndarray, threshold: float, levels: Mapping[str, np.ndarray], object_level: str = "object",
              min_share: float = MIN_SHARE, min_iou: float = MIN_IOU) -> CutScore:
    """Score one cut ``labels`` int [N] against ground-truth ids per level (``levels[name]`` int [N], 0 = none)."""
    labels = np.asarray(labels, np.int64)
    nc = {}
    recall, recalled = float("nan"), []
    for name, ids in levels.items():
        obj, best = best_iou_per_object(labels, ids, min_share)
        nc[name] = float(best.mean()) if len(best) else float("nan")
        if name == object_level and len(best):
            recall = float((best >= min_iou).mean())
            recalled = [int(i) for i in obj[best >= min_iou]]
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    return CutScore(threshold=float(threshold), segments=int((sizes >= max(min_share * len(labels), 1)).sum()),
                    largest_share=largest_share(labels), object_recall=recall, nc_points=nc, recalled=recalled)


@dataclass
class ExportReport:
    """The exported cuts, scored, and the summary a user-facing table shows."""

    cuts: list[CutScore]
    default_index: int
    """The cut the add-on opens on."""
    objects: int
    """Ground-truth objects counted (holding at least ``min_share`` of the points)."""
    recall_any: float
    """Fraction of those objects that some exported cut recalls."""
    nc_best: dict[str, float]
    """Per level, the NC of points at the single best exported cut."""
    unlabelled_share: float
    """Fraction of points no view's ground truth reached (floaters or points off every surface)."""

    def as_json(self) -> dict:
        def clean(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        return {"default_index": self.default_index, "objects": self.objects, "recall_any": clean(self.recall_any),
                "nc_best": {k: clean(v) for k, v in self.nc_best.items()},
                "unlabelled_share": clean(self.unlabelled_share),
                "cuts": [{"threshold": c.threshold, "segments": c.segments, "largest_share": c.largest_share,
                          "object_recall": clean(c.object_recall),
                          "nc_points": {k: clean(v) for k, v in c.nc_points.items()}} for c in self.cuts]}


def score_exported(labels: np.ndarray, thresholds: Sequence[float], levels: Mapping[str, np.ndarray],
                   default_index: int, object_level: str = "object", min_share: float = MIN_SHARE,
                   min_iou: float = MIN_IOU) -> ExportReport:
    """Score every exported cut ``labels`` int [T, N] (threshold ``thresholds[t]``) against ``levels``.

    A one-segment cloud recalls no object of a scene with several; the ground truth itself recalls all:

    >>> gt = {"object": np.repeat([1, 2, 3], 10)}
    >>> score_exported(np.zeros((1, 30), int), [0.1], gt, 0).recall_any
    0.0
    >>> score_exported(np.repeat([[0, 1, 2]], 10, axis=1), [0.1], gt, 0).recall_any
    1.0
    """
    labels = np.asarray(labels, np.int64)
    if labels.ndim != 2 or labels.shape[0] != len(thresholds):
        raise ExportMetricError(f"labels must be [T, N] with T = {len(thresholds)} thresholds, got {labels.shape}")
    cuts = [score_cut(labels[t], thresholds[t], levels, object_level, min_share, min_iou)
            for t in range(len(thresholds))]
    ids, _ = best_iou_per_object(labels[0] if len(labels) else np.zeros(0, np.int64),
                                 np.asarray(levels[object_level], np.int64), min_share)
    recalled = set().union(*[set(c.recalled) for c in cuts]) if cuts else set()
    nc_best = {name: float(np.nanmax([c.nc_points[name] for c in cuts])) if cuts and any(
        np.isfinite(c.nc_points[name]) for c in cuts) else float("nan") for name in levels}
    unlabelled = float((np.asarray(levels[object_level]) == 0).mean()) if labels.shape[1] else float("nan")
    return ExportReport(cuts=cuts, default_index=int(default_index), objects=len(ids),
                        recall_any=len(recalled) / len(ids) if len(ids) else float("nan"), nc_best=nc_best,
                        unlabelled_share=unlabelled)
