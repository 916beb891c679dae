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
    assert MaskConfig(source="classical").ground_truth_read() == []
    with_alpha = MaskConfig(source="classical", classical=ClassicalConfig(use_alpha=True, use_depth=True))
    assert with_alpha.ground_truth_read() == ["alpha foreground", "rendered depth"]
    assert MaskConfig(source="sam").ground_truth_read() == []
