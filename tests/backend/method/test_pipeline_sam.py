"""The ``sam`` mask source end to end: tiny random SAM checkpoint -> masks -> training -> 3D segmentation.

Uses the real segment-anything automatic generator on a seeded, randomly initialised ``tiny`` SAM
(:func:`backend.method.masks.sam.build_tiny_sam`) and the rendered ``tiny_dataset`` (8 views, 48 px). Random
weights predict low IoU / stability scores, so the generator's two filters are switched off (0) to let its
masks through; everything else is the real pipeline.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from backend.method.masks.base import MaskConfig
from backend.method.masks.sam import SamConfig, build_tiny_sam
from backend.method.config import PipelineConfig
from backend.method.pipeline import read_run_info, segment_run, train_run
from backend.wire.result_files import label_property, read_ply

THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4]


def assert_nested(labels: np.ndarray) -> None:
    """Rows of ``labels`` [T, ...] (thresholds ascending): every segment at row i lies inside one of row i+1."""
    flat = labels.reshape(labels.shape[0], -1)
    for fine, coarse in zip(flat[:-1], flat[1:]):
        ok = fine >= 0
        pairs = np.unique(np.stack([fine[ok], coarse[ok]], 1), axis=0)
        assert len(pairs) == len(np.unique(fine[ok])), "a fine segment is split at a coarser threshold"


@pytest.fixture(scope="module")
def sam_run(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sam_pipeline")
    ckpt = build_tiny_sam(0, tmp / "tiny_sam.pth")
    sam = SamConfig(checkpoint=ckpt, arch="tiny", device="cpu", points_per_side=6, points_per_batch=36,
                    pred_iou_thresh=0.0, stability_score_thresh=0.0, foreground_only=True)  # reads alpha, declared
    cfg = PipelineConfig(preset="cpu", iterations=20, geometry="depth", masks=MaskConfig(source="sam", sam=sam))
    run = tmp / "run"
    trainer, scene, masks = train_run(tiny_dataset, run, cfg)
    out = segment_run(run, thresholds=THRESHOLDS, views=2)
    return run, trainer, scene, masks, out


def test_sam_masks_feed_training(sam_run):
    run, trainer, scene, masks, _ = sam_run
    assert len(masks) == scene.num_views == 8
    assert all(m.dtype == np.bool_ and m.ndim == 3 and m.shape[1:] == (48, 48) for m in masks)
    assert sum(len(m) for m in masks) > 0, "the tiny SAM produced no masks at all"
    assert all(len(m) > 0 for m in masks)
    fg = scene.alpha >= 128
    assert not any((m & ~fg[i][None]).any() for i, m in enumerate(masks)), "masks are clipped to the foreground"
    assert len(list((run / "masks").glob("sam-*.npz"))) == 1, "SAM masks are cached in the run folder"
    assert json.loads((run / "run.json").read_text())["ground_truth_read"]["masks"], "the alpha read is declared"
    _, recorded = read_run_info(run)
    assert recorded.masks.source == "sam" and recorded.masks.sam.points_per_side == 6
    assert trainer.step == 20 and (run / "checkpoint.pt").is_file()
    assert trainer.last_losses and all(math.isfinite(v) for v in trainer.last_losses.values())
    assert "ultrametric" in trainer.last_losses, "pairs were sampled from the SAM mask trees"


def test_sam_segmentation_outputs_are_well_formed(sam_run):
    _, _, scene, _, out = sam_run
    for name in ("points.ply", "result.npz", "hierarchy.json", "tree.npz"):
        assert (out / name).is_file(), name
    res = np.load(out / "result.npz", allow_pickle=False)
    pts, labels, thr = res["points"], res["labels"], res["thresholds"]
    n = len(pts)
    assert n > 50 and pts.dtype == np.float32 and np.isfinite(pts).all()
    np.testing.assert_allclose(thr, THRESHOLDS, rtol=1e-6)
    assert labels.shape == (len(THRESHOLDS), n)
    assert res["parents"].shape == (2 * n - 1,) and res["altitudes"].shape == (2 * n - 1,)
    assert_nested(labels)
    # the coarsest threshold has no more segments than the finest
    count = [len(np.unique(l[l >= 0])) for l in labels]
    assert count[-1] <= count[0] and count[0] >= 1

    xyz, props = read_ply(out / "points.ply")
    np.testing.assert_array_equal(xyz, pts)
    for k, t in enumerate(THRESHOLDS):
        np.testing.assert_array_equal(props[label_property(t)], labels[k])
    assert {"red", "green", "blue"} <= set(props)
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(out / "points.ply"))
    assert len(pcd.points) == n, "a standard PLY reader agrees on the point count"

    hier = json.loads((out / "hierarchy.json").read_text())
    assert [lv["threshold"] for lv in hier["levels"]] == pytest.approx(THRESHOLDS)
    for lv, lab in zip(hier["levels"], labels):
        assert sum(s["size"] for s in lv["segments"]) == int((lab >= 0).sum())

    views = sorted((out / "views").glob("*_labels.npz"))
    assert len(views) == 2 and len(list((out / "views").glob("*_sheet.png"))) == 2
    for v in views:
        lab = np.load(v)["labels"]
        assert lab.shape == (len(THRESHOLDS), scene.height, scene.width)
        assert (lab >= 0).any(), "the view's foreground gets labels"
        for k in range(len(THRESHOLDS)):  # a view pixel takes the label of cloud points (k-NN vote)
            assert set(np.unique(lab[k])) <= set(np.unique(labels[k])) | {-1}
