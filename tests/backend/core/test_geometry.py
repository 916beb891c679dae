"""Tests for backend/core/geometry.py: pinhole unprojection / projection and pixel warps (docs/architecture.md conventions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core import geometry


def random_pose(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    c2w = np.eye(4)
    c2w[:3, :3] = q
    c2w[:3, 3] = rng.normal(size=3)
    return c2w


def intrinsics(h, w, f):
    return np.array([[f, 0, w / 2], [0, f * 1.1, h / 2], [0, 0, 1.0]])


def test_axes_convention():
    K = intrinsics(20, 40, 30.0)
    # camera at the origin looks down -Z: a point straight ahead projects to the principal point
    uv, z = geometry.project(np.array([0.0, 0.0, -2.0]), K, np.eye(4))
    np.testing.assert_allclose(uv, [20.0, 10.0])
    assert z == pytest.approx(2.0)
    # +X is image right, +Y is image up (smaller v)
    uv, _ = geometry.project(np.array([[0.1, 0.0, -2.0], [0.0, 0.1, -2.0]]), K, np.eye(4))
    assert uv[0, 0] > 20.0 and uv[1, 1] < 10.0
    # behind the camera: non-positive depth
    assert geometry.project(np.array([0.0, 0.0, 1.0]), K, np.eye(4))[1] < 0


def test_pixel_centers_and_uv_to_pixel():
    c = geometry.pixel_centers(3, 4)
    np.testing.assert_allclose(c[2, 1], [1.5, 2.5])
    idx = geometry.uv_to_pixel(np.array([[1.5, 2.5], [3.99, 0.0], [4.0, 0.5], [-0.1, 1.0], [np.nan, 1.0]]), 3, 4)
    assert idx.tolist() == [9, 3, -1, -1, -1]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_unproject_project_round_trip(seed):
    rng = np.random.default_rng(seed)
    h, w = 12, 17
    K = intrinsics(h, w, float(rng.uniform(5, 50)))
    c2w = random_pose(rng)
    depth = rng.uniform(0.1, 5.0, (h, w))
    pts = geometry.unproject_depth(depth, K, c2w)
    uv, z = geometry.project(pts, K, c2w)
    np.testing.assert_allclose(uv, geometry.pixel_centers(h, w), atol=1e-9)
    np.testing.assert_allclose(z, depth, rtol=1e-9)
    # depth is planar: the camera-space z of every point equals -depth
    cam = (pts - c2w[:3, 3]) @ c2w[:3, :3]
    np.testing.assert_allclose(-cam[..., 2], depth, rtol=1e-9)


def test_warp_identity_and_translation():
    h, w = 10, 12
    K = np.array([[10.0, 0, w / 2], [0, 10.0, h / 2], [0, 0, 1]])
    depth = np.full((h, w), 2.0)
    depth[0, 0] = 0.0  # background
    same = geometry.warp_pixels(depth, K, np.eye(4), K, np.eye(4), (h, w))
    expected = np.arange(h * w)
    expected[0] = -1
    np.testing.assert_array_equal(same, expected)
    # moving the camera +0.4 along x at depth 2 (f = 10) shifts content 2 pixels left
    c2w_dst = np.eye(4)
    c2w_dst[0, 3] = 0.4
    moved = geometry.warp_pixels(depth, K, np.eye(4), K, c2w_dst, (h, w)).reshape(h, w)
    assert moved[5, 6] == 5 * w + 4
    assert (moved[1:, :2] == -1).all()  # leaves the image


def test_warp_between_random_views_is_consistent():
    rng = np.random.default_rng(7)
    h, w = 9, 11
    K = intrinsics(h, w, 12.0)
    c2w_a = random_pose(rng)
    depth = rng.uniform(1.0, 3.0, (h, w))
    pts = geometry.unproject_depth(depth, K, c2w_a)
    # the destination camera looks at the same points from slightly shifted pose
    c2w_b = c2w_a.copy()
    c2w_b[:3, 3] += 0.05 * rng.normal(size=3)
    idx = geometry.warp_pixels(depth, K, c2w_a, K, c2w_b, (h, w))
    uv, z = geometry.project(pts.reshape(-1, 3), K, c2w_b)
    ok = idx >= 0
    assert ok.mean() > 0.5
    np.testing.assert_array_equal(idx[ok] % w, np.floor(uv[ok, 0]).astype(int))
    np.testing.assert_array_equal(idx[ok] // w, np.floor(uv[ok, 1]).astype(int))
