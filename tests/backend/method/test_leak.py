"""The paper protocol end to end never reads ground truth: masks, training, 3D segmentation and the predictions
the evaluation scores are bit-identical when the folder's depth, alpha and ids are garbage (train and val).

Real parts: a rendered Blender-HS folder, the classical mask source, real torch steps in nerf geometry, the real
fusion and tree. The check can fail: a run that declares depth supervision does change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.method.config import PipelineConfig
from backend.method.data import load_scene
from backend.method.evaluation import EvalConfig
from backend.method.inputs import ground_truth_read
from backend.method.masks.base import make_masks
from backend.method.pipeline import input_mask_scene, predict_views, segment_field, train_run

TINY_NERF = {"geometry": "nerf", "rays_per_step": 256, "num_samples": 16, "occupancy_resolution": 16,
             "occupancy_warmup": 4, "occupancy_every": 4, "checkpoint_every": 0, "render_chunk": 1024,
             "n_pos": 16, "n_neg": 16, "max_stencils": 16, "depth_continuity_start": 4}


def garble(src: Path, dst: Path, seed: int) -> Path:
    """A copy of ``src`` whose ground truth (depth maps, alpha channels, id maps) is random; colour and poses
    are untouched."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for f in (dst / "depth").rglob("*.npy"):
        d = np.load(f)
        np.save(f, rng.uniform(0.5, 5.0, d.shape).astype(d.dtype))
    for split in ("train", "val"):
        for f in (dst / split).glob("*.png"):
            with Image.open(f) as im:
                rgba = np.asarray(im.convert("RGBA")).copy()
            rgba[..., 3] = rng.integers(0, 256, rgba.shape[:2])
            Image.fromarray(rgba, "RGBA").save(f)
    for f in (dst / "gt_seg").rglob("*_ids.png"):
        with Image.open(f) as im:
            ids = np.asarray(im)
        Image.fromarray(rng.integers(0, int(ids.max()) + 1, ids.shape).astype(ids.dtype)).save(f)
    return dst


def predictions(data: Path, run: Path, cfg: PipelineConfig) -> dict[str, list[np.ndarray]]:
    torch.manual_seed(0)
    trainer, scene, masks = train_run(data, run, cfg)
    seg = segment_field(trainer, scene, cfg)
    val = load_scene(data, "val")
    ec = EvalConfig(sweep=4, max_threshold=0.1)
    views = predict_views(trainer, seg, [val], "paper", ec, cfg)
    val_masks = make_masks(input_mask_scene(val, cfg, "paper"), cfg.masks, data_dir=data, split="val")
    return {"train masks": list(masks), "field": [p.detach().cpu().numpy() for p in trainer.field.parameters()],
            "cloud": [seg.cloud.points, seg.labels([0.01, 0.05])], "val masks": list(val_masks),
            "views": [p.labels for k, per in views.items() if k != "depth" for vs in per for p in vs]
            + [d for vs in views["depth"] for d in vs]}


def same(a: dict, b: dict) -> list[str]:
    return [k for k in a if len(a[k]) != len(b[k]) or not all(np.array_equal(x, y) for x, y in zip(a[k], b[k]))]


@pytest.mark.slow
def test_paper_protocol_pipeline_reads_no_ground_truth(tiny_dataset, tmp_path):
    cfg = PipelineConfig(preset="cpu", iterations=80, max_points=2000, train_overrides=TINY_NERF)
    assert ground_truth_read(cfg, "nerf") == {"masks": [], "training": []}
    honest = predictions(tiny_dataset, tmp_path / "run_a", cfg)
    garbled_data = garble(tiny_dataset, tmp_path / "garbled", seed=3)
    fooled = predictions(garbled_data, tmp_path / "run_b", cfg)
    assert same(honest, fooled) == [], "ground truth reached a prediction"
    # the check can fail: depth supervision (declared) reads the garbage depth and changes the field
    supervised = PipelineConfig(preset="cpu", iterations=5, train_overrides=TINY_NERF | {"depth_weight": 1.0})
    assert ground_truth_read(supervised, "nerf")["training"], "depth supervision is declared"
    fields = []
    for data, run in ((tiny_dataset, "run_c"), (garbled_data, "run_d")):
        torch.manual_seed(0)
        trainer, _, _ = train_run(data, tmp_path / run, supervised)
        fields.append([p.detach().cpu().numpy() for p in trainer.field.parameters()])
    assert not all(np.array_equal(x, y) for x, y in zip(*fields))
