"""The method end to end on a real rendered scene: masks -> training -> 3D segmentation -> evaluation.

Real parts only: the dataset is rendered with the dataset tools (Cycles, small), masks come from the
classical source, the field trains for a few hundred CPU steps, the tree and metrics are the real ones.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.method.evaluation import EvalConfig
from backend.method.job import run_job
from backend.method.config import PipelineConfig
from backend.method.pipeline import (RunError, evaluate_trained, load_trained, segment_run,
                              train_run)
from backend.wire.result_files import read_ply
from backend.wire.protocol import JobOptions, ResultArrays

from tests.backend.conftest import render_tiny


@pytest.fixture(scope="module")
def scene_64(tmp_path_factory):
    """12 train + 2 val views of the table set at 64x64."""
    return render_tiny(tmp_path_factory.mktemp("s64"), train=12, val=2, res=64)


@pytest.fixture(scope="module")
def trained(scene_64, tmp_path_factory):
    """A 300-step CPU run on SAM-like noisy ground-truth masks, with every progress event it emitted."""
    from backend.method.masks.base import MaskConfig

    run = tmp_path_factory.mktemp("run") / "run"
    events = []
    cfg = PipelineConfig(preset="cpu", iterations=300, masks=MaskConfig(source="noisy-gt"))
    train_run(scene_64, run, cfg, progress=events.append)
    return run, events


def test_training_loss_goes_down(trained):
    _, events = trained
    losses = [e.losses["total"] for e in events if e.stage == "training" and e.losses]
    assert len(losses) >= 20
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.9 * first, (first, last)
    stages = [e.stage for e in events]
    assert stages.index("masks") < stages.index("training")


@pytest.mark.slow
def test_3d_segmentation_beats_input_masks_and_is_consistent(trained, scene_64):
    run, _ = trained
    trainer, scene, _, data, cfg = load_trained(run)
    ev = evaluate_trained(trainer, scene, data, cfg, EvalConfig(rotations=(10.0,), samples=50))
    rows = ev.rows
    assert ev.protocol == "exact-geometry"  # a depth-geometry run: the only protocol it allows
    inp, ours = rows["input masks (2D)"], rows["ours-3D"]
    # Lifting SAM-like masks (missed parts, splits, merges, view-dependent granularity) to 3D recovers
    # objects the per-view masks only find in pieces, with labels that agree across viewpoints (the
    # paper's NC and VC claims, measured apart from the mask source as the issue asks).
    assert ours["NC_obj"] > inp["NC_obj"], rows
    assert ours["VC_10"] > inp["VC_10"], rows
    assert ours["SI"] >= inp["SI"] - 0.05, rows
    assert 0.3 < ours["NC_mean"] <= 1.0
    assert set(ev.curves) >= {"input masks (2D)", "ours-3D", "ours-3D (whole tree)"}


def test_fused_cloud_carries_unit_view_directions_towards_its_cameras(trained):
    """Every fused point carries the mean unit vector towards the cameras that saw it: it lies inside the cone of
    the directions to the training cameras (reversed, as a sign slip would make it, it would point away from all
    of them and every normal would be turned into the surface)."""
    from backend.method.pipeline import adapt_to_resolution, feature_cell, fused_cloud

    run, _ = trained
    trainer, scene, _, _, cfg = load_trained(run)
    cloud = fused_cloud(trainer, scene, adapt_to_resolution(cfg, scene, feature_cell(trainer)))
    assert cloud.view_dirs is not None and cloud.view_dirs.shape == cloud.points.shape
    assert np.allclose(np.linalg.norm(cloud.view_dirs, axis=1), 1.0, atol=1e-4)
    centres = np.asarray(trainer.scene.c2w)[:, :3, 3]
    to_cam = centres[None] - cloud.points[:, None].astype(np.float64)  # [N, V, 3]
    to_cam /= np.linalg.norm(to_cam, axis=2, keepdims=True)
    best = np.einsum("nd,nvd->nv", cloud.view_dirs, to_cam).max(axis=1)
    assert np.median(best) > 0.95 and (best > 0).all()


def test_segment_writes_nested_hierarchy_ply_and_views(trained, tmp_path):
    run, _ = trained
    out = segment_run(run, thresholds=[0.05, 0.1, 0.3], out=tmp_path / "seg")
    xyz, props = read_ply(out / "points.ply")
    assert len(xyz) > 500 and np.isfinite(xyz).all()
    with np.load(out / "result.npz") as z:
        labels, parents, alt = z[ResultArrays.LABELS], z[ResultArrays.PARENTS], z[ResultArrays.ALTITUDES]
        assert labels.shape == (3, len(xyz))
        assert parents.shape == (2 * len(xyz) - 1,) and (alt[len(xyz):] >= 0).all()
    for fine, coarse in zip(labels[:-1], labels[1:]):  # every fine segment inside one coarse segment
        ok = (fine >= 0) & (coarse >= 0)
        pairs = np.unique(np.stack([fine[ok], coarse[ok]], 1), axis=0)
        assert len(np.unique(pairs[:, 0])) == len(pairs)
    h = json.loads((out / "hierarchy.json").read_text())
    assert [lvl["threshold"] for lvl in h["levels"]] == [0.05, 0.1, 0.3]
    assert all(s["parent"] is not None for s in h["levels"][0]["segments"])
    assert any(p.name.endswith("_sheet.png") for p in (out / "views").iterdir())
    # The cloud is in world (Blender) units: inside the bounds recorded by the renderer.
    lo, hi = np.asarray(json.loads((load_trained(run)[3] / "meta.json").read_text())["scene_bounds"])
    inside = ((xyz >= lo - 0.05) & (xyz <= hi + 0.05)).all(1)
    assert inside.mean() > 0.99


def test_resume_continues_the_same_run(scene_64, tmp_path):
    run = tmp_path / "run"
    cfg = PipelineConfig(preset="cpu", iterations=40)
    steps = []

    def stop_at_15() -> bool:
        return bool(steps) and steps[-1] >= 15

    def record(e):
        if e.stage == "training":
            steps.append(e.step)

    train_run(scene_64, run, cfg, progress=record, should_stop=stop_at_15)
    assert 15 <= max(steps) < 40
    stopped_at = max(steps)
    resumed = []
    trainer, _, _ = train_run(scene_64, run, cfg, progress=lambda e: e.stage == "training" and resumed.append(e.step))
    assert trainer.step == 40
    assert min(resumed) > stopped_at  # continued, not restarted
    assert len(list((run / "masks").iterdir())) == 1  # masks computed once, then read from the cache


def test_run_folder_of_another_dataset_is_refused(scene_64, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train_run(scene_64, run, PipelineConfig(preset="cpu", iterations=2))
    with pytest.raises(RunError, match="holds a run of"):
        train_run(tiny_dataset, run, PipelineConfig(preset="cpu", iterations=2))


def test_run_job_returns_a_valid_world_unit_result(scene_64, tmp_path):
    from backend.method.data import load_scene

    scene = load_scene(scene_64, "train", normalised=False)
    events = []
    result = run_job(scene, JobOptions(preset="fast", iterations=15, thresholds=(0.1, 0.2)), events.append,
                     lambda: False, tmp_path)
    result.validate()
    pts = result.arrays[ResultArrays.POINTS]
    lo, hi = np.asarray(json.loads((scene_64 / "meta.json").read_text())["scene_bounds"])
    assert (((pts >= lo - 0.05) & (pts <= hi + 0.05)).all(1)).mean() > 0.99
    assert result.arrays[ResultArrays.LABELS].shape == (2, len(pts))
    assert {"masks", "training", "segmentation"} <= {e.stage for e in events}


def test_cancelled_job_stops_training(scene_64, tmp_path):
    from backend.method.data import load_scene

    scene = load_scene(scene_64, "train", normalised=False)
    with pytest.raises(InterruptedError):
        run_job(scene, JobOptions(preset="fast", iterations=500), lambda e: None, lambda: True, tmp_path)


def test_depth_less_scene_is_trained_in_nerf_mode(scene_64, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(scene_64, data)
    shutil.rmtree(data / "depth")
    trainer, _, _ = train_run(data, tmp_path / "run", PipelineConfig(preset="cpu", iterations=3, max_points=5000))
    assert trainer.geometry == "nerf"
