"""Evaluation metrics of the paper (Sec. 5.1, appendix A.3): Normalized Covering (dense Eq. 6 and the released
scripts' point-sampled form), Segmentation Injectivity, View Consistency, depth error, and a Markdown table
like Table 1.

A prediction answers ``F(v, p, t)``: the predicted segment containing pixel ``p`` of view ``v`` at granularity
``t`` (empty when unassigned). It is a :class:`Prediction`: label maps ``labels`` int [T, H, W] (-1 =
unassigned) that are either

- a partition per granularity (``regions`` None): ``F(v, p, t)`` = the pixels labelled like ``p`` at ``t``
  (our 2D and 3D results, one label map per threshold), or
- indices into overlapping ``regions`` bool [M, H, W] (``F(v, p, t)`` = ``regions[labels[t, p]]``): e.g. a
  SAM user's masks queried at a point (:func:`query_masks`), without turning them into a partition first.

Ground truth is a stack of boolean masks ``gt_masks`` [G, H, W] (they may overlap); masks under
``min_size`` = 20 pixels are excluded everywhere (Sec. 5.1). A plain int array is accepted wherever a
:class:`Prediction` is (a partition). Everything is vectorised; a metric over zero eligible GT masks is
``nan`` (callers average over views with ``np.nanmean``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from backend.core.geometry import warp_pixels

TABLE1_COLUMNS: tuple[str, ...] = ("NC_obj", "NC_coll", "NC_scene", "NC_mean", "SI", "VC")
"""Columns of the paper's Table 1."""


class MetricInputError(ValueError):
    """Raised for predictions, masks or cameras of the wrong shape or type."""


# ---------------------------------------------------------------------------------------------------------------
# Input checks and the shared IoU table


def _as_pred(pred: np.ndarray) -> np.ndarray:
    p = np.asarray(pred)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or not np.issubdtype(p.dtype, np.integer):
        raise MetricInputError(f"pred must be integer labels [T, H, W] (or [H, W]), got {p.dtype} {p.shape}")
    return p.astype(np.int64, copy=False)


