"""Pure camera maths (no bpy)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_tools import cameras as cam
from backend.core import geometry as geo


def test_look_at_axes_and_target_projects_to_centre():
    c2w = cam.look_at((4.0, -3.0, 2.0), (0.5, 0.5, 0.2))
    r = c2w[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert r[2, 0] == pytest.approx(0.0, abs=1e-12)  # camera +X stays horizontal (no roll)
    assert r[2, 1] > 0  # camera +Y points up
    K = cam.intrinsics(64, 48, 0.6911)
    uv, z = geo.project(np.array([0.5, 0.5, 0.2]), K, c2w)
    np.testing.assert_allclose(uv, [32.0, 24.0], atol=1e-9)
    assert z == pytest.approx(np.linalg.norm(np.array([3.5, -3.5, 1.8])))


def test_look_at_straight_down_is_well_defined():
    c2w = cam.look_at((0, 0, 5), (0, 0, 0))
    assert np.isfinite(c2w).all()
    np.testing.assert_allclose(c2w[:3, 2], [0, 0, 1], atol=1e-12)  # looks down -Z(camera) = -Z(world)


def test_nerf_synthetic_convention_known_point():
    """A camera at +Y*4 looking at the origin: world +X appears on the image left? No: right-handed,
    looking along -Y with +Z up, camera +X is world -X, so a point at +X lands left of centre, +Z above."""
    c2w = cam.look_at((0, 4, 0), (0, 0, 0))
    K = cam.intrinsics(100, 100, 0.6911)
    (u, v), z = geo.project(np.array([0.5, 0.0, 0.0]), K, c2w)
    assert u < 50 and v == pytest.approx(50)
    (u, v), z = geo.project(np.array([0.0, 0.0, 0.5]), K, c2w)
    assert v < 50 and u == pytest.approx(50)
    # the exact pixel: fl = 50 / tan(0.6911 / 2)
    fl = 50 / math.tan(0.6911 / 2)
    assert v == pytest.approx(50 - fl * 0.5 / 4)
    assert z == pytest.approx(4)


def test_intrinsics_match_camera_angle_x():
    K = cam.intrinsics(200, 150, 0.6911112070083618)
    assert K[0, 0] == pytest.approx(0.5 * 200 / math.tan(0.5 * 0.6911112070083618))
    assert K[1, 1] == K[0, 0]
    assert (K[0, 2], K[1, 2]) == (100.0, 75.0)
    assert cam.fov_from_focal(200, K[0, 0]) == pytest.approx(0.6911112070083618)


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.5, 3), st.floats(0.5, 20.0))
def test_project_unproject_round_trip(x, y, z_up, depth):
    c2w = cam.look_at((x, y - 6, z_up + 2), (0, 0, 0.3))
    K = cam.intrinsics(32, 24, 0.9)
    d = np.full((24, 32), depth)
    pts = geo.unproject_depth(d, K, c2w)
    uv, z = geo.project(pts, K, c2w)
    np.testing.assert_allclose(z, depth, rtol=1e-9)
    v, u = np.meshgrid(np.arange(24) + 0.5, np.arange(32) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv[..., 0], u, atol=1e-7)
    np.testing.assert_allclose(uv[..., 1], v, atol=1e-7)


@pytest.mark.parametrize("deg", [10.0, 45.0, 90.0, 135.0, -30.0])
def test_rotate_about_axis_is_what_it_claims(deg):
    centre = np.array([0.3, -0.2, 0.5])
    c2w = cam.look_at((3.0, 1.0, 2.0), centre)
    rot = cam.rotate_about_axis(c2w, centre, deg)
    a, b = c2w[:3, 3] - centre, rot[:3, 3] - centre
    assert b[2] == pytest.approx(a[2])  # about the up axis: height kept
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(a))
    turned = math.degrees(math.atan2(b[1], b[0]) - math.atan2(a[1], a[0]))
    assert (turned - deg + 180) % 360 - 180 == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(rot[:3, :3], cam.rotation_matrix((0, 0, 1), deg) @ c2w[:3, :3], atol=1e-12)
    # still looks at the centre
    K = cam.intrinsics(40, 40, 0.7)
    uv, _ = geo.project(centre, K, rot)
    np.testing.assert_allclose(uv, [20, 20], atol=1e-9)


def test_orbit_poses_deterministic_hemisphere_and_fit():
    p1 = cam.orbit_poses(20, (1, 2, 3), 5.0, seed=7, stream=0)
    p2 = cam.orbit_poses(20, (1, 2, 3), 5.0, seed=7, stream=0)
    p3 = cam.orbit_poses(20, (1, 2, 3), 5.0, seed=7, stream=1)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)
    np.testing.assert_allclose(np.linalg.norm(p1[:, :3, 3] - [1, 2, 3], axis=1), 5.0)
    assert (p1[:, 2, 3] >= 3.0).all()
    full = cam.orbit_poses(200, (0, 0, 0), 5.0, seed=1, stream=0, hemisphere=False)
    assert (full[:, 2, 3] < 0).any()


def test_fit_distance_sphere_in_view():
    w, h, fov, radius = 64, 48, 0.6911, 1.3
    d = cam.fit_distance(radius, fov, w, h, margin=0.05)
    c2w = cam.look_at((d, 0, 0), (0, 0, 0))
    K = cam.intrinsics(w, h, fov)
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5000, 3))
    pts = radius * pts / np.linalg.norm(pts, axis=1, keepdims=True)
    uv, _ = geo.project(pts, K, c2w)
    assert (uv[:, 0] > 0).all() and (uv[:, 0] < w).all() and (uv[:, 1] > 0).all() and (uv[:, 1] < h).all()
    # and not absurdly far: with no margin the sphere touches the narrower side
    d0 = cam.fit_distance(radius, fov, w, h, margin=0.0)
    uv, _ = geo.project(pts, K, cam.look_at((d0, 0, 0), (0, 0, 0)))
    assert uv[:, 1].max() == pytest.approx(h, rel=0.02)


def test_normalise_c2w_removes_scale():
    c2w = cam.look_at((1, 2, 3), (0, 0, 0))
    scaled = c2w.copy()
    scaled[:3, :3] *= 2.5
    np.testing.assert_allclose(cam.normalise_c2w(scaled), c2w, atol=1e-12)
