"""Pinhole camera maths on arrays: unproject a depth map, project points, warp pixels between views.

Conventions (docs/architecture.md, shared with ``dataset_tools/cameras.py``):

- ``c2w`` (``T_world_cam``) is a 4x4 camera-to-world matrix with OpenGL/Blender camera axes: +X right, +Y up,
  the camera looks down -Z.
- ``K`` is ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels. Pixel (row i, col j) has its centre at
  ``u = j + 0.5, v = i + 0.5``; image rows grow downwards, so camera +Y is image -v.
- Depth is planar: the distance along the viewing axis (``-z`` in camera coordinates); 0 marks background.

Everything here is pure NumPy (float64 internally) and vectorised.
"""

from __future__ import annotations

import numpy as np


def pixel_centers(h: int, w: int) -> np.ndarray:
    """Pixel centres ``(u, v)`` of an ``h x w`` image.

    Shape: returns float64 [h, w, 2] with ``[..., 0] = j + 0.5`` and ``[..., 1] = i + 0.5``.

    >>> pixel_centers(1, 2)[0]
    array([[0.5, 0.5],
           [1.5, 0.5]])
    """
    v, u = np.meshgrid(np.arange(h, dtype=np.float64) + 0.5, np.arange(w, dtype=np.float64) + 0.5, indexing="ij")
    return np.stack([u, v], axis=-1)


def unproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World points of pixels ``uv`` at planar ``depth``.

    Camera coordinates: ``x = (u - cx) / fx * d``, ``y = -(v - cy) / fy * d``, ``z = -d``; then
    ``X_world = R @ x_cam + t`` with ``[R | t] = c2w[:3]``.

    Shape: ``uv`` [..., 2], ``depth`` [...] -> float64 [..., 3].
    """
    uv = np.asarray(uv, dtype=np.float64)
    d = np.asarray(depth, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    x = (uv[..., 0] - K[0, 2]) / K[0, 0] * d
    y = -(uv[..., 1] - K[1, 2]) / K[1, 1] * d
    cam = np.stack([x, y, -d], axis=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """World point of every pixel centre of a planar depth map (background pixels land on the camera centre).

    Shape: ``depth`` [H, W] -> float64 [H, W, 3].

    >>> K = np.array([[1.0, 0, 1], [0, 1.0, 1], [0, 0, 1]])
    >>> unproject_depth(np.full((2, 2), 2.0), K, np.eye(4))[0, 0]
    array([-1.,  1., -2.])
    """
    h, w = depth.shape
    return unproject(pixel_centers(h, w), depth, K, c2w)


def camera_rays(uv: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World rays through pixel positions ``uv``: origins, unit directions, and the factor that turns a distance
    along the ray into planar depth (``planar = distance * planar_scale``).

    The direction is that of the point :func:`unproject` gives at planar depth 1.

    Shape: ``uv`` [P, 2] -> ``origins`` [P, 3], ``dirs`` [P, 3], ``planar_scale`` [P], all float32.

    >>> o, d, s = camera_rays(np.array([[1.0, 1.0]]), np.array([[1.0, 0, 1], [0, 1.0, 1], [0, 0, 1]]), np.eye(4))
    >>> d.tolist(), s.tolist()
    ([[0.0, 0.0, -1.0]], [1.0])
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    offsets = unproject(uv, np.ones(len(uv)), K, c2w) - c2w[:3, 3]
    norm = np.linalg.norm(offsets, axis=1)  # = |camera-space (x, y, -1)|: rotations keep lengths
    origins = np.broadcast_to(c2w[:3, 3], offsets.shape)
    return origins.astype(np.float32), (offsets / norm[:, None]).astype(np.float32), (1.0 / norm).astype(np.float32)


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera: continuous pixel coordinates and planar depth.

    Inverse of :func:`unproject`: ``u = fx * x / d + cx``, ``v = -fy * y / d + cy`` with ``d = -z_cam``.
    Points behind the camera get ``z <= 0`` (their ``uv`` is meaningless); ``z == 0`` yields ``uv = nan``.

    Shape: ``points`` [..., 3] -> ``uv`` float64 [..., 2], ``z`` float64 [...].
    """
    p = np.asarray(points, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    R, t = c2w[:3, :3], c2w[:3, 3]
    cam = (p - t) @ R  # R^T (p - t), row-vector form
    z = -cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * cam[..., 0] / z + K[0, 2]
        v = -K[1, 1] * cam[..., 1] / z + K[1, 2]
    return np.stack([u, v], axis=-1), z


def directions_to(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Unit vectors from each point towards ``centre`` (e.g. the camera that saw it), float32 [N, 3]; zero for a
    point at the centre.

    >>> directions_to(np.array([[0, 0, -2.0]]), np.zeros(3)).tolist()
    [[0.0, 0.0, 1.0]]
    """
    d = np.asarray(centre, np.float64)[None, :] - np.asarray(points, np.float64)
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return np.where(n > 0, d / np.maximum(n, 1e-300), 0.0).astype(np.float32)


def uv_to_pixel(uv: np.ndarray, h: int, w: int) -> np.ndarray:
    """Flat index ``i * w + j`` of the pixel containing each ``uv`` (``j = floor(u)``, ``i = floor(v)``), -1 outside.

    Shape: ``uv`` [..., 2] -> int64 [...].
    """
    uv = np.asarray(uv, dtype=np.float64)
    ok = np.isfinite(uv).all(-1)
    j = np.floor(np.where(ok, uv[..., 0], -1)).astype(np.int64)
    i = np.floor(np.where(ok, uv[..., 1], -1)).astype(np.int64)
    inside = ok & (j >= 0) & (j < w) & (i >= 0) & (i < h)
    return np.where(inside, i * w + j, -1)


def warp_pixels(depth_src: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray,
                K_dst: np.ndarray, c2w_dst: np.ndarray, dst_shape: tuple[int, int]) -> np.ndarray:
    """For every source pixel, the flat index of the destination pixel its surface point projects into.

    Pixels with ``depth_src <= 0`` (background), points behind the destination camera and projections outside the
    destination image map to -1. No occlusion test: combine with a visibility mask.

    Shape: ``depth_src`` [H, W] -> int64 [H * W] indices into a ``dst_shape`` image.
    """
    pts = unproject_depth(depth_src, K_src, c2w_src).reshape(-1, 3)
    uv, z = project(pts, K_dst, c2w_dst)
    idx = uv_to_pixel(uv, *dst_shape)
    valid = (depth_src.reshape(-1) > 0) & (z > 0)
    return np.where(valid, idx, -1)
