"""Metrics of what the user receives (the exported cuts, scored on the cloud): each can fail."""

from __future__ import annotations

import numpy as np
import pytest

from backend.core.export_metrics import ExportMetricError, point_leaf_ids, score_exported
from backend.core.geometry import unproject_depth

K = np.array([[20.0, 0, 10], [0, 20.0, 10], [0, 0, 1]])


def _objects(sizes=(400, 300, 200, 100)) -> np.ndarray:
    return np.repeat(np.arange(1, len(sizes) + 1), sizes)


def test_one_segment_recalls_nothing_and_the_truth_recalls_everything():
    obj = _objects()
    levels = {"object": obj, "collection": np.where(obj <= 2, 10, 20)}
    one = score_exported(np.zeros((1, len(obj)), int), [0.1], levels, 0)
    assert one.recall_any == 0.0 and one.cuts[0].largest_share == 1.0 and one.cuts[0].segments == 1
    perfect = score_exported(obj[None] - 1, [0.1], levels, 0)
    assert perfect.recall_any == 1.0 and perfect.nc_best["object"] == 1.0
    assert perfect.cuts[0].largest_share == pytest.approx(0.4)


def test_fragments_and_the_best_cut():
    obj = _objects()
    levels = {"object": obj}
    fragments = np.arange(len(obj)) // 25  # every object cut into pieces of 25 points
    cuts = np.stack([fragments, obj - 1, np.zeros_like(obj)])
    rep = score_exported(cuts, [0.01, 0.05, 0.2], levels, 1)
    assert rep.cuts[0].object_recall == 0.0 and rep.cuts[0].nc_points["object"] < 0.3
    assert rep.cuts[1].object_recall == 1.0 and rep.cuts[2].object_recall == 0.0
    assert rep.recall_any == 1.0 and rep.nc_best["object"] == 1.0  # the best exported cut is the middle one
    # an object under 0.5 % of the points is not counted
    tiny = score_exported(np.zeros((1, 1000), int), [0.1], {"object": np.r_[np.ones(998), 2, 2].astype(int)}, 0)
    assert tiny.objects == 1 and tiny.recall_any == 1.0
    with pytest.raises(ExportMetricError):
        score_exported(cuts, [0.1], levels, 0)


def test_points_take_the_leaf_they_lie_on():
    depth = np.full((1, 20, 20), 2.0)
    ids = np.zeros((1, 20, 20), np.int64)
    ids[0, :, :10], ids[0, :, 10:] = 3, 4
    depth[0, :5] = 0.0  # no surface in the top rows
    c2w = np.eye(4)
    surface = unproject_depth(depth[0], K, c2w)
    pts = np.concatenate([surface[8:, 2], surface[8:, 15], [[0.0, 0.0, -6.0]]])  # left, right, a floater
    leaf = point_leaf_ids(pts, depth, ids, K[None], c2w[None])
    assert (leaf[:12] == 3).all() and (leaf[12:24] == 4).all() and leaf[-1] == 0
    # votes over views: a second view that disagrees on one side does not flip a 2-of-3 majority
    leaf3 = point_leaf_ids(pts, np.repeat(depth, 3, 0), np.stack([ids, ids, 7 - ids]).reshape(3, 20, 20),
                           np.repeat(K[None], 3, 0), np.repeat(c2w[None], 3, 0))
    assert (leaf3[:12] == 3).all()
