"""Tests for backend/metrics.py: NC (Eq. 6), sampled NC, SI, VC (A.3), depth error, Table 1 formatting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core import metrics
from backend.core.metrics import MetricInputError


def reference_nc(pred, masks, min_size):
    """Eq. 6 with explicit loops over masks, thresholds and segments."""
    scores = []
    for m in masks:
        if m.sum() < min_size:
            continue
        best = 0.0
        for lab in pred:
            for s in np.unique(lab[lab >= 0]):
                seg = lab == s
                best = max(best, (seg & m).sum() / (seg | m).sum())
        scores.append(best)
    return float(np.mean(scores)) if scores else float("nan")


def stripes(h, w, width, t=1):
    """Vertical stripes of ``width`` columns as labels, repeated over ``t`` thresholds."""
    lab = np.broadcast_to(np.arange(w)[None, :] // width, (h, w))
    return np.broadcast_to(lab, (t, h, w)).astype(np.int64).copy()


# --- Normalized Covering ----------------------------------------------------------------------------------------


def test_nc_hand_computed():
    masks = np.array([[[1, 1, 1, 1, 0, 0, 0, 0]], [[0, 0, 0, 0, 1, 1, 1, 1]]], bool)
    pred = np.array([[[0, 0, 1, 1, 1, 2, 2, 2]], [[0, 0, 0, 0, 0, 0, -1, -1]]])
    # A: best 4/6 (t1, seg 0); B: best 3/4 (t0, seg 2)
    assert metrics.normalized_covering(pred, masks, min_size=1) == pytest.approx((4 / 6 + 3 / 4) / 2)
    # only the first threshold: A 2/4 (seg 0), B 3/4
    assert metrics.normalized_covering(pred[:1], masks, min_size=1) == pytest.approx((0.5 + 0.75) / 2)
    # min_size drops both 4-pixel masks
    assert np.isnan(metrics.normalized_covering(pred, masks, min_size=5))


def test_nc_perfect_prediction_per_level():
    rng = np.random.default_rng(0)
    obj = rng.integers(0, 6, (20, 30))  # object ids, 0 = background
    coll = np.where(obj > 0, 1 + (obj > 3), 0)  # collections group objects
    scene = (obj > 0).astype(int)
    noise = rng.integers(0, 50, (20, 30))
    pred = np.stack([noise, obj, coll, scene])
    levels = {name: metrics.masks_from_label_image(ids) for name, ids in
              [("object", obj), ("collection", coll), ("scene", scene)]}
    out = metrics.normalized_covering_levels(pred, levels, min_size=20)
    assert out == pytest.approx({"object": 1.0, "collection": 1.0, "scene": 1.0, "mean": 1.0})
    # dropping the object-level map lowers only NC_obj
    worse = metrics.normalized_covering_levels(pred[[0, 2, 3]], levels, min_size=20)
    assert worse["object"] < 1.0 and worse["collection"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_nc_matches_reference(T, G, seed):
    rng = np.random.default_rng(seed)
    h, w = 6, 7
    pred = rng.integers(-1, 5, (T, h, w))
    masks = rng.random((G, h, w)) < rng.random((G, 1, 1))
    got = metrics.normalized_covering(pred, masks, min_size=3)
    want = reference_nc(pred, masks, 3)
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(want)


def test_sampled_nc_bounded_by_nc_and_exact_when_segments_are_large():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 30, (3, 24, 24))
    ids = rng.integers(0, 4, (24, 24))
    masks = metrics.masks_from_label_image(ids)
    sampled = metrics.normalized_covering_sampled(pred, masks, rng, samples=10)
    assert sampled <= metrics.normalized_covering(pred, masks) + 1e-12
    perfect = np.stack([pred[0], ids])
    assert metrics.normalized_covering_sampled(perfect, masks, rng) == pytest.approx(1.0)
    # a pixel in a segment that is never sampled cannot count: one big mask, best segment a single pixel
    big = np.ones((1, 5, 5), bool)
    pred2 = np.zeros((1, 5, 5), np.int64)
    pred2[0, 0, 0] = -1
    assert metrics.normalized_covering_sampled(pred2, big, rng, samples=5, min_size=1) == pytest.approx(24 / 25)


def test_iou_table_lookup():
    pred = np.array([[[0, 0, 1, -1]], [[0, 0, 0, 0]]])
    masks = np.array([[[1, 1, 0, 0]]], bool)
    table = metrics.iou_table(pred, masks)
    assert table.lookup(np.array([0, 0, 0, 1]), np.array([0, 1, -1, 0]), np.zeros(4, int)).tolist() == \
        [1.0, 0.0, 0.0, 0.5]


# --- Segmentation Injectivity -----------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_si_is_low_for_random_labels(T, seed):
    """Appendix A.3's SI draws both points from the GT mask: random labels almost never put them together."""
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 6, (T, 10, 10))  # a partition per threshold (no unassigned pixel)
    masks = rng.random((3, 10, 10)) < 0.5
    masks[:, 0, 0] = True
    assert metrics.segmentation_injectivity(pred, masks, rng, samples=200, min_size=1) < 0.4
    exact = np.stack([np.where(masks[0], 0, 1)] * T)
    assert metrics.segmentation_injectivity(exact, masks[:1], rng, samples=200, min_size=1) == 1.0


