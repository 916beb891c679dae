"""The trainer on CUDA with mixed precision (fp16 autocast + grad scaling, Sec. 5.4 of the paper: fp16).

Every test is parametrised over ``cpu`` and ``cuda``: the ``cuda`` cases carry ``@pytest.mark.cuda`` and are
skipped on machines without a CUDA device (``tests/conftest.py``); the ``cpu`` cases run the same bodies
everywhere (mixed precision asked for but, by design, off on CPU), so the code paths stay exercised here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from backend.method.trainer import Trainer
from tests.backend.method.test_train import tiny_config, two_box_scene

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
GEOMETRIES = ["depth", "nerf"]


@pytest.fixture(scope="module")
def box_scene():
    return two_box_scene()


def _params(tr: Trainer) -> list[torch.Tensor]:
    return [p.detach().float().cpu().clone() for p in tr.field.parameters()]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("device", DEVICES)
def test_mixed_precision_training_steps(box_scene, device, geometry):
    scene, masks = box_scene
    cfg = tiny_config(geometry=geometry, device=device, mixed_precision=True, iterations=8, rays_per_step=256)
    tr = Trainer(scene, masks, cfg)
    assert tr.device.type == device
    assert tr.amp == (device == "cuda"), "fp16 autocast + grad scaling exactly on CUDA"
    assert all(p.device.type == device for p in tr.field.parameters())
    before = _params(tr)
    res = tr.fit()
    assert res.iterations == 8 and res.geometry == geometry and not res.stopped
    assert res.losses and all(math.isfinite(v) for v in res.losses.values()), res.losses
    assert "ultrametric" in res.losses and "euclidean" in res.losses
    if geometry == "nerf":
        assert "rgb" in res.losses
    # the grad scaler may skip a first overflowing fp16 step, never all of them
    changed = [not torch.equal(a, b) for a, b in zip(before, _params(tr))]
    assert any(changed), "no parameter moved in 8 steps"
    assert all(torch.isfinite(p).all() for p in _params(tr))
    if device == "cuda":
        assert tr.scaler.is_enabled() and tr.scaler.get_scale() > 0


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("device", DEVICES)
def test_render_view_matches_cpu(box_scene, device, geometry):
    """A field trained on ``device`` renders views of the same shapes as on CPU, and the same weights loaded
    into a CPU trainer render the same features (fp32 inference on both)."""
    scene, masks = box_scene
    cfg = tiny_config(geometry=geometry, device=device, mixed_precision=True, iterations=4, rays_per_step=128)
    tr = Trainer(scene, masks, cfg)
    tr.fit()
    cpu = Trainer(scene, masks, dataclasses.replace(cfg, device="cpu"))
    cpu.field.load_state_dict({k: v.cpu() if torch.is_tensor(v) else v for k, v in tr.field.state_dict().items()})
    cpu.occupancy.load_state_dict({k: v.cpu() if torch.is_tensor(v) else v
                                   for k, v in tr.occupancy.state_dict().items()})
    h, w = 20, 24  # not the training size: render_view takes any size
    K = scene.K[1].astype(np.float64).copy()
    K[0, 2], K[1, 2] = w / 2, h / 2
    depth = None
    if geometry == "depth":
        depth = np.zeros((h, w), np.float32)
        depth[4:16, 6:18] = 1.2  # a patch of surface in front of the camera
    a = tr.render_view(scene.c2w[1], K, h, w, depth)
    b = cpu.render_view(scene.c2w[1], K, h, w, depth)
    dim = cfg.field.feature_dim
    assert a.features.shape == b.features.shape == (h, w, dim)
    assert a.depth.shape == b.depth.shape == a.opacity.shape == (h, w)
    assert a.features.dtype == a.depth.dtype == np.float32
    if geometry == "nerf":
        assert a.rgb.shape == b.rgb.shape == (h, w, 3)
        np.testing.assert_allclose(a.rgb, b.rgb, atol=2e-3)
    else:
        assert a.rgb is None and b.rgb is None
        np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_allclose(np.linalg.norm(a.features, axis=-1), 1.0, atol=1e-3)
    np.testing.assert_allclose(a.features, b.features, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_run_trained_on_device_resumes_on_cpu(box_scene, device, tmp_path):
    """A run trained on ``device`` (tiny-cuda-nn grids on CUDA when importable: backend auto) resumes, renders and
    keeps training on CPU (issue #16: one checkpoint format for both encoders, generator state across devices)."""
    scene, masks = box_scene
    cfg = tiny_config(geometry="depth", device=device, mixed_precision=True, iterations=4, rays_per_step=128)
    cfg = dataclasses.replace(cfg, field=dataclasses.replace(
        cfg.field, feature_grid=dataclasses.replace(cfg.field.feature_grid, backend="auto"),
        density_grid=dataclasses.replace(cfg.field.density_grid, backend="auto")))
    tr = Trainer(scene, masks, cfg, run_dir=tmp_path)
    tr.fit()
    ref = tr.render_view(scene.c2w[0], scene.K[0], scene.height, scene.width, scene.depth[0]).features
    cpu = Trainer.resume(tmp_path, scene, masks, device="cpu", iterations=6)
    assert cpu.step == 4 and cpu.field.feature_encoder.layout == tr.field.feature_encoder.layout
    got = cpu.render_view(scene.c2w[0], scene.K[0], scene.height, scene.width, scene.depth[0]).features
    np.testing.assert_allclose(got, ref, atol=2e-2)  # fp16 tcnn on CUDA vs fp32 torch on CPU
    res = cpu.fit()
    assert res.iterations == 6 and all(math.isfinite(v) for v in res.losses.values())


@pytest.mark.cuda
def test_cuda_step_host_syncs_are_bounded(box_scene):
    """Host synchronisations per training step on CUDA (issue #16): counted with torch's sync debug mode; the
    ultrametric tree's edge-length copy is the one expected per step (plus occupancy updates in nerf mode)."""
    scene, masks = box_scene
    cfg = tiny_config(geometry="depth", device="cuda", mixed_precision=True, iterations=12, rays_per_step=256,
                      progress_every=1000)
    tr = Trainer(scene, masks, cfg)
    tr.train_step()  # warm-up (lazy inits)
    tr.step += 1
    batches = [tr.prepare_step(s) for s in range(tr.step, tr.step + 5)]
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for b in batches:
                tr._run_step(b)
                tr.step += 1
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    print(f"{len(syncs)} syncs in 5 steps")
    assert len(syncs) <= 5 * 3, syncs[:10]
