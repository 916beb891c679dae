"""Trainer tests on a tiny analytic scene: two coloured boxes seen by a ring of cameras (exact depth and masks).

The scene is built in numpy by ray-box intersection, independently of the trainer's ray code.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from backend.method.field.encoding import HashGridConfig
from backend.method.field.model import UltrametricFieldConfig
from backend.core.geometry import pixel_centers, unproject
from backend.core.scene import Scene
from backend.method.config import PRESETS, TrainConfig, config_from_dict, preset
from backend.method.trainer import (
    DepthRequiredError, GeometryModeError, MasksError, NoCheckpointError, RunFolderMismatchError, Trainer,
    TrainProgress,
)

pytestmark = pytest.mark.usefixtures("single_torch_thread")


#: (min corner, max corner, colour) of the boxes; both inside [-0.5, 0.5]^3.
BOXES = [
    (np.array([-0.4, -0.25, -0.2]), np.array([-0.05, 0.25, 0.2]), (220, 40, 40)),
    (np.array([0.05, -0.2, -0.3]), np.array([0.4, 0.2, 0.1]), (40, 200, 60)),
]


def look_at(eye: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world looking from ``eye`` at ``target`` (camera -Z forward)."""
    z = eye - target
    z = z / np.linalg.norm(z)
    x = np.cross(up, z)
    x = x / np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
    return c2w


def two_box_scene(n_views: int = 4, size: int = 32, seed_angle: float = 0.3) -> tuple[Scene, list[np.ndarray]]:
    """Exact renders of :data:`BOXES` (planar depth, colours, ids) and GT masks [box0, box1, both] per view."""
    fx = 0.5 * size / np.tan(np.radians(25))
    K = np.array([[fx, 0, size / 2], [0, fx, size / 2], [0, 0, 1]])
    rgb = np.full((n_views, size, size, 3), 255, np.uint8)
    alpha = np.zeros((n_views, size, size), np.uint8)
    depth = np.zeros((n_views, size, size), np.float32)
    c2ws, masks = [], []
    uv = pixel_centers(size, size).reshape(-1, 2)
    for v in range(n_views):
        ang = seed_angle + 2 * np.pi * v / n_views
        eye = 1.5 * np.array([np.cos(ang) * 0.9, np.sin(ang) * 0.9, 0.44])
        c2w = look_at(eye)
        c2ws.append(c2w)
        far_pts = unproject(uv, np.ones(len(uv)), K, c2w)  # points at planar depth 1
        dirs = far_pts - eye  # planar depth of eye + s * dirs is s
        best = np.full(len(uv), np.inf)
        ids = np.full(len(uv), -1)
        for b, (lo, hi, _) in enumerate(BOXES):
            with np.errstate(divide="ignore", invalid="ignore"):
                t0 = (lo - eye) / dirs
                t1 = (hi - eye) / dirs
            near = np.nanmax(np.minimum(t0, t1), 1)
            far = np.nanmin(np.maximum(t0, t1), 1)
            hit = (far >= near) & (near > 0) & (near < best)
            best[hit], ids[hit] = near[hit], b
        ids = ids.reshape(size, size)
        depth[v] = np.where(ids >= 0, best.reshape(size, size), 0)
        for b, (_, _, col) in enumerate(BOXES):
            rgb[v][ids == b] = col
        alpha[v] = np.where(ids >= 0, 255, 0)
        masks.append(np.stack([ids == 0, ids == 1, ids >= 0]))
    scene = Scene(rgb=rgb, c2w=np.array(c2ws, np.float32), K=np.repeat(K[None], n_views, 0).astype(np.float32),
                  alpha=alpha, depth=depth)
    scene.validate()
    return scene, masks