def test_si_penalises_unassigned():
    rng = np.random.default_rng(2)
    masks = np.ones((1, 10, 10), bool)
    pred = np.zeros((1, 10, 10), np.int64)
    pred[0, :5] = -1  # half the mask has no predicted segment
    si = metrics.segmentation_injectivity(pred, masks, rng, samples=400)
    assert 0.15 < si < 0.35  # both points must land in the assigned half: about 1/4
    assert metrics.segmentation_injectivity(np.full((2, 10, 10), -1), masks, rng) == 0.0


# --- View Consistency -------------------------------------------------------------------------------------------


def camera(h=16, w=16, f=10.0, x=0.0):
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    c2w = np.eye(4)
    c2w[0, 3] = x
    return K, c2w


def test_vc_identical_views_is_one_and_shuffle_drops():
    rng = np.random.default_rng(3)
    K, c2w = camera()
    pred = np.stack([stripes(16, 16, 4)[0], stripes(16, 16, 8)[0]])
    masks = metrics.masks_from_label_image(stripes(16, 16, 4)[0] + 1)
    depth = np.full((16, 16), 2.0)
    vis = np.ones((16, 16), bool)
    vc = metrics.view_consistency(pred, pred, masks, depth, K, c2w, K, c2w, vis, rng)
    assert vc == pytest.approx(1.0)
    # sparse, large label ids take the sorted-table counting path; the score must not change
    assert metrics.view_consistency(pred * 5000, pred * 7000, masks, depth, K, c2w, K, c2w, vis, rng) == \
        pytest.approx(1.0)
    shuffled = pred.reshape(2, -1)[:, rng.permutation(256)].reshape(2, 16, 16)
    vc_bad = metrics.view_consistency(pred, shuffled, masks, depth, K, c2w, K, c2w, vis, rng)
    assert vc_bad < 0.5


def test_vc_follows_the_camera_shift():
    """Camera moved +0.4 along x at depth 2, f = 10: content shifts 2 pixels left in the destination."""
    rng = np.random.default_rng(4)
    K, c2w = camera()
    _, c2w_dst = camera(x=0.4)
    lab = stripes(16, 16, 4)
    dst = np.full_like(lab, -1)
    dst[:, :, :-2] = lab[:, :, 2:]  # what the moved camera sees
    masks = metrics.masks_from_label_image(lab[0] + 1)
    depth = np.full((16, 16), 2.0)
    vis = np.ones((16, 16), bool)
    vis[:, :2] = False  # leftmost source columns leave the destination image
    assert metrics.view_consistency(lab, dst, masks, depth, K, c2w, K, c2w_dst, vis, rng) == pytest.approx(1.0)
    # comparing against the unshifted labels (the wrong correspondence) is penalised
    assert metrics.view_consistency(lab, lab, masks, depth, K, c2w, K, c2w_dst, vis, rng) < 0.8


