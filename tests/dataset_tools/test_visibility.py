"""Pure visibility maths on analytic depth maps (no bpy)."""

import numpy as np

from dataset_tools import cameras as cam
from dataset_tools.visibility import covisibility_pair, covisible, reproject


def plane_depth(c2w, K, h, w, z_plane=0.0):
    """Planar depth of the world plane z = z_plane seen by a camera (0 where the ray misses it)."""
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1], -np.ones_like(u)], -1)
    d_world = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (z_plane - o[2]) / d_world[..., 2]
    return np.where(t > 0, t, 0.0)  # t along a ray with unit camera-z is the planar depth


def test_same_view_is_fully_visible():
    K = cam.intrinsics(40, 30, 0.8)
    c2w = cam.look_at((3, -2, 4), (0, 0, 0))
    d = plane_depth(c2w, K, 30, 40)
    vis = covisible(d, c2w, K, d, c2w, K, search=0)
    np.testing.assert_array_equal(vis, d > 0)


def test_rotated_view_plane_and_occluder():
    K = cam.intrinsics(48, 48, 0.7)
    a = cam.look_at((4, 0, 3), (0, 0, 0))
    b = cam.rotate_about_axis(a, (0, 0, 0), 45)
    da, db = plane_depth(a, K, 48, 48), plane_depth(b, K, 48, 48)
    vis_a, vis_b = covisibility_pair(da, a, K, db, b, K)
    rows, cols, z, inside = reproject(da, a, K, b, K, db.shape)
    # on an unoccluded plane, visible exactly where the point lands inside the other image (up to edge pixels)
    assert (vis_a == inside).mean() > 0.98
    assert vis_a.sum() > 0.3 * vis_a.size and vis_b.sum() > 0.3 * vis_b.size
    # an occluder in front of part of B hides those points
    db_occ = db.copy()
    db_occ[10:30, 10:30] *= 0.5
    vis_occ = covisible(da, a, K, db_occ, b, K)
    hidden = inside & (rows >= 12) & (rows < 28) & (cols >= 12) & (cols < 28)
    assert hidden.sum() > 20
    assert not vis_occ[hidden].any()
    assert vis_occ.sum() < vis_a.sum()


def test_background_is_never_visible():
    K = cam.intrinsics(16, 16, 0.7)
    a = cam.look_at((0, -3, 0.5), (0, 0, 0.5))  # horizontal camera: upper half sees no plane z=0
    d = plane_depth(a, K, 16, 16)
    assert (d == 0).any()
    vis = covisible(d, a, K, d, a, K)
    assert not vis[d == 0].any()