def tiny_config(**kw) -> TrainConfig:
    """A few-second config: small tables, 256 rays, feature dim 16, CPU."""
    fcfg = UltrametricFieldConfig(
        density_grid=HashGridConfig(num_levels=6, features_per_level=2, log2_hashmap_size=12, max_resolution=128),
        feature_grid=HashGridConfig(num_levels=6, features_per_level=2, log2_hashmap_size=12, max_resolution=64),
        hidden_dim=32, color_hidden_dim=32, feature_hidden_dim=32, feature_dim=16)
    base = TrainConfig(iterations=30, rays_per_step=256, device="cpu", field=fcfg, num_samples=16,
                       occupancy_resolution=16, occupancy_warmup=4, occupancy_every=4, checkpoint_every=10,
                       progress_every=5, depth_continuity_start=4, max_stencils=16, n_pos=16, n_neg=16,
                       render_chunk=512)
    return dataclasses.replace(base, **kw)


@pytest.fixture(scope="module")
def box_scene():
    return two_box_scene()


def _feature_loss(losses: dict[str, float]) -> float:
    return losses.get("ultrametric", 0.0) + losses.get("euclidean", 0.0)


def test_scene_fixture_is_consistent(box_scene):
    scene, masks = box_scene
    assert (scene.depth > 0).mean() > 0.1
    # depth unprojects onto the boxes' surfaces
    pts = unproject(pixel_centers(32, 32)[scene.depth[0] > 0], scene.depth[0][scene.depth[0] > 0], scene.K[0],
                    scene.c2w[0])
    assert np.abs(pts).max() <= 0.4 + 1e-6
    assert all(m.shape == (3, 32, 32) for m in masks)


@pytest.mark.parametrize("geometry", ["depth", "nerf"])
def test_smoke_train_feature_loss_decreases(box_scene, geometry):
    scene, masks = box_scene
    seen: list[TrainProgress] = []
    cfg = tiny_config(geometry=geometry, iterations=60 if geometry == "depth" else 30, lr=2e-2,
                      rays_per_step=256 if geometry == "depth" else 160)
    if geometry == "nerf":  # the fixture stores white where alpha is 0: composite as a NeRF-synthetic loader does
        cfg = dataclasses.replace(cfg, composite_alpha=True, background_rgb=(1.0, 1.0, 1.0), depth_weight=0.1)
    tr = Trainer(scene, masks, cfg, progress=seen.append)
    assert tr.geometry == geometry
    first = [_feature_loss(tr.train_step()) for _ in range(5)]
    tr.step = 5
    res = tr.fit()
    assert res.iterations == cfg.iterations and not res.stopped and res.geometry == geometry
    last = []
    for _ in range(5):
        last.append(_feature_loss(tr.train_step()))
    assert np.mean(last) < np.mean(first) * 0.9, (first, last)
    assert seen and seen[-1].step == cfg.iterations and seen[-1].total == cfg.iterations
    assert "total" in seen[-1].losses and seen[-1].eta_s >= 0
    if geometry == "nerf":
        assert "rgb" in res.losses and "depth_continuity" in res.losses
    else:
        assert "rgb" not in res.losses


