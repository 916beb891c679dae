"""Pure NumPy camera placement: poses, look-at, intrinsics, orbits and rotations. Projection and
unprojection are ``backend.core.geometry.project`` / ``unproject_depth``: one camera convention.

Conventions (NeRF-synthetic / Blender, the same as ``backend.core.geometry``):

- ``c2w`` (``T_world_cam``): 4x4 camera-to-world; camera axes are OpenGL's (+X right, +Y up, looks down -Z).
- ``K``: ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; pixel (row i, col j) has its centre at
  ``u = j + 0.5, v = i + 0.5``; image rows grow downwards, so camera +Y is image -v.
- Depth is planar: the distance along the viewing axis (``-z`` in camera coordinates).

No bpy import here: the add-on and the dataset writer share it.
"""

from __future__ import annotations

import math

import numpy as np

#: World up axis (Blender: +Z).
WORLD_UP = np.array([0.0, 0.0, 1.0])


def focal_from_fov(width: int, camera_angle_x: float) -> float:
    """Focal length in pixels for a horizontal field of view ``camera_angle_x`` (radians)."""
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


def fov_from_focal(width: int, fl_x: float) -> float:
    """Inverse of :func:`focal_from_fov`."""
    return 2.0 * math.atan(0.5 * width / fl_x)


def intrinsics(width: int, height: int, camera_angle_x: float) -> np.ndarray:
    """Pinhole ``K`` [3, 3] (float64) with square pixels and the principal point at the image centre."""
    f = focal_from_fov(width, camera_angle_x)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=WORLD_UP) -> np.ndarray:
    """``c2w`` [4, 4] of a camera at ``eye`` looking at ``target`` with image-up as close to ``up`` as possible.

    When the viewing direction is parallel to ``up`` the world +Y axis is used as the up hint instead.
    """
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    n = np.linalg.norm(forward)
    if n == 0:
        raise ValueError("look_at: eye and target coincide")
    forward /= n
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = cam_up
    c2w[:3, 2] = -forward
    c2w[:3, 3] = eye
    return c2w


def fit_distance(radius: float, camera_angle_x: float, width: int, height: int, margin: float = 0.1) -> float:
    """Camera distance at which a sphere of ``radius`` fits in the view (narrower field of view), times ``1 + margin``."""
    half_x = 0.5 * camera_angle_x
    half_y = math.atan(math.tan(half_x) * height / width)
    half = min(half_x, half_y)
    return radius / math.sin(half) * (1.0 + margin)


def sample_directions(n: int, rng: np.random.Generator, hemisphere: bool = True) -> np.ndarray:
    """``n`` unit vectors [n, 3] uniform on the sphere, or on the upper (+Z) hemisphere."""
    z = rng.uniform(0.0 if hemisphere else -1.0, 1.0, size=n)
    phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def orbit_poses(n: int, centre, distance: float, seed: int, stream: int, hemisphere: bool = True) -> np.ndarray:
    """``n`` cameras [n, 4, 4] at ``distance`` from ``centre`` looking at it; deterministic for ``(seed, stream)``.

    ``stream`` separates independent sets (e.g. 0 = train, 1 = val, 2 = test) drawn from the same seed.
    """
    rng = np.random.default_rng([int(seed), int(stream)])
    centre = np.asarray(centre, dtype=np.float64)
    dirs = sample_directions(n, rng, hemisphere)
    poses = [look_at(centre + distance * d, centre) for d in dirs]
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def rotation_matrix(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about the unit ``axis`` (right-handed, Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = math.radians(degrees)
    x, y, z = axis
    kx = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * (kx @ kx)


def rotate_about_axis(c2w: np.ndarray, centre, degrees: float, axis=WORLD_UP) -> np.ndarray:
    """Turn camera(s) ``c2w`` [..., 4, 4] by ``degrees`` about the line through ``centre`` along ``axis``."""
    r = np.eye(4)
    r[:3, :3] = rotation_matrix(axis, degrees)
    c = np.asarray(centre, dtype=np.float64)
    t_fwd = np.eye(4)
    t_fwd[:3, 3] = c
    t_back = np.eye(4)
    t_back[:3, 3] = -c
    return t_fwd @ r @ t_back @ np.asarray(c2w, dtype=np.float64)


def normalise_c2w(matrix_world) -> np.ndarray:
    """A rigid ``c2w`` from an object's world matrix: drop scale/shear from the rotation columns."""
    m = np.asarray(matrix_world, dtype=np.float64).copy()
    for k in range(3):
        m[:3, k] /= np.linalg.norm(m[:3, k])
    m[3] = (0.0, 0.0, 0.0, 1.0)
    return m
