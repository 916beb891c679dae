"""The evaluation protocols: in ``paper`` no ground truth reaches a prediction; ``exact-geometry`` is labelled
as such; mask sources say what ground truth they read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backend.method.config import PipelineConfig
from backend.method.evaluation import EvalConfig, ProtocolChoiceError, resolve_protocol, strip_ground_truth
from backend.method.masks.base import MaskConfig
from backend.method.masks.classical import ClassicalConfig
from backend.method.pipeline import predict_views, segment_field
from backend.method.trainer import Trainer
from tests.backend.method.test_train import tiny_config, two_box_scene


@pytest.fixture(scope="module")
def nerf_run():
    scene, masks = two_box_scene(n_views=4, size=24)
    trainer = Trainer(scene, masks, tiny_config(geometry="nerf", iterations=80, depth_weight=1.0, rays_per_step=512))
    trainer.fit()
    cfg = PipelineConfig(preset="cpu", max_points=3000)
    return trainer, scene, cfg, segment_field(trainer, scene, cfg)


def _garbage(scene, seed: int):
    rng = np.random.default_rng(seed)
    return dataclasses.replace(scene, depth=rng.uniform(0.1, 3.0, scene.depth.shape).astype(np.float32),
                               alpha=rng.integers(0, 256, scene.alpha.shape).astype(np.uint8))


def _all_labels(pred: dict) -> list[np.ndarray]:
    return [p.labels for k, per_scene in pred.items() if k != "depth" for views in per_scene for p in views]


def test_paper_protocol_predictions_never_read_ground_truth(nerf_run):
    trainer, _, cfg, seg = nerf_run
    val, _ = two_box_scene(n_views=2, size=24, seed_angle=1.1)
    turned, _ = two_box_scene(n_views=2, size=24, seed_angle=1.3)
    ec = EvalConfig(sweep=6, max_threshold=0.1)
    honest = predict_views(trainer, seg, [val, turned], "paper", ec, cfg)
    fooled = predict_views(trainer, seg, [_garbage(val, 1), _garbage(turned, 2)], "paper", ec, cfg)
    a, b = _all_labels(honest), _all_labels(fooled)
    assert len(a) == len(b) == 4 * 2 * 2
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "ground-truth depth or alpha changed a prediction"
    # the check can fail: the exact-geometry protocol does read the views' depth
    exact = predict_views(trainer, seg, [val, turned], "exact-geometry", ec, cfg)
    garbled = predict_views(trainer, seg, [_garbage(val, 1), _garbage(turned, 2)], "exact-geometry", ec, cfg)
    assert not all(np.array_equal(x, y) for x, y in zip(_all_labels(exact), _all_labels(garbled)))


def test_strip_ground_truth_keeps_only_posed_colour():
    scene, masks = two_box_scene(n_views=2, size=16)
    bare = strip_ground_truth(dataclasses.replace(scene, masks=masks))
    assert bare.depth is None and bare.alpha is None and bare.masks is None
    assert np.array_equal(bare.rgb, scene.rgb) and np.array_equal(bare.c2w, scene.c2w)


def test_protocol_follows_the_geometry_and_refuses_the_impossible():
    assert resolve_protocol("auto", "nerf") == "paper"
    assert resolve_protocol("auto", "depth") == "exact-geometry"
    assert resolve_protocol("exact-geometry", "nerf") == "exact-geometry"
    with pytest.raises(ProtocolChoiceError, match="exact-geometry"):
        resolve_protocol("paper", "depth")


def test_eval_thresholds_are_the_released_euclidean_cuts():
    ec = EvalConfig()
    assert len(ec.thresholds()) == 50 and ec.thresholds()[0] == 0.01 and ec.thresholds()[-1] == 0.5
    # on unit vectors, |a - b| = t  <=>  1 - cos = t^2 / 2
    a = np.array([1.0, 0.0])
    b = np.array([np.cos(0.3), np.sin(0.3)])
    assert np.linalg.norm(a - b) ** 2 / 2 == pytest.approx(1 - a @ b)
    assert ec.tree_thresholds()[-1] == pytest.approx(0.125)


def test_mask_sources_say_which_ground_truth_they_read():
    assert MaskConfig(source="noisy-gt").ground_truth_read()
    assert MaskConfig(source="classical-colour").ground_truth_read("depth") == []
    assert MaskConfig(source="classical").ground_truth_read("depth"), "the default reads the exact depth it is given"
    auto = MaskConfig(source="classical", classical=ClassicalConfig(use_depth=None))
    assert auto.ground_truth_read("nerf") == [] and auto.ground_truth_read("depth"), "exact geometry: depth read"
    with_alpha = MaskConfig(source="classical", classical=ClassicalConfig(use_alpha=True, use_depth=True))
    assert with_alpha.ground_truth_read() == ["alpha foreground", "rendered depth (jumps and normal creases)"]
    assert MaskConfig(source="sam").ground_truth_read() == []


def _synthetic_view():
    """One 40x40 view: three objects in two collections on a background without depth."""
    from backend.core.scene import Scene
    from backend.method.data import GroundTruth

    ids = np.zeros((40, 40), np.uint16)
    ids[5:20, 5:20], ids[5:20, 22:35], ids[24:36, 5:35] = 1, 2, 3
    gt = GroundTruth(ids=ids[None], levels={"object": {1: 1, 2: 2, 3: 3}, "collection": {1: 10, 2: 10, 3: 11},
                                            "scene": {1: 100, 2: 100, 3: 100}}, hierarchy={})
    depth = np.where(ids > 0, 2.0, 0.0).astype(np.float32)[None]
    K = np.array([[[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]], np.float32)
    scene = Scene(rgb=np.zeros((1, 40, 40, 3), np.uint8), c2w=np.eye(4, dtype=np.float32)[None], K=K, depth=depth,
                  names=["r_0.png"])
    return ids, gt, scene


def test_silhouette_alone_no_longer_scores_and_every_row_gets_the_same_region(tmp_path):
    from backend.core.metrics import Prediction, query_masks
    from backend.method.evaluation import ViewPredictions, score, with_no_surface_region

    ids, gt, scene = _synthetic_view()
    ec = EvalConfig(rotations=(), samples=50, min_size=5)
    silhouette = ViewPredictions(val=[Prediction((ids > 0).astype(np.int64)[None])])
    coll = np.array([0, 10, 10, 11])[ids]
    perfect = ViewPredictions(val=[Prediction(np.stack([ids, coll, ids > 0]).astype(np.int64))])  # 3 cuts
    s = score(with_no_surface_region(silhouette, scene, {}), scene, gt, {}, tmp_path, ec).row
    p = score(with_no_surface_region(perfect, scene, {}), scene, gt, {}, tmp_path, ec).row
    assert s["NC_scene"] == pytest.approx(1.0) and p["NC_scene"] == pytest.approx(1.0)
    assert p["NC_mean"] == pytest.approx(1.0) and s["NC_mean"] < 0.6, "the scene level is not in NC_mean"
    assert s["NC_mean_with_scene"] > s["NC_mean"]
    # input masks that never cover the background get the same no-surface region as the 3D rows
    masks = np.stack([ids == 1, ids == 2, ids == 3, ids > 0])
    raw = ViewPredictions(val=[query_masks(masks, 4)])
    given = with_no_surface_region(raw, scene, {})
    assert given.val[0].regions is not None and given.val[0].regions[-1].sum() == (ids == 0).sum()
    r = score(given, scene, gt, {}, tmp_path, ec).row
    assert r["NC_scene"] == pytest.approx(1.0) and r["NC_obj"] == pytest.approx(1.0)


def test_ours_2d_unassigned_pixels_are_one_region():
    from backend.core.metrics import normalized_covering, unassigned_as_region

    ids, _, _ = _synthetic_view()
    pred = np.where(ids == 3, -1, ids.astype(np.int64))[None]  # object 3 left out of the kept segments
    assert normalized_covering(pred, (ids == 3)[None], 5) == 0.0
    assert normalized_covering(unassigned_as_region(pred), (ids == 3)[None], 5) > 0.0
