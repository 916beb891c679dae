"""Evaluation metrics of the paper (Sec. 5.1, A.3): Normalized Covering, Segmentation Injectivity, View
Consistency, depth error, and a Markdown table like Table 1.

A prediction is a stack of label maps ``pred`` int [T, H, W], one per threshold (granularity) ``t``; label -1
means unassigned (no predicted segment), and ``F(v, p, t)`` = the segment of ``pred[t]`` containing pixel
``p`` (empty when unassigned). Ground truth is a stack of boolean masks ``gt_masks`` [G, H, W] (they may
overlap); masks under ``min_size`` = 20 pixels are excluded everywhere (paper Sec. 5.1).

Everything is vectorised: the IoU of every GT mask with every predicted segment at every threshold comes
from one sparse contingency product, never from loops over pixels. A metric over zero eligible GT masks is
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


def _best_threshold(table: IoUTable, pred_flat: np.ndarray, g: np.ndarray, p: np.ndarray) -> np.ndarray:
    """For query pixels ``p`` of GT masks ``g`` (same shape), the threshold index maximising
    ``IoU(A_g, F(v, p, t))`` (A.3's argmax; ties -> the smallest threshold)."""
    T = pred_flat.shape[0]
    t = np.arange(T).reshape((T,) + (1,) * p.ndim)
    ious = table.lookup(t, pred_flat[t, p[None]], g[None])
    return np.argmax(ious, axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Normalized Covering (Eq. 6)


def _pred_and_eligible_masks(pred: np.ndarray, gt_masks: np.ndarray,
                             min_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked ``pred`` int [T,H,W] and the GT masks of at least ``min_size`` pixels (None when there are none)."""
    pred = _as_pred(pred)
    masks = _as_masks(gt_masks, (pred.shape[1], pred.shape[2]))
    keep = _eligible(masks, min_size)
    return pred, (masks[keep] if keep.any() else None)


def normalized_covering(pred: np.ndarray, gt_masks: np.ndarray, min_size: int = 20) -> float:
    """Normalized Covering, Eq. 6: ``NC = 1/|S| sum_{A in S} max_{A'} |A n A'| / |A u A'|``.

    ``S`` = GT masks with at least ``min_size`` pixels; ``A'`` ranges over the predicted segments of every
    threshold (the best granularity is picked per GT mask). ``nan`` when no mask qualifies.

    Shape: ``pred`` int [T, H, W], ``gt_masks`` bool [G, H, W].

    >>> pred = np.array([[[0, 0, 1, 1]]])
    >>> normalized_covering(pred, np.array([[[True, True, True, False]]]), min_size=1)
    0.6666666666666666
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    return float(iou_table(pred, masks).best_per_mask().mean())


def normalized_covering_sampled(pred: np.ndarray, gt_masks: np.ndarray, rng: np.random.Generator,
                                samples: int = 100, min_size: int = 20) -> float:
    """The released code's point-sampled NC: per GT mask sample ``samples`` pixels; at each threshold the
    predicted segment containing the pixel is a candidate; the mask scores its best candidate IoU.

    Never above :func:`normalized_covering`; equal when every segment of interest gets sampled.
    Shape: ``pred`` int [T, H, W], ``gt_masks`` bool [G, H, W].
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    T, h, w = pred.shape
    flat = pred.reshape(T, h * w)
    table = iou_table(pred, masks)
    p = _sample_in_masks(masks.reshape(len(masks), -1), rng, samples)  # [G, S]
    g = np.arange(len(masks))[:, None]
    t = np.arange(T)[:, None, None]
    ious = table.lookup(t, flat[t, p[None]], g[None])  # [T, G, S]
    return float(ious.max(axis=(0, 2)).mean())


def normalized_covering_levels(pred: np.ndarray, gt_by_level: Mapping[str, np.ndarray],
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


def segmentation_injectivity(pred: np.ndarray, gt_masks: np.ndarray, rng: np.random.Generator,
                             samples: int = 100, min_size: int = 20) -> float:
    """Segmentation Injectivity (A.3): ``SI = 1/(N|S|) sum_A sum_i IoU(F(v,p1,t), F(v,p2,t))``.

    For each GT mask ``A`` and sample ``i``: ``p1`` uniform in ``A``; ``t = argmax_t IoU(A, F(v,p1,t))``;
    ``p2`` uniform in the best-matching predicted mask ``F(v,p1,t)`` (Sec. 5.1: "sample two random points from
    that mask"); score the IoU of the masks queried at ``p1`` and ``p2``. A sample whose ``p1`` is unassigned
    scores 0. For label maps (a partition per threshold) every assigned sample scores 1, which is why a
    hierarchical segmentation scores 100 by construction.

    Shape: ``pred`` int [T, H, W], ``gt_masks`` bool [G, H, W].
    """
    pred, masks = _pred_and_eligible_masks(pred, gt_masks, min_size)
    if masks is None:
        return float("nan")
    T, h, w = pred.shape
    P = h * w
    flat = pred.reshape(T, P)
    table = iou_table(pred, masks)
    p1 = _sample_in_masks(masks.reshape(len(masks), -1), rng, samples)  # [G, S]
    g = np.broadcast_to(np.arange(len(masks))[:, None], p1.shape)
    t_best = _best_threshold(table, flat, g, p1)
    l1 = flat[t_best, p1]
    assigned = l1 >= 0
    if not assigned.any():
        return 0.0
    # p2 uniform inside segment (t_best, l1): members of every segment, grouped by segment id.
    tt, pp = np.nonzero(flat >= 0)
    members = pp[np.argsort(table.offsets[tt] + flat[tt, pp], kind="stable")]
    seg_start = np.concatenate([[0], np.cumsum(table.seg_size)[:-1]])
    sid = np.where(assigned, table.offsets[t_best] + np.maximum(l1, 0), 0)
    size = np.maximum(table.seg_size[sid], 1)
    pick = seg_start[sid] + np.minimum((rng.random(p1.shape) * size).astype(np.int64), size - 1)
    p2 = members[pick]
    l2 = flat[t_best, p2]
    # Two label-map segments are identical (IoU 1) or disjoint (IoU 0).
    score = assigned & (l2 == l1)
    return float(score.mean(axis=1).mean())


# ---------------------------------------------------------------------------------------------------------------
# View Consistency (A.3)


def view_consistency(pred_src: np.ndarray, pred_dst: np.ndarray, gt_masks_src: np.ndarray, depth_src: np.ndarray,
                     K_src: np.ndarray, c2w_src: np.ndarray, K_dst: np.ndarray, c2w_dst: np.ndarray,
                     visible_src: np.ndarray, rng: np.random.Generator, samples: int = 100,
                     min_size: int = 20) -> float:
    """View Consistency (A.3): ``VC = 1/(N|S|) sum_A sum_i |T(A1) n A2 n V| / |(T(A1) u A2) n V|``.

    For each GT mask ``A`` (source view) and sample ``i``: ``p1`` uniform in ``A n V``; ``t`` chosen as for SI
    (``argmax_t IoU(A, F(v,p1,t))``); ``A1 = F(v,p1,t)``; ``p2 = T(p1)`` warped with the ground-truth depth and
    poses; ``A2 = F(v',p2,t)`` at the same threshold (A.3's text). As in Sec. 5.1, ``A2`` is warped back into
    the source view (source pixel ``q`` belongs to it when ``T(q)`` lies in ``A2``) and the IoU is taken over
    ``V`` = pixels visible in both views (``visible_src``) whose warp lands inside the destination image.
    Unassigned ``p1`` or ``p2`` scores 0; masks with no pixel in ``V`` are skipped.

    Shape: ``pred_src`` int [T, H, W], ``pred_dst`` int [T, H', W'], ``gt_masks_src`` bool [G, H, W],
    ``depth_src`` [H, W] planar (0 = background), ``K_*`` 3x3, ``c2w_*`` 4x4, ``visible_src`` bool [H, W].
    """
    pred_src = _as_pred(pred_src)
    pred_dst = _as_pred(pred_dst)
    if pred_src.shape[0] != pred_dst.shape[0]:
        raise MetricInputError(f"pred_src and pred_dst need the same thresholds, got {pred_src.shape[0]} "
                               f"and {pred_dst.shape[0]}")
    T, h, w = pred_src.shape
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
    warp = warp_pixels(depth_src, K_src, c2w_src, K_dst, c2w_dst, (pred_dst.shape[1], pred_dst.shape[2]))
    V = visible.reshape(-1) & (warp >= 0)
    masks_v = masks.reshape(len(masks), P) & V[None]
    has = masks_v.any(axis=1)
    if not has.any():
        return float("nan")
    masks, masks_v = masks[has], masks_v[has]
    src_flat = pred_src.reshape(T, P)
    dst_flat = pred_dst.reshape(T, -1)
    table = iou_table(pred_src, masks)
    p1 = _sample_in_masks(masks_v, rng, samples)  # [G, S], all in V
    g = np.broadcast_to(np.arange(len(masks))[:, None], p1.shape)
    t_best = _best_threshold(table, src_flat, g, p1)
    l1 = src_flat[t_best, p1]
    l2 = dst_flat[t_best, warp[p1]]
    # Over V: a = source label, b = destination label pulled back through the warp, per threshold.
    vidx = np.flatnonzero(V)
    a = src_flat[:, vidx] + 1  # [T, nV], 0 = unassigned
    b = dst_flat[:, warp[vidx]] + 1
    na, nb = int(a.max(initial=0)) + 1, int(b.max(initial=0)) + 1
    t_col = np.arange(T, dtype=np.int64)[:, None]
    inter = _count_keys((t_col * na + a) * nb + b, (t_best * na + l1 + 1) * nb + l2 + 1, T * na * nb)
    n1 = _count_keys(t_col * na + a, t_best * na + l1 + 1, T * na)
    n2 = _count_keys(t_col * nb + b, t_best * nb + l2 + 1, T * nb)
    union = n1 + n2 - inter
    ok = (l1 >= 0) & (l2 >= 0) & (union > 0)
    score = np.where(ok, inter / np.maximum(union, 1), 0.0)
    return float(score.mean(axis=1).mean())


def _count_keys(keys: np.ndarray, query: np.ndarray, key_range: int) -> np.ndarray:
    """How often each ``query`` value occurs in ``keys`` (non-negative ints below ``key_range``): a bincount
    when the range is small, a sorted unique table otherwise."""
    keys = keys.ravel()
    if key_range <= max(4 * keys.size, 1 << 20):
        return np.bincount(keys, minlength=key_range)[query]
    uniq, counts = np.unique(keys, return_counts=True)
    pos = np.minimum(np.searchsorted(uniq, query), uniq.size - 1)
    return np.where(uniq[pos] == query, counts[pos], 0)


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