def _as_masks(gt_masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(gt_masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != tuple(hw):
        raise MetricInputError(f"gt_masks must be bool [G, {hw[0]}, {hw[1]}], got {m.shape}")
    if m.dtype != bool:
        raise MetricInputError(f"gt_masks must be boolean, got {m.dtype}")
    return m


@dataclass
class IoUTable:
    """Sparse IoU of GT masks vs predicted segments over all thresholds.

    Predicted segment ``s`` is label ``seg_label[s]`` of threshold ``seg_t[s]``; only pairs that intersect are
    stored (the others have IoU 0).
    """

    seg_t: np.ndarray
    """int64 [S]: threshold index of each predicted segment."""
    seg_label: np.ndarray
    """int64 [S]: label of each predicted segment in its map."""
    seg_size: np.ndarray
    """int64 [S]: pixels in each predicted segment."""
    offsets: np.ndarray
    """int64 [T+1]: segment id of label ``l`` at threshold ``t`` is ``offsets[t] + l``."""
    rows: np.ndarray
    """int64 [Z]: segment id of each stored pair."""
    cols: np.ndarray
    """int64 [Z]: GT mask index of each stored pair."""
    iou: np.ndarray
    """float64 [Z]: IoU of each stored pair."""
    num_masks: int
    """G."""

    def lookup(self, t: np.ndarray, label: np.ndarray, g: np.ndarray) -> np.ndarray:
        """IoU of GT mask ``g`` with segment ``label`` at threshold ``t`` (0 when unassigned or disjoint).

        Shape: broadcastable int arrays -> float64 of their broadcast shape.
        """
        t, label, g = np.broadcast_arrays(np.asarray(t), np.asarray(label), np.asarray(g))
        if self.iou.size == 0:
            return np.zeros(t.shape)
        ok = label >= 0
        key = (self.offsets[t] + np.maximum(label, 0)) * self.num_masks + g
        table_key = self.rows * self.num_masks + self.cols  # sorted by construction
        pos = np.minimum(np.searchsorted(table_key, key), table_key.size - 1)
        return np.where(ok & (table_key[pos] == key), self.iou[pos], 0.0)

    def best_per_mask(self) -> np.ndarray:
        """float64 [G]: the best IoU of each GT mask over all segments and thresholds (Eq. 6's inner max)."""
        best = np.zeros(self.num_masks)
        np.maximum.at(best, self.cols, self.iou)
        return best


def iou_table(pred: np.ndarray, gt_masks: np.ndarray) -> IoUTable:
    """IoU of every GT mask with every predicted segment at every threshold, via one sparse contingency product.

    Shape: ``pred`` int [T, H, W], ``gt_masks`` bool [G, H, W]. Complexity: O(T P G_overlap) with P = H W.
    """
    pred = _as_pred(pred)
    T, h, w = pred.shape
    masks = _as_masks(gt_masks, (h, w)).reshape(-1, h * w)
    P = h * w
    flat = pred.reshape(T, P)
    counts = np.maximum(flat.max(axis=1, initial=-1) + 1, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    S = int(offsets[-1])
    # Pixel-by-segment membership, built directly in CSR form (row p lists its segment at every threshold).
    seg_pt = np.ascontiguousarray((offsets[:-1, None] + flat).T)  # [P, T]
    ok_t = np.ascontiguousarray(flat.T >= 0)
    indices = seg_pt.ravel() if ok_t.all() else seg_pt[ok_t]
    indptr = np.concatenate([[0], np.cumsum(ok_t.sum(axis=1))])
    member_t = sparse.csr_matrix((np.ones(indices.size, np.float64), indices, indptr), shape=(P, S))
    seg_size = np.bincount(indices, minlength=S).astype(np.int64)
    seg_t = np.repeat(np.arange(T, dtype=np.int64), counts)
    seg_label = np.arange(S, dtype=np.int64) - offsets[seg_t]
    inter = (sparse.csr_matrix(masks, dtype=np.float64) @ member_t).tocoo()  # [G, S], exact integer counts
    order = np.lexsort((inter.row, inter.col))  # by segment, then mask: sorted lookup keys
    rows = inter.col[order].astype(np.int64)
    cols = inter.row[order].astype(np.int64)
    iv = inter.data[order]
    gt_size = masks.sum(axis=1)
    iou = iv / (seg_size[rows] + gt_size[cols] - iv)
    return IoUTable(seg_t, seg_label, seg_size, offsets, rows, cols, iou, masks.shape[0])


def _eligible(gt_masks: np.ndarray, min_size: int) -> np.ndarray:
    return np.asarray(gt_masks).reshape(len(gt_masks), -1).sum(axis=1) >= min_size


def _sample_in_masks(masks_flat: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """``samples`` uniform pixel indices (with replacement) inside each non-empty mask. int64 [G, samples]."""
    g_idx, p_idx = np.nonzero(masks_flat)
    count = np.bincount(g_idx, minlength=masks_flat.shape[0])
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    u = rng.random((masks_flat.shape[0], samples))
    pick = start[:, None] + np.minimum((u * count[:, None]).astype(np.int64), np.maximum(count[:, None] - 1, 0))
    return p_idx[np.minimum(pick, max(p_idx.size - 1, 0))] if p_idx.size else np.zeros_like(pick)


# ---------------------------------------------------------------------------------------------------------------
# Predictions: partitions per granularity, or overlapping regions queried per granularity


@dataclass
class Prediction:
    """``F(v, p, t)`` for one view (see the module docstring).

    ``labels`` int [T, H, W] (-1 = unassigned); ``regions`` bool [M, H, W] or None (labels then form a
    partition per granularity).
    """

    labels: np.ndarray
    regions: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = _as_pred(self.labels)
        if self.regions is not None:
            r = np.asarray(self.regions)
            if r.ndim != 3 or r.dtype != bool or r.shape[1:] != self.labels.shape[1:]:
                raise MetricInputError(f"regions must be bool [M, H, W] matching labels {self.labels.shape}, "
                                       f"got {r.dtype} {r.shape}")
            if self.labels.max(initial=-1) >= len(r):
                raise MetricInputError("labels index past the regions")
            self.regions = r

    @property
    def num_thresholds(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.labels.shape[1]), int(self.labels.shape[2])

    def flat(self) -> np.ndarray:
        """int64 [T, P] labels."""
        return self.labels.reshape(self.num_thresholds, -1)

    def region(self, t: int, label: int) -> np.ndarray:
        """bool [P]: the pixels of ``F(v, p, t)`` for a pixel ``p`` with this label at ``t`` (empty for -1)."""
        if label < 0:
            return np.zeros(self.labels[0].size, bool)
        if self.regions is None:
            return self.flat()[t] == label
        return self.regions[label].reshape(-1)


def as_prediction(pred: np.ndarray | Prediction) -> Prediction:
    """A :class:`Prediction` (a plain label stack is a partition per granularity)."""
    return pred if isinstance(pred, Prediction) else Prediction(pred)


def query_masks(masks: np.ndarray, num_levels: int = 50) -> Prediction:
    """Overlapping masks (e.g. SAM's automatic masks of one image) queried like a point-prompted SAM user.

    Rule: granularity ``t`` of ``num_levels`` has a target area ``a_t``, log-spaced from the smallest mask's
    area to the image area; ``F(v, p, t)`` = the mask containing ``p`` whose area is nearest to ``a_t`` in log
    scale (ties: the smaller mask); the pixels no mask contains form one more region (what a click there would
    select), as :func:`unassigned_as_region` does for label maps. Every mask stays whole: nothing is cut into a
    partition, so overlaps and inconsistencies count against the masks as they would for a user.

    Shape: ``masks`` bool [M, H, W] -> :class:`Prediction` with ``labels`` [num_levels, H, W].

    >>> m = np.zeros((2, 1, 4), bool); m[0, 0, :1] = True; m[1, 0, :3] = True
    >>> query_masks(m, 3).labels[:, 0].tolist()
    [[0, 1, 1, 2], [1, 1, 1, 2], [1, 1, 1, 2]]
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise MetricInputError(f"masks must be bool [M, H, W], got {masks.shape}")
    m, h, w = masks.shape
    labels = np.full((num_levels, h * w), -1, np.int64)
    if m == 0:
        return Prediction(labels.reshape(num_levels, h, w), masks)
    flat = masks.reshape(m, -1)
    area = flat.sum(axis=1)
    nonempty = area > 0
    if not nonempty.any():
        return Prediction(labels.reshape(num_levels, h, w), masks)
    log_area = np.log(np.maximum(area, 1)).astype(np.float64)
    targets = np.linspace(log_area[nonempty].min(), np.log(h * w), num_levels)
    # Masks in increasing area: for each target, scan masks from the nearest-area one outwards per pixel is
    # costly; instead rank masks by |log area - target| (then by area) and paint the worst first.
    for t, target in enumerate(targets):
        cost = np.abs(log_area - target) + 1e-9 * area  # ties: the smaller mask
        order = np.argsort(-cost, kind="stable")
        lab = labels[t]
        for k in order:
            if nonempty[k]:
                lab[flat[k]] = k
    rest = ~flat.any(axis=0)
    if rest.any():
        labels[:, rest] = m
        masks = np.concatenate([masks, rest.reshape(1, h, w)])
    return Prediction(labels.reshape(num_levels, h, w), masks)


def unassigned_as_region(labels: np.ndarray) -> np.ndarray:
    """Label maps with the unassigned pixels (-1) of each granularity turned into one more segment.

    The released evaluation scripts compare label values, so whatever value unassigned pixels hold forms a segment
    like any other (e.g. the background a 3D point cloud does not reach); this reproduces that.

    Shape: int [T, H, W] -> int64 [T, H, W].

    >>> unassigned_as_region(np.array([[[0, -1, 1]], [[-1, -1, 0]]])).tolist()
    [[[0, 2, 1]], [[1, 1, 0]]]
    """
    lab = np.asarray(labels, np.int64)
    fresh = lab.reshape(len(lab), -1).max(axis=1, initial=-1) + 1
    return np.where(lab < 0, fresh[:, None, None], lab)


def no_surface_as_region(pred: np.ndarray | Prediction, no_surface: np.ndarray) -> Prediction:
    """``pred`` with the pixels where no surface was hit made one region at every granularity.

    In Blender every predictor gets the rendered depth, and its zeros are exactly the pixels with no surface; a
    point-prompted user clicking there selects "nothing". The exact-geometry evaluation hands this region to
    every row alike (input masks, ours-2D, ours-3D), so no row is scored on knowledge another lacks.

    Shape: ``pred`` labels [T, H, W] (or a region prediction), ``no_surface`` bool [H, W] -> :class:`Prediction`.

    >>> no_surface_as_region(np.array([[[0, 0, 1]]]), np.array([[False, True, False]])).labels.tolist()
    [[[0, 2, 1]]]
    """
    pred = as_prediction(pred)
    region = np.asarray(no_surface, bool)
    if region.shape != pred.shape:
        raise MetricInputError(f"no_surface must be bool {pred.shape}, got {region.shape}")
    labels = pred.labels.copy()
    if not region.any():
        return Prediction(labels, pred.regions)
    if pred.regions is None:
        fresh = labels.reshape(len(labels), -1).max(axis=1, initial=-1) + 1
        labels[:, region] = fresh[:, None]
        return Prediction(labels, None)
    labels[:, region] = len(pred.regions)
    return Prediction(labels, np.concatenate([pred.regions, region[None]]))


@dataclass
class _GtIoU:
    """IoU of every (eligible) GT mask with every predicted segment, and lookups by (t, label, g)."""

    pred: Prediction
    table: IoUTable | None
    dense: np.ndarray | None  # float64 [G, M] for region predictions

    @classmethod
    def of(cls, pred: Prediction, masks: np.ndarray) -> "_GtIoU":
        if pred.regions is None:
            return cls(pred, iou_table(pred.labels, masks), None)
        r = pred.regions.reshape(len(pred.regions), -1).astype(np.float64)
        g = masks.reshape(len(masks), -1).astype(np.float64)
        inter = g @ r.T
        union = g.sum(1)[:, None] + r.sum(1)[None, :] - inter
        return cls(pred, None, np.where(union > 0, inter / np.maximum(union, 1), 0.0))

    def lookup(self, t: np.ndarray, label: np.ndarray, g: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return self.table.lookup(t, label, g)
        assert self.dense is not None
        t, label, g = np.broadcast_arrays(np.asarray(t), np.asarray(label), np.asarray(g))
        if self.dense.shape[1] == 0:
            return np.zeros(t.shape)
        return np.where(label >= 0, self.dense[g, np.maximum(label, 0)], 0.0)

    def best_per_mask(self) -> np.ndarray:
        if self.table is not None:
            return self.table.best_per_mask()
        assert self.dense is not None
        return self.dense.max(axis=1, initial=0.0)

    def at_samples(self, p: np.ndarray) -> np.ndarray:
        """float64 [T, G, S]: IoU with GT mask ``g`` of ``F(v, p[g, s], t)``."""
        flat = self.pred.flat()
        t = np.arange(flat.shape[0])[:, None, None]
        g = np.arange(p.shape[0])[None, :, None]
        return self.lookup(t, flat[t, p[None]], g)


def _best_threshold(ious: np.ndarray) -> np.ndarray:
    """A.3's ``t = argmax_t IoU(A, F(v, p1, t))`` from :meth:`_GtIoU.at_samples` (ties: the smallest ``t``)."""
    return np.argmax(ious, axis=0)


def _pair_iou(pred_a: Prediction, pred_b: Prediction, t: np.ndarray, la: np.ndarray, lb: np.ndarray,
              mask: np.ndarray | None = None, pull_b: np.ndarray | None = None) -> np.ndarray:
    """IoU of ``F_a(t, la)`` and ``F_b(t, lb)`` for each entry (0 when either is unassigned or both empty).

    ``pull_b`` int [P_a] maps pixels of view a to pixels of view b (-1: nowhere), so ``F_b`` is compared
    through it; ``mask`` bool [P_a] restricts the pixels counted. Unique ``(t, la, lb)`` triples are computed
    once (a GT mask's samples mostly hit the same few segments).
    """
    t, la, lb = (np.asarray(x, np.int64).ravel() for x in (t, la, lb))
    out = np.zeros(t.size)
    ok = (la >= 0) & (lb >= 0)
    if not ok.any():
        return out
    same_view = pull_b is None and pred_a is pred_b and pred_a.regions is None and mask is None
    if same_view:  # two segments of one partition: identical or disjoint
        out[ok] = (la[ok] == lb[ok]).astype(np.float64)
        return out
    keys = np.stack([t[ok], la[ok], lb[ok]], 1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    vals = np.empty(len(uniq))
    for i, (tt, a, b) in enumerate(uniq):
        ra = pred_a.region(int(tt), int(a))
        rb_full = pred_b.region(int(tt), int(b))
        rb = rb_full if pull_b is None else np.where(pull_b >= 0, rb_full[np.maximum(pull_b, 0)], False)
        if mask is not None:
            ra, rb = ra & mask, rb & mask
        inter = np.count_nonzero(ra & rb)
        union = np.count_nonzero(ra) + np.count_nonzero(rb) - inter
        vals[i] = float(inter) / float(union) if union else 0.0
    out[np.flatnonzero(ok)] = vals[inv.ravel()]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Normalized Covering (Eq. 6)


def _pred_and_eligible_masks(pred: np.ndarray | Prediction, gt_masks: np.ndarray,
                             min_size: int) -> tuple[Prediction, np.ndarray | None]:
    """Checked prediction and the GT masks of at least ``min_size`` pixels (None when there are none)."""
    pred = as_prediction(pred)
    masks = _as_masks(gt_masks, pred.shape)
    keep = _eligible(masks, min_size)
    return pred, (masks[keep] if keep.any() else None)


def normalized_covering(pred: np.ndarray | Prediction, gt_masks: np.ndarray, min_size: int = 20) -> float:
    """Normalized Covering, dense Eq. 6: ``NC = 1/|S| sum_{A in S} max_{A'} |A n A'| / |A u A'|``.

    ``S`` = GT masks with at least ``min_size`` pixels; ``A'`` ranges over the predicted segments of every
    granularity (the best one is picked per GT mask). ``nan`` when no mask qualifies.

    >>> pred = np.array([[[0, 0, 1, 1]]])
    >>> normalized_covering(pred, np.array([[[True, True, True, False]]]), min_size=1)
    0.6666666666666666
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    return float(_GtIoU.of(pred, masks).best_per_mask().mean())


def normalized_covering_sampled(pred: np.ndarray | Prediction, gt_masks: np.ndarray, rng: np.random.Generator,
                                samples: int = 100, min_size: int = 20) -> float:
    """The released evaluation scripts' NC: per GT mask ``A``, ``samples`` pixels ``p`` uniform in ``A``; each
    scores ``max_t IoU(A, F(v, p, t))``; the mask scores the MEAN over its samples; NC is the mean over masks.

    Lower than the dense Eq. 6 whenever a GT mask is fragmented (only the fragment around ``p`` counts) or
    partly unassigned.

    >>> pred = np.array([[[0, 0, 1, 1]]])  # a 4-pixel mask split in two halves
    >>> normalized_covering_sampled(pred, np.ones((1, 1, 4), bool), np.random.default_rng(0), min_size=1)
    0.5
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    p = _sample_in_masks(masks.reshape(len(masks), -1), rng, samples)  # [G, S]
    return float(_GtIoU.of(pred, masks).at_samples(p).max(axis=0).mean(axis=1).mean())


def normalized_covering_curve(pred: np.ndarray | Prediction, gt_masks: np.ndarray, min_size: int = 20) -> np.ndarray:
    """Dense NC at each granularity alone: ``NC_t = 1/|S| sum_A max_{A' in F(., t)} IoU(A, A')`` (the curve of
    NC against the threshold; Eq. 6 picks the best granularity per mask instead).

    Shape: -> float64 [T] (``nan`` when no GT mask qualifies).

    >>> pred = np.array([[[0, 1, 2, 3]], [[0, 0, 1, 1]]])
    >>> normalized_covering_curve(pred, np.array([[[True, True, False, False]]]), min_size=1).tolist()
    [0.5, 1.0]
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    T = pred.num_thresholds
    if masks is None:
        return np.full(T, np.nan)
    gi = _GtIoU.of(pred, masks)
    out = np.zeros((T, len(masks)))
    if gi.table is not None:
        np.maximum.at(out, (gi.table.seg_t[gi.table.rows], gi.table.cols), gi.table.iou)
    else:
        assert gi.dense is not None
        for t in range(T):
            used = np.unique(pred.flat()[t])
            used = used[used >= 0]
            if used.size:
                out[t] = gi.dense[:, used].max(axis=1)
    return out.mean(axis=1)


def normalized_covering_levels(pred: np.ndarray | Prediction, gt_by_level: Mapping[str, np.ndarray],
                               min_size: int = 20) -> dict[str, float]:
    """NC per hierarchy level (e.g. ``{"object": masks, "collection": ..., "scene": ...}``) plus ``"mean"``
    over the levels that have a value (Table 1's NC_mean)."""
    out = {name: normalized_covering(pred, masks, min_size) for name, masks in gt_by_level.items()}
    vals = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


def masks_from_label_image(ids: np.ndarray, include_background: bool = False) -> np.ndarray:
    """One boolean mask per distinct id of a GT label image (0 = background, skipped unless asked).

    Shape: int [H, W] -> bool [G, H, W], ids in increasing order.

    >>> masks_from_label_image(np.array([[0, 2], [2, 5]])).astype(int).tolist()
    [[[0, 1], [1, 0]], [[0, 0], [0, 1]]]
    """
    ids = np.asarray(ids)
    values = np.unique(ids)
    if not include_background:
        values = values[values != 0]
    return ids[None] == values[:, None, None]


# ---------------------------------------------------------------------------------------------------------------
# Segmentation Injectivity (A.3)


def segmentation_injectivity(pred: np.ndarray | Prediction, gt_masks: np.ndarray, rng: np.random.Generator,
                             samples: int = 100, min_size: int = 20) -> float:
    """Segmentation Injectivity (appendix A.3): ``SI = 1/(N|S|) sum_A sum_i IoU(F(v,p1,t), F(v,p2,t))``.

    For each GT mask ``A`` and sample ``i``: ``p1`` and ``p2`` uniform in ``A``;
    ``t = argmax_t IoU(A, F(v, p1, t))``; score the IoU of the predicted segments at ``p1`` and ``p2`` at that
    granularity (0 when either is unassigned). A prediction that splits a GT object into pieces scores low (two
    points of the object land in different pieces); for a partition the IoU is 1 or 0, for overlapping masks
    any value in between.

    >>> gt = np.ones((1, 1, 8), bool)
    >>> whole, halves = np.zeros((1, 1, 8), int), np.array([[[0, 0, 0, 0, 1, 1, 1, 1]]])
    >>> rng = np.random.default_rng(0)
    >>> segmentation_injectivity(whole, gt, rng, min_size=1), segmentation_injectivity(halves, gt, rng, min_size=1)
    (1.0, 0.55)
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    flat = pred.flat()
    gt_flat = masks.reshape(len(masks), -1)
    p1 = _sample_in_masks(gt_flat, rng, samples)  # [G, S]
    p2 = _sample_in_masks(gt_flat, rng, samples)
    t_best = _best_threshold(_GtIoU.of(pred, masks).at_samples(p1))
    score = _pair_iou(pred, pred, t_best, flat[t_best, p1], flat[t_best, p2])
    return float(score.reshape(p1.shape).mean(axis=1).mean())


# ---------------------------------------------------------------------------------------------------------------
# View Consistency (A.3)


def view_consistency(pred_src: np.ndarray | Prediction, pred_dst: np.ndarray | Prediction, gt_masks_src: np.ndarray,
                     depth_src: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray, K_dst: np.ndarray,
                     c2w_dst: np.ndarray, visible_src: np.ndarray, rng: np.random.Generator, samples: int = 100,
                     min_size: int = 20) -> float:
    """View Consistency (A.3): ``VC = 1/(N|S|) sum_A sum_i |T(A1) n A2 n V| / |(T(A1) u A2) n V|``.

    For each GT mask ``A`` (source view) and sample ``i``: ``p1`` uniform in ``A n V``; ``t`` chosen as for SI
    (``argmax_t IoU(A, F(v,p1,t))``); ``A1 = F(v,p1,t)``; ``p2 = T(p1)`` warped with the ground-truth depth and
    poses; ``A2 = F(v',p2,t)`` at the same granularity (A.3). As in Sec. 5.1, ``A2`` is warped back into the
    source view (source pixel ``q`` belongs to it when ``T(q)`` lies in ``A2``) and the IoU is taken over
    ``V`` = pixels visible in both views (``visible_src``) whose warp lands inside the destination image.
    Unassigned ``p1`` or ``p2`` scores 0; masks with no pixel in ``V`` are skipped.

    Shape: predictions [T, H, W] / [T, H', W'], ``gt_masks_src`` bool [G, H, W], ``depth_src`` [H, W] planar
    (0 = background), ``K_*`` 3x3, ``c2w_*`` 4x4, ``visible_src`` bool [H, W].
    """
    pred_src = as_prediction(pred_src)
    pred_dst = as_prediction(pred_dst)
    if pred_src.num_thresholds != pred_dst.num_thresholds:
        raise MetricInputError(f"pred_src and pred_dst need the same thresholds, got {pred_src.num_thresholds} "
                               f"and {pred_dst.num_thresholds}")
    h, w = pred_src.shape
    masks = _as_masks(gt_masks_src, (h, w))
    depth_src = np.asarray(depth_src, np.float64)
    visible = np.asarray(visible_src, bool)
    if depth_src.shape != (h, w) or visible.shape != (h, w):
        raise MetricInputError(f"depth_src and visible_src must be [{h}, {w}], got {depth_src.shape}, "
                               f"{visible.shape}")
    keep = _eligible(masks, min_size)
    if not keep.any():
        return float("nan")
    masks = masks[keep]
    P = h * w
    warp = warp_pixels(depth_src, K_src, c2w_src, K_dst, c2w_dst, pred_dst.shape)
    V = visible.reshape(-1) & (warp >= 0)
    masks_v = masks.reshape(len(masks), P) & V[None]
    has = masks_v.any(axis=1)
    if not has.any():
        return float("nan")
    masks, masks_v = masks[has], masks_v[has]
    p1 = _sample_in_masks(masks_v, rng, samples)  # [G, S], all in V
    t_best = _best_threshold(_GtIoU.of(pred_src, masks).at_samples(p1))
    l1 = pred_src.flat()[t_best, p1]
    l2 = pred_dst.flat()[t_best, warp[p1]]
    score = _pair_iou(pred_src, pred_dst, t_best, l1, l2, mask=V, pull_b=np.where(V, warp, -1))
    return float(score.reshape(p1.shape).mean(axis=1).mean())


# ---------------------------------------------------------------------------------------------------------------
# Depth error and the table


def depth_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, kind: str = "abs") -> float:
    """Depth error over valid pixels (Table 4: mean L2 in normalised scene units).

    ``kind="abs"``: mean ``|d - d_gt|`` (the per-pixel L2 norm of a scalar); ``kind="rmse"``: root mean square.
    ``valid`` defaults to ``gt > 0``; non-finite pixels are always skipped. ``nan`` when nothing is valid.

    >>> depth_error(np.array([1.0, 2.0, 5.0]), np.array([1.5, 2.0, 0.0]))
    0.25
    """
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise MetricInputError(f"pred and gt depth shapes differ: {pred.shape} vs {gt.shape}")
    v = (gt > 0) if valid is None else np.asarray(valid, bool)
    if v.shape != gt.shape:
        raise MetricInputError(f"valid must have the depth shape {gt.shape}, got {v.shape}")
    v = v & np.isfinite(pred) & np.isfinite(gt)
    if not v.any():
        return float("nan")
    diff = pred[v] - gt[v]
    if kind == "abs":
        return float(np.abs(diff).mean())
    if kind == "rmse":
        return float(np.sqrt(np.mean(diff ** 2)))
    raise MetricInputError(f"kind must be 'abs' or 'rmse', got {kind!r}")


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] = TABLE1_COLUMNS,
                 label: str = "method", raw_columns: Sequence[str] = ()) -> str:
    """Markdown table like the paper's Table 1: one row per method, values (fractions in [0, 1]) shown as
    percentages with one decimal, except ``raw_columns`` (e.g. a depth error) shown as numbers with four
    decimals; missing or ``nan`` values as ``-``.

    >>> print(format_table({"Ours": {"NC_obj": 0.48, "SI": 1.0}}, columns=("NC_obj", "SI", "VC")))
    | method | NC_obj | SI | VC |
    |---|---|---|---|
    | Ours | 48.0 | 100.0 | - |
    """
    lines = ["| " + " | ".join([label, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, vals in rows.items():
        cells = []
        for c in columns:
            v = vals.get(c)
            if v is None or not np.isfinite(v):
                cells.append("-")
            else:
                cells.append(f"{float(v):.4f}" if c in raw_columns else f"{100.0 * float(v):.1f}")
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)
