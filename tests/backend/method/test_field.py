"""Field components: hash-grid encoder, model, occupancy grid and volume renderer (CPU, small, exact checks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backend.method.field.encoding as enc
from backend.method.field.encoding import (
    EncoderUnavailableError, HashGridConfig, TorchHashGrid, grid_layout, make_encoder, select_backend,
)
from backend.method.field.model import UltrametricField, UltrametricFieldConfig
from backend.method.field.occupancy import OccupancyGrid
from backend.method.field.renderer import compositing_weights, ray_aabb, render_rays, render_rays_chunked

pytestmark = pytest.mark.usefixtures("single_torch_thread")


SMALL_GRID = HashGridConfig(num_levels=5, features_per_level=2, log2_hashmap_size=10, base_resolution=4,
                            max_resolution=64)


def small_field_config(feature_dim: int = 8) -> UltrametricFieldConfig:
    return UltrametricFieldConfig(density_grid=SMALL_GRID, feature_grid=SMALL_GRID, hidden_dim=16,
                                  color_hidden_dim=16, feature_hidden_dim=16, feature_dim=feature_dim)


def reference_encoding(grid: TorchHashGrid, x: np.ndarray) -> np.ndarray:
    """Point-by-point, level-by-level, corner-by-corner Instant-NGP encoding in plain Python."""
    cfg = grid.cfg
    res, size, dense = grid_layout(cfg)
    table = grid.table.detach().numpy().astype(np.float64)
    offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
    out = np.zeros((len(x), cfg.num_levels * cfg.features_per_level))
    for p, pt in enumerate(x):
        for lvl in range(cfg.num_levels):
            n = int(res[lvl])
            pos = np.clip(pt, 0, 1) * n
            base = np.minimum(np.floor(pos).astype(np.int64), n - 1)
            frac = pos - base
            acc = np.zeros(cfg.features_per_level)
            for dz in (0, 1):
                for dy in (0, 1):
                    for dx in (0, 1):
                        c = base + np.array([dx, dy, dz])
                        if dense[lvl]:
                            row = c[0] + c[1] * (n + 1) + c[2] * (n + 1) ** 2
                        else:
                            h = (int(c[0]) * 1) ^ (int(c[1]) * 2654435761) ^ (int(c[2]) * 805459861)
                            row = h % (1 << cfg.log2_hashmap_size)
                        wgt = np.prod([f if d else 1 - f for f, d in zip(frac, (dx, dy, dz))])
                        acc += wgt * table[offsets[lvl] + row]
            out[p, lvl * cfg.features_per_level:(lvl + 1) * cfg.features_per_level] = acc
    return out


# ---------------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------------
def test_default_config_is_the_papers():
    cfg = HashGridConfig()
    assert (cfg.num_levels, cfg.features_per_level, cfg.log2_hashmap_size) == (17, 4, 20)
    assert cfg.output_dim == 68
    res = cfg.resolutions()
    assert res[0] == 16 and res[-1] == 2048 and all(a < b for a, b in zip(res, res[1:]))
    _, size, dense = grid_layout(cfg)
    assert dense[0] and not dense[-1] and size.max() == 1 << 20
    # the feature branch's coarse grid (max resolution 64) is fully dense with a 2^20 table
    assert grid_layout(HashGridConfig(max_resolution=64))[2].all()
    with pytest.raises(ValueError):
        HashGridConfig(backend="cuda-magic")


def test_torch_grid_matches_pointwise_reference():
    torch.manual_seed(0)
    grid = TorchHashGrid(HashGridConfig(num_levels=4, features_per_level=2, log2_hashmap_size=8, base_resolution=2,
                                        max_resolution=40, init_scale=1.0))
    _, _, dense = grid_layout(grid.cfg)
    assert dense.any() and not dense.all()  # both index paths are exercised
    x = np.concatenate([np.random.default_rng(0).random((20, 3)), [[0, 0, 0], [1, 1, 1], [1.2, -0.1, 0.5]]])
    got = grid(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, reference_encoding(grid, x), rtol=1e-5, atol=1e-5)


def test_encoder_shapes_and_gradients():
    torch.manual_seed(0)
    grid = make_encoder(SMALL_GRID, "cpu")
    assert isinstance(grid, TorchHashGrid)
    x = torch.rand(257, 3, requires_grad=True)
    y = grid(x)
    assert y.shape == (257, SMALL_GRID.output_dim) and y.dtype == torch.float32
    y.square().sum().backward()
    g = grid.table.grad
    assert g is not None and torch.isfinite(g).all()
    touched = (g.abs().sum(1) > 0).sum().item()
    assert 0 < touched < g.shape[0]  # sparse rows only
    assert x.grad is not None and x.grad.abs().sum() > 0  # trilinear weights are differentiable in x
    with pytest.raises(ValueError):
        grid(torch.rand(4, 2))


def test_encoder_continuous_and_interpolates_vertices():
    torch.manual_seed(0)
    grid = TorchHashGrid(HashGridConfig(num_levels=1, features_per_level=1, log2_hashmap_size=8, base_resolution=4,
                                        max_resolution=4, init_scale=1.0))
    # at a vertex the value is that vertex's table entry; midway it is the mean of the two neighbours
    v = lambda i, j, k: grid.table[i + j * 5 + k * 25, 0].item()  # noqa: E731 (dense: R = 5)
    pts = torch.tensor([[0.25, 0.5, 0.75], [0.375, 0.5, 0.75]])
    out = grid(pts)[:, 0].detach()
    assert out[0].item() == pytest.approx(v(1, 2, 3), abs=1e-6)
    assert out[1].item() == pytest.approx((v(1, 2, 3) + v(2, 2, 3)) / 2, abs=1e-6)


def test_backend_selection_and_tcnn_fallback(monkeypatch):
    monkeypatch.setattr(enc, "tcnn_available", lambda: False)
    assert select_backend(HashGridConfig(), "cpu") == "torch"
    assert select_backend(HashGridConfig(), "cuda") == "torch"  # auto falls back when tcnn is missing
    with pytest.raises(EncoderUnavailableError):
        select_backend(HashGridConfig(backend="tcnn"), "cuda")
    monkeypatch.setattr(enc, "tcnn_available", lambda: True)
    assert select_backend(HashGridConfig(), "cuda") == "tcnn"
    assert select_backend(HashGridConfig(), "cpu") == "torch"  # tcnn is CUDA-only
    assert select_backend(HashGridConfig(backend="torch"), "cuda") == "torch"
    with pytest.raises(EncoderUnavailableError):
        select_backend(HashGridConfig(backend="tcnn"), "cpu")


def test_tcnn_importability_is_reported_not_required():
    assert isinstance(enc.tcnn_available(), bool)


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------
def test_field_outputs_and_feature_branch_is_detached_from_geometry():
    torch.manual_seed(0)
    field = UltrametricField(small_field_config(feature_dim=8))
    x = torch.rand(64, 3) - 0.5
    d = F.normalize(torch.randn(64, 3), dim=-1)
    out = field(x, d)
    assert out.sigma.shape == (64,) and (out.sigma > 0).all()
    assert out.rgb.shape == (64, 3) and ((out.rgb >= 0) & (out.rgb <= 1)).all()
    assert out.features.shape == (64, 8)
    out.features.square().sum().backward()
    assert all(p.grad is None for p in field.density_encoder.parameters())
    assert all(p.grad is None for p in field.density_net.parameters())
    assert field.feature_encoder.table.grad is not None
    # positions are detached too
    xg = (torch.rand(8, 3) - 0.5).requires_grad_()
    field.raw_features(xg).sum().backward()
    assert xg.grad is None


def test_paper_field_config():
    cfg = UltrametricFieldConfig()
    assert cfg.feature_dim == 256 and cfg.feature_hidden_dim == 128
    assert cfg.feature_grid.max_resolution == 64 and cfg.feature_grid.num_levels == 17
    assert cfg.feature_grid.features_per_level == 4 and cfg.feature_grid.log2_hashmap_size == 20


# ---------------------------------------------------------------------------------------------------------------
# Renderer on an analytic field
# ---------------------------------------------------------------------------------------------------------------
class ConstantField(UltrametricField):
    """Density ``sigma`` everywhere in the box, colour ``c``, raw feature ``f``."""

    def __init__(self, sigma: float, color=(0.2, 0.4, 0.6), feature_dim: int = 4):
        super().__init__(small_field_config(feature_dim=feature_dim))
        self.sigma = sigma
        self.c = torch.tensor(color)
        self.f = torch.arange(1.0, feature_dim + 1)
        with torch.no_grad():
            self.background_feature.copy_(F.normalize(-torch.ones(feature_dim), dim=0))

    def density(self, x):
        return torch.full((x.shape[0],), self.sigma), torch.zeros(x.shape[0], self.cfg.geo_feat_dim)

    def color(self, geo_feat, dirs):
        return self.c.expand(geo_feat.shape[0], 3)

    def raw_features(self, x):
        return self.f.expand(x.shape[0], -1).clone()


def test_ray_aabb():
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.2, 0.1, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_aabb(o, d, 0.5)
    assert hit.tolist() == [True, False, True]
    assert near[0].item() == pytest.approx(1.5) and far[0].item() == pytest.approx(2.5)
    assert near[2].item() == 0.0 and far[2].item() == pytest.approx(0.5)  # origin inside the box


@pytest.mark.parametrize("sigma", [0.5, 3.0, 20.0])
def test_constant_density_matches_closed_form(sigma):
    field = ConstantField(sigma)
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    d = F.normalize(torch.tensor([[0.0, 0.0, -1.0], [0.3, 0.2, -1.0], [0.0, -1.0, 0.0]]), dim=-1)
    near, far, _ = ray_aabb(o, d, 0.5)
    length = (far - near).double()
    bg = torch.tensor([1.0, 1.0, 1.0])
    out = render_rays(field, o, d, num_samples=2048, background_rgb=bg)
    opacity = 1 - torch.exp(-sigma * length)
    # E[t | the ray terminates inside]: t = near + s, s ~ sigma exp(-sigma s) on [0, L]
    mean_s = 1 / sigma - length * torch.exp(-sigma * length) / opacity
    torch.testing.assert_close(out.opacity.double(), opacity, rtol=1e-4, atol=1e-4)  # float32 cumsum
    torch.testing.assert_close(out.depth.double(), near.double() + mean_s, rtol=2e-4, atol=2e-4)
    rgb = field.c[None].double() * opacity[:, None] + (1 - opacity[:, None])
    torch.testing.assert_close(out.rgb.double(), rgb, rtol=1e-4, atol=1e-4)
    feat = F.normalize(opacity[:, None] * field.f[None].double()
                       + (1 - opacity[:, None]) * field.background_feature.detach()[None].double(), dim=-1)
    torch.testing.assert_close(out.features.double(), feat, rtol=1e-3, atol=5e-4)
    # planar depth scaling
    ps = torch.tensor([1.0, 0.5, 2.0])
    out2 = render_rays(field, o, d, num_samples=64, planar_scale=ps)
    torch.testing.assert_close(out2.depth, render_rays(field, o, d, num_samples=64).depth * ps)


def test_rays_missing_the_box_are_background():
    field = ConstantField(5.0)
    o = torch.tensor([[0.0, 0.0, 2.0]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    out = render_rays(field, o, d, num_samples=16, background_rgb=torch.tensor([0.0, 1.0, 0.0]))
    assert out.opacity.item() == 0.0 and out.depth.item() == 0.0
    torch.testing.assert_close(out.rgb, torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(out.features[0], field.background_feature.detach())


def test_compositing_weights_sum_to_opacity():
    sigma = torch.rand(5, 7) * 3
    delta = torch.full((5, 7), 0.1)
    w = compositing_weights(sigma, delta)
    torch.testing.assert_close(w.sum(1), 1 - torch.exp(-(sigma * delta).sum(1)))


def test_feature_weights_do_not_backprop_into_density():
    torch.manual_seed(0)
    field = UltrametricField(small_field_config())
    o = torch.tensor([[0.0, 0.0, 2.0]]).repeat(16, 1)
    d = F.normalize(torch.randn(16, 3) * 0.1 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    out = render_rays(field, o, d, num_samples=16)
    out.features.sum().backward()
    assert all(p.grad is None for p in field.density_net.parameters())
    assert field.feature_net[0].weight.grad is not None
    field.zero_grad(set_to_none=True)
    render_rays(field, o, d, num_samples=16).rgb.sum().backward()
    assert field.density_net[0].weight.grad is not None


def test_occupancy_grid_skips_empty_space():
    grid = OccupancyGrid(resolution=16, bound=0.5, threshold=0.5)
    assert grid.query(torch.tensor([[0.4, 0.4, 0.4], [0.0, 0.0, 0.0]])).all()  # all occupied before an update
    assert not grid.query(torch.tensor([[0.7, 0.0, 0.0]])).any()  # outside the box
    # a cube of 4^3 whole cells (cell side 1/16), so every cell is either full or empty
    ball = lambda x: 10.0 * (x.abs() < 0.125).all(-1).float()  # noqa: E731
    frac = grid.update(ball, generator=torch.Generator().manual_seed(0))
    assert frac == pytest.approx(4 ** 3 / 16 ** 3)
    assert grid.query(torch.tensor([[0.0, 0.0, 0.0]])).item()
    assert not grid.query(torch.tensor([[0.4, 0.4, 0.4]])).item()
    # rendering with the grid equals rendering without it on a field that is empty outside the ball
    field = ConstantField(4.0)
    field.density = lambda x: (ball(x) * 0.4, torch.zeros(x.shape[0], field.cfg.geo_feat_dim))  # type: ignore
    o = torch.tensor([[0.0, 0.0, 2.0], [0.05, 0.0, 2.0], [0.45, 0.45, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0]]).repeat(3, 1)
    a = render_rays(field, o, d, num_samples=128)
    b = render_rays(field, o, d, num_samples=128, occupancy=grid)
    torch.testing.assert_close(a.opacity, b.opacity)
    torch.testing.assert_close(a.depth, b.depth)
    assert b.opacity[2].item() == 0.0 and b.opacity[0].item() == pytest.approx(1 - math.exp(-0.4 * 10 * 0.25), abs=1e-3)


def test_chunked_render_equals_full():
    torch.manual_seed(0)
    field = UltrametricField(small_field_config())
    o = torch.tensor([[0.0, 0.0, 2.0]]).repeat(50, 1)
    d = F.normalize(torch.randn(50, 3) * 0.2 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    with torch.no_grad():
        full = render_rays(field, o, d, num_samples=16)
    chunked = render_rays_chunked(field, o, d, chunk=7, num_samples=16)
    torch.testing.assert_close(chunked.rgb, full.rgb)
    torch.testing.assert_close(chunked.features, full.features)
    torch.testing.assert_close(chunked.depth, full.depth)
    assert math.isclose(float(chunked.opacity.sum()), float(full.opacity.sum()), rel_tol=1e-6)