def test_depth_mode_render_and_point_features(box_scene):
    scene, masks = box_scene
    tr = Trainer(scene, masks, tiny_config(geometry="depth", iterations=40, lr=2e-2))
    tr.fit()
    with pytest.raises(DepthRequiredError):
        tr.render_view(scene.c2w[0], scene.K[0], 32, 32)
    r = tr.render_view(scene.c2w[0], scene.K[0], 32, 32, depth=scene.depth[0])
    assert r.rgb is None and r.features.shape == (32, 32, 16) and r.features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(r.features, axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(r.depth, scene.depth[0])
    # the boxes' features separate: mean within-box cosine beats cross-box cosine
    f0, f1 = r.features[masks[0][0]], r.features[masks[0][1]]
    within = (f0 @ f0.T).mean()
    across = (f0 @ f1.T).mean()
    assert within > across + 0.05, (within, across)
    pts, feats, cols = tr.feature_points([0, 1])
    n_fg = int((scene.depth[:2] > 0).sum())
    assert pts.shape == (n_fg, 3) and feats.shape == (n_fg, 16) and cols.dtype == np.uint8
    assert np.abs(pts).max() <= 0.41


def test_auto_geometry_and_errors(box_scene):
    scene, masks = box_scene
    assert Trainer(scene, masks, tiny_config(geometry="auto")).geometry == "depth"
    no_depth = dataclasses.replace(scene, depth=None)
    assert Trainer(no_depth, masks, tiny_config(geometry="auto")).geometry == "nerf"
    with pytest.raises(GeometryModeError):
        Trainer(no_depth, masks, tiny_config(geometry="depth"))
    with pytest.raises(MasksError):
        Trainer(scene, masks[:2], tiny_config())
    with pytest.raises(MasksError):
        Trainer(scene, [m[:, :16] for m in masks], tiny_config())


def test_nerf_render_view_shapes(box_scene):
    scene, masks = box_scene
    tr = Trainer(scene, masks, tiny_config(geometry="nerf", iterations=5, rays_per_step=64))
    tr.fit()
    r = tr.render_view(scene.c2w[1], scene.K[1], 16, 20)
    assert r.rgb.shape == (16, 20, 3) and r.depth.shape == (16, 20) and r.opacity.shape == (16, 20)
    assert r.features.shape == (16, 20, 16)
    np.testing.assert_allclose(np.linalg.norm(r.features, axis=-1), 1.0, atol=1e-4)
    assert ((r.depth == 0) | (r.opacity > 0.5)).all()


def test_seeded_runs_are_identical(box_scene):
    scene, masks = box_scene
    cfg = tiny_config(geometry="nerf", iterations=6, rays_per_step=64)
    a = Trainer(scene, masks, cfg).fit()
    b = Trainer(scene, masks, cfg).fit()
    c = Trainer(scene, masks, dataclasses.replace(cfg, seed=1)).fit()
    assert a.losses == b.losses
    assert a.losses != c.losses


@pytest.mark.parametrize("geometry", ["depth", "nerf"])
def test_checkpoint_resume_matches_uninterrupted(box_scene, tmp_path, geometry):
    scene, masks = box_scene
    cfg = tiny_config(geometry=geometry, iterations=24 if geometry == "depth" else 12, checkpoint_every=5,
                      rays_per_step=128)
    full = Trainer(scene, masks, cfg, run_dir=tmp_path / "full")
    rf = full.fit()

    calls = {"n": 0}

    def stop_after_13() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    part = Trainer(scene, masks, cfg, run_dir=tmp_path / "part", should_stop=stop_after_13)
    rp = part.fit()
    assert rp.stopped and rp.iterations == 7
    assert (tmp_path / "part" / "checkpoint.pt").exists() and (tmp_path / "part" / "train_config.json").exists()
    assert not list((tmp_path / "part").glob("*.tmp"))

    resumed = Trainer.resume(tmp_path / "part", scene, masks)
    assert resumed.step == 7
    rr = resumed.fit()
    assert rr.iterations == rf.iterations == cfg.iterations and not rr.stopped
    for (n1, p1), (n2, p2) in zip(full.field.named_parameters(), resumed.field.named_parameters()):
        assert n1 == n2
        torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-5, msg=n1)
    for k in rf.losses:
        assert rr.losses[k] == pytest.approx(rf.losses[k], rel=1e-4, abs=1e-6)

    # fit(resume=True) on a fresh trainer continues from the checkpoint too (already at the end here)
    again = Trainer(scene, masks, cfg, run_dir=tmp_path / "part").fit(resume=True)
    assert again.iterations == cfg.iterations


def test_run_folder_of_another_scene_is_refused(box_scene, tmp_path):
    scene, masks = box_scene
    Trainer(scene, masks, tiny_config(geometry="depth", iterations=3), run_dir=tmp_path).fit()
    other, other_masks = two_box_scene(seed_angle=1.0)
    with pytest.raises(RunFolderMismatchError):
        Trainer.resume(tmp_path, other, other_masks)
    with pytest.raises(RunFolderMismatchError):
        Trainer(other, other_masks, tiny_config(geometry="depth", iterations=3), run_dir=tmp_path).fit(resume=True)
    with pytest.raises(NoCheckpointError):
        Trainer.resume(tmp_path / "empty", scene, masks)
    meta = json.loads((tmp_path / "train_config.json").read_text())
    assert meta["geometry"] == "depth" and meta["fingerprint"]["num_views"] == 4