def test_vc_visibility_mask_restricts_iou():
    rng = np.random.default_rng(5)
    K, c2w = camera()
    src = np.zeros((1, 16, 16), np.int64)
    dst = src.copy()
    dst[0, :, 8:] = 1  # destination splits the segment in two
    masks = np.ones((1, 16, 16), bool)
    depth = np.full((16, 16), 2.0)
    vis_left = np.zeros((16, 16), bool)
    vis_left[:, :8] = True  # only the left half is visible in both views: no disagreement there
    assert metrics.view_consistency(src, dst, masks, depth, K, c2w, K, c2w, vis_left, rng) == pytest.approx(1.0)
    vc_all = metrics.view_consistency(src, dst, masks, depth, K, c2w, K, c2w, np.ones((16, 16), bool), rng)
    assert vc_all == pytest.approx(0.5)


# --- depth error, table, input errors ---------------------------------------------------------------------------


def test_depth_error():
    pred = np.array([[1.0, 2.0], [3.0, np.nan]])
    gt = np.array([[1.5, 2.0], [2.0, 1.0]])
    assert metrics.depth_error(pred, gt) == pytest.approx(0.5)
    assert metrics.depth_error(pred, gt, kind="rmse") == pytest.approx(np.sqrt((0.25 + 1.0) / 3))
    assert metrics.depth_error(pred, gt, valid=np.array([[True, False], [False, False]])) == pytest.approx(0.5)
    assert np.isnan(metrics.depth_error(pred, np.zeros((2, 2))))
    with pytest.raises(MetricInputError):
        metrics.depth_error(pred, gt, kind="l3")


def test_format_table_like_table1():
    rows = {"Ours, 3D": {"NC_obj": 0.48, "NC_coll": 0.677, "NC_scene": 0.971, "NC_mean": 0.709, "SI": 1.0,
                         "VC": 0.789},
            "SAM3D": {"NC_obj": 0.46, "NC_coll": 0.593, "NC_scene": 0.532, "NC_mean": 0.528, "SI": float("nan"),
                      "VC": 0.724}}
    assert metrics.format_table(rows).splitlines() == [
        "| method | NC_obj | NC_coll | NC_scene | NC_mean | SI | VC |",
        "|---|---|---|---|---|---|---|",
        "| Ours, 3D | 48.0 | 67.7 | 97.1 | 70.9 | 100.0 | 78.9 |",
        "| SAM3D | 46.0 | 59.3 | 53.2 | 52.8 | - | 72.4 |",
    ]


def test_bad_inputs_raise():
    pred = np.zeros((2, 4, 4), np.int64)
    with pytest.raises(MetricInputError):
        metrics.normalized_covering(pred.astype(float), np.ones((1, 4, 4), bool))
    with pytest.raises(MetricInputError):
        metrics.normalized_covering(pred, np.ones((1, 4, 5), bool))
    with pytest.raises(MetricInputError):
        metrics.normalized_covering(pred, np.ones((1, 4, 4), np.uint8))
    K, c2w = camera(4, 4)
    with pytest.raises(MetricInputError):
        metrics.view_consistency(pred, pred[:1], np.ones((1, 4, 4), bool), np.ones((4, 4)), K, c2w, K, c2w,
                                 np.ones((4, 4), bool), np.random.default_rng(0))


# --- The evaluation issue's checks: metrics that can tell a bad prediction from a good one -----------------------


