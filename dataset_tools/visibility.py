"""Pure NumPy multi-view visibility: which pixels of one view are also seen by another.

Given planar depth maps and poses (conventions of :mod:`dataset_tools.cameras`), a pixel of view A is
*co-visible* in view B when its surface point projects inside B, in front of B, onto a pixel whose depth
agrees with the projected depth (within a relative tolerance, against B's depth interpolated in inverse
depth or any pixel of the 3x3 neighbourhood, so that resampling on slanted surfaces does not count as
occlusion). Reused by the backend's
view-consistency metric.
"""

from __future__ import annotations

import numpy as np

from backend.core.geometry import project, unproject_depth


def reproject(depth_a: np.ndarray, c2w_a: np.ndarray, K_a: np.ndarray, c2w_b: np.ndarray, K_b: np.ndarray,
              shape_b: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map each foreground pixel of view A into view B.

    Returns ``rows`` [H, W] int, ``cols`` [H, W] int (pixel of B hit, clipped into range), ``z`` [H, W]
    (planar depth of A's point in B) and ``inside`` [H, W] bool (A foreground, in front of B, inside B).
    """
    pts = unproject_depth(depth_a, K_a, c2w_a)
    uv, z = project(pts, K_b, c2w_b)
    h_b, w_b = shape_b
    with np.errstate(invalid="ignore"):
        cols = np.floor(uv[..., 0])
        rows = np.floor(uv[..., 1])
        inside = (depth_a > 0) & (z > 0) & (cols >= 0) & (cols < w_b) & (rows >= 0) & (rows < h_b)
    rows = np.clip(np.nan_to_num(rows), 0, h_b - 1).astype(np.int64)
    cols = np.clip(np.nan_to_num(cols), 0, w_b - 1).astype(np.int64)
    return rows, cols, z, inside


def covisible(depth_a: np.ndarray, c2w_a: np.ndarray, K_a: np.ndarray, depth_b: np.ndarray, c2w_b: np.ndarray,
              K_b: np.ndarray, rel_tol: float = 0.01, search: int = 1) -> np.ndarray:
    """Bool mask [H_a, W_a]: pixels of view A whose surface point is visible in view B.

    A point matches when its depth in B agrees (within ``rel_tol`` relative) with either B's depth
    interpolated at the projected position (bilinear in inverse depth: exact on planes, even at grazing
    angles) or the depth of a B pixel within ``search`` pixels (1 = 3x3, 0 = nearest only).
    """
    pts = unproject_depth(depth_a, K_a, c2w_a)
    uv, z = project(pts, K_b, c2w_b)
    h_b, w_b = depth_b.shape
    with np.errstate(invalid="ignore"):
        inside = (depth_a > 0) & (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < w_b) & (uv[..., 1] >= 0) & \
            (uv[..., 1] < h_b)
    ok = np.zeros(depth_a.shape, dtype=bool)
    zi = z[inside]
    tol = rel_tol * zi
    u, v = uv[inside][:, 0], uv[inside][:, 1]
    r0, c0 = np.floor(v).astype(np.int64), np.floor(u).astype(np.int64)
    hit = np.zeros(zi.shape, dtype=bool)
    for dr in range(-search, search + 1):
        for dc in range(-search, search + 1):
            d = depth_b[np.clip(r0 + dr, 0, h_b - 1), np.clip(c0 + dc, 0, w_b - 1)]
            hit |= (d > 0) & (np.abs(d - zi) <= tol)
    # bilinear interpolation of inverse depth between the four surrounding pixel centres
    x, y = u - 0.5, v - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    xs = np.clip(np.stack([x0, x0 + 1]), 0, w_b - 1)
    ys = np.clip(np.stack([y0, y0 + 1]), 0, h_b - 1)
    corners = np.stack([depth_b[ys[0], xs[0]], depth_b[ys[0], xs[1]], depth_b[ys[1], xs[0]], depth_b[ys[1], xs[1]]])
    valid = (corners > 0).all(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(corners > 0, 1.0 / corners, 0.0)
        w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
        z_interp = 1.0 / (w * inv).sum(axis=0)
    hit |= valid & (np.abs(z_interp - zi) <= tol)
    ok[inside] = hit
    return ok


def covisibility_pair(depth_a, c2w_a, K_a, depth_b, c2w_b, K_b, rel_tol: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Both masks: (pixels of A visible in B, pixels of B visible in A)."""
    return (covisible(depth_a, c2w_a, K_a, depth_b, c2w_b, K_b, rel_tol),
            covisible(depth_b, c2w_b, K_b, depth_a, c2w_a, K_a, rel_tol))