def test_should_stop_honoured_immediately(box_scene, tmp_path):
    scene, masks = box_scene
    res = Trainer(scene, masks, tiny_config(geometry="depth"), run_dir=tmp_path, should_stop=lambda: True).fit()
    assert res.stopped and res.iterations == 0
    assert (tmp_path / "checkpoint.pt").exists()


def test_presets_and_config_round_trip():
    assert set(PRESETS) >= {"paper", "default", "fast", "cpu"}
    paper = PRESETS["paper"]
    assert paper.iterations == 20000 and paper.rays_per_step == 4096 and paper.lr == 1e-2
    assert paper.lr_final_ratio == pytest.approx(1 / 30) and paper.depth_continuity_start == 5000
    assert paper.field.feature_dim == 256 and paper.field.feature_grid.num_levels == 17
    assert paper.field.feature_grid.max_resolution == 64
    assert PRESETS["default"].iterations == 5000 and 1000 <= PRESETS["fast"].iterations <= 2000
    assert PRESETS["cpu"].field.feature_dim <= 64
    for cfg in PRESETS.values():
        assert config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    p = preset("cpu", iterations=7)
    assert p.iterations == 7 and PRESETS["cpu"].iterations != 7
    with pytest.raises(KeyError):
        preset("nope")
    with pytest.raises(ValueError):
        TrainConfig(geometry="lidar")


def test_learning_rate_cosine_decay(box_scene):
    scene, masks = box_scene
    tr = Trainer(scene, masks, tiny_config(geometry="depth", iterations=20))
    tr.fit()
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(tr.cfg.lr / 30, rel=1e-6)


def test_released_code_variants_train(box_scene):
    """Per-image mask trees, negatives reused as positives and a constant background feature (released code)."""
    scene, masks = box_scene
    field = dataclasses.replace(tiny_config().field, learn_background=False, feature_hidden_layers=3)
    cfg = tiny_config(geometry="depth", iterations=40, lr=2e-2, image_mask_trees=True, reuse_negatives=True,
                      field=field)
    tr = Trainer(scene, masks, cfg)
    first = [_feature_loss(tr.train_step()) for _ in range(5)]
    tr.step = 5
    tr.fit()
    last = [_feature_loss(tr.train_step()) for _ in range(5)]
    assert np.mean(last) < np.mean(first)
    assert len(tr._trees) >= 1 and "background_feature" not in dict(tr.field.named_parameters())


def test_train_overrides_and_scene_dependent_feature_grid(box_scene):
    """Dotted TrainConfig overrides (bench variants) and the feature grid resolved from the pixel footprint."""
    from backend.method.config import (ConfigError, PipelineConfig, feature_resolution, resolve_scene_dependent,
                                       scene_pixel_footprint, train_config)

    tc = train_config(PipelineConfig(preset="cpu", train_overrides={
        "reuse_negatives": True, "field.feature_grid.max_resolution": 128, "adam_betas": [0.9, 0.999]}))
    assert tc.reuse_negatives and tc.field.feature_grid.max_resolution == 128 and tc.adam_betas == (0.9, 0.999)
    with pytest.raises(ConfigError):
        train_config(PipelineConfig(preset="cpu", train_overrides={"field.no_such_field": 1}))
    scene, _ = box_scene
    f = scene_pixel_footprint(scene)
    assert f > 0 and scene_pixel_footprint(dataclasses.replace(scene, depth=None)) > 0
    cfg = tiny_config(feature_cell_pixels=0.5)
    res = resolve_scene_dependent(cfg, f).field.feature_grid.max_resolution
    assert res == feature_resolution(cfg.field.bound, f, 0.5) and res & (res - 1) == 0 and res >= 64
    assert resolve_scene_dependent(tiny_config(), f) == tiny_config()