def _objects(h: int = 24, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Two GT objects side by side (plus background) and their exact partition."""
    masks = np.zeros((2, h, w), bool)
    masks[0, 4:20, 2:11] = True
    masks[1, 4:20, 13:22] = True
    exact = np.zeros((h, w), np.int64)
    exact[masks[0]] = 1
    exact[masks[1]] = 2
    return masks, exact


def test_fragmenting_each_object_into_four_lowers_si_and_sampled_nc():
    masks, exact = _objects()
    quarters = exact * 4 + (np.arange(24)[:, None] // 6) % 4  # every object cut into 4 horizontal bands
    quarters[exact == 0] = 0
    rng = np.random.default_rng(0)
    good_si = metrics.segmentation_injectivity(exact[None], masks, rng, samples=200)
    bad_si = metrics.segmentation_injectivity(quarters[None], masks, rng, samples=200)
    good_nc = metrics.normalized_covering_sampled(exact[None], masks, rng, samples=200)
    bad_nc = metrics.normalized_covering_sampled(quarters[None], masks, rng, samples=200)
    assert good_si == 1.0 and good_nc == 1.0
    assert bad_si < 0.4 and bad_nc < 0.4  # a quarter-sized piece: IoU 1/4, two points together 1/4 of the time
    random = np.random.default_rng(1).integers(0, 40, (3, 24, 24))
    assert metrics.segmentation_injectivity(random, masks, rng, samples=200) < 0.2


def test_sampled_nc_is_the_mean_over_points_of_the_best_iou():
    """The released definition on a hand-made case: a 12-pixel mask predicted as pieces of 6, 4 and 2 pixels
    scores (6 * 6/12 + 4 * 4/12 + 2 * 2/12) / 12 on average (each point scores its own piece), not the max 0.5."""
    gt = np.ones((1, 1, 12), bool)
    pred = np.array([[[0] * 6 + [1] * 4 + [2] * 2]])
    want = (6 * 6 / 12 + 4 * 4 / 12 + 2 * 2 / 12) / 12
    got = metrics.normalized_covering_sampled(pred, gt, np.random.default_rng(0), samples=20000, min_size=1)
    assert got == pytest.approx(want, abs=0.01)
    assert metrics.normalized_covering(pred, gt, min_size=1) == pytest.approx(0.5)  # dense Eq. 6: the best piece
    # a coarser granularity that covers the mask makes every point score 1
    both = np.concatenate([pred, np.zeros((1, 1, 12), np.int64)])
    assert metrics.normalized_covering_sampled(both, gt, np.random.default_rng(0), min_size=1) == 1.0


def test_overlapping_masks_are_queried_not_partitioned():
    """A SAM user's masks: the mask nearest the granularity's size around a point, each mask kept whole."""
    masks, _ = _objects()
    whole = masks[0] | masks[1]
    sam = np.stack([masks[0], masks[1], whole])
    pred = metrics.query_masks(sam, num_levels=10)
    rng = np.random.default_rng(0)
    assert metrics.normalized_covering_sampled(pred, masks, rng, samples=100) == 1.0
    assert metrics.segmentation_injectivity(pred, masks, rng, samples=100) == 1.0
    # masks that each cover half an object: two points of one object agree only half the time
    halves = np.zeros((4, 24, 24), bool)
    halves[0, 4:12, 2:11] = halves[1, 12:20, 2:11] = halves[2, 4:12, 13:22] = halves[3, 12:20, 13:22] = True
    si = metrics.segmentation_injectivity(metrics.query_masks(halves, 10), masks, rng, samples=400)
    assert 0.35 < si < 0.65
    with pytest.raises(metrics.MetricInputError):
        metrics.Prediction(np.zeros((1, 24, 24), np.int64), np.zeros((1, 5, 5), bool))


def test_nc_curve_per_granularity():
    masks, exact = _objects()
    fine = np.arange(24 * 24).reshape(24, 24)  # every pixel alone
    curve = metrics.normalized_covering_curve(np.stack([fine, exact]), masks)
    assert curve[0] < 0.05 and curve[1] == 1.0