# ----------------------------------------------------------------------------------------------------------------
# Issue #24: a cheaper CPU step (thread settings, fused Adam, stage profile hook)
# ----------------------------------------------------------------------------------------------------------------
def test_cpu_step_thread_settings_are_applied_and_restored(box_scene):
    from backend.method import threads

    scene, masks = box_scene
    before_torch = torch.get_num_threads()
    before_blas = threads.blas_threads()
    seen = []
    cfg = tiny_config(geometry="depth", iterations=3, cpu_threads=1)
    tr = Trainer(scene, masks, cfg, progress=lambda p: seen.append((torch.get_num_threads(), threads.blas_threads())))
    tr.prepare_step = (lambda orig: lambda step: (seen.append(("blas", threads.blas_threads())), orig(step))[1])(
        tr.prepare_step)
    tr.fit()
    assert torch.get_num_threads() == before_torch and threads.blas_threads() == before_blas
    progress = [s for s in seen if s[0] != "blas"]
    assert progress and all(t == 1 and all(b == 1 for b in blas) for t, blas in progress)
    assert all(all(b == 1 for b in s[1]) for s in seen if s[0] == "blas")  # the host work, too
    # 0 leaves the settings alone; the prefetch thread runs only when a core is left over
    tr0 = Trainer(scene, masks, tiny_config(geometry="depth", iterations=2, cpu_threads=0))
    assert tr0._prefetch_workers() == 0
    tr0.fit()
    assert torch.get_num_threads() == before_torch
    assert tr._prefetch_workers() == (1 if threads.cpu_count() > 1 else 0)


def test_blas_thread_setter_round_trips():
    from backend.method import threads

    before = threads.blas_threads()
    if not before:
        pytest.skip("no OpenBLAS loaded in this process")
    prev = threads.set_blas_threads(1)
    assert prev == before and threads.blas_threads() == [1] * len(before)
    threads.set_blas_threads(prev)
    assert threads.blas_threads() == before


def test_thread_count_does_not_change_what_is_trained(box_scene):
    scene, masks = box_scene
    runs = []
    for n in (1, 2):
        tr = Trainer(scene, masks, tiny_config(geometry="depth", iterations=8, cpu_threads=n))
        tr.prefetch_workers = 0
        runs.append((tr.fit().losses, tr))
    for k in runs[0][0]:
        assert runs[0][0][k] == pytest.approx(runs[1][0][k], rel=1e-4, abs=1e-6), k
    for (n1, p1), (_, p2) in zip(runs[0][1].field.named_parameters(), runs[1][1].field.named_parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-6, msg=n1)


def test_cpu_adam_is_fused_and_equals_the_unfused_update(box_scene, tmp_path):
    scene, masks = box_scene
    cfg = tiny_config(geometry="depth", iterations=6, checkpoint_every=0)
    fused = Trainer(scene, masks, cfg)
    assert all(g["fused"] for g in fused.optimizer.param_groups)
    plain = Trainer(scene, masks, cfg)
    plain.optimizer = torch.optim.Adam(plain.field.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                       eps=cfg.adam_eps)
    plain.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        plain.optimizer, T_max=cfg.iterations, eta_min=cfg.lr * cfg.lr_final_ratio)
    fused.prefetch_workers = plain.prefetch_workers = 0
    for i in range(cfg.iterations):
        la, lb = fused.train_step(), plain.train_step()
        fused.step += 1
        plain.step += 1
        if i == 0:  # the same gradients: the same update up to float rounding
            for (n1, p1), (_, p2) in zip(fused.field.named_parameters(), plain.field.named_parameters()):
                torch.testing.assert_close(p1, p2, rtol=1e-6, atol=1e-8, msg=n1)
        # later, rounding-level differences in a gradient near 0 move Adam's sign-like update of that entry
        # (eps 1e-15): the losses stay the same
        for k in lb:
            assert la[k] == pytest.approx(lb[k], rel=1e-3, abs=1e-6), (i, k)
    # a checkpoint of the unfused optimiser (runs from before) resumes fused
    plain.run_dir = tmp_path
    plain.save_checkpoint()
    resumed = Trainer.resume(tmp_path, scene, masks)
    assert all(g["fused"] for g in resumed.optimizer.param_groups)


def test_stage_hook_reports_every_stage_of_a_step(box_scene):
    scene, masks = box_scene
    for geometry in ("depth", "nerf"):
        tr = Trainer(scene, masks, tiny_config(geometry=geometry, iterations=2))
        stages: list[str] = []
        tr.stage_hook = stages.append
        tr.train_step()
        assert stages == ["field forward + norm", "loss: ultrametric", "loss: euclidean", "backward", "optimiser"]
