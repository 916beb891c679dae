"""What a camera sees, by ray casts (pure NumPy; the scene is reached through a cast function).

A cast function ``cast(origins [N, 3], dirs [N, 3]) -> (ids int64 [N], dist [N], backface bool [N])`` gives
the leaf id of the first surface each ray hits (0 = nothing, dist = inf) and whether it hit that surface
from behind (the ray starts inside or behind the object); :func:`dataset_tools.raycast.scene_caster` builds
one with Blender's BVH tree. :func:`score_poses` casts a grid of rays through a camera's image;
:func:`pull_in` moves a camera in front of whatever blocks its line of sight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

CastFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class SceneModel:
    """What placement knows of the scene: the rendered objects' leaf ids [N], world box corners [N, 8, 3],
    which are content (bool [N]) and which are enclosing structure or backdrops (bool [N])."""

    ids: np.ndarray
    boxes: np.ndarray
    content: np.ndarray
    structure: np.ndarray

    @property
    def content_ids(self) -> np.ndarray:
        return np.asarray(self.ids)[self.content]

    @property
    def content_box(self) -> np.ndarray:
        pts = self.boxes[self.content].reshape(-1, 3)
        return np.stack([pts.min(axis=0), pts.max(axis=0)])


@dataclass
class ViewScores:
    """Scores of C candidate poses: ``share`` [C] on content, ``obstacle`` [C], ``backface`` [C], and the share
    of each content object [C, O] (objects in ``SceneModel.content_ids`` order)."""

    share: np.ndarray
    obstacle: np.ndarray
    backface: np.ndarray
    objects: np.ndarray


def ray_grid(c2w: np.ndarray, K: np.ndarray, width: int, height: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions [G*G', 3] of a grid of rays through the image of camera ``c2w`` [4, 4]
    (``grid`` rays across the longer side)."""
    gx = grid if width >= height else max(2, round(grid * width / height))
    gy = grid if height >= width else max(2, round(grid * height / width))
    u = (np.arange(gx) + 0.5) * width / gx
    v = (np.arange(gy) + 0.5) * height / gy
    uu, vv = np.meshgrid(u, v)
    d = np.stack([(uu - K[0, 2]) / K[0, 0], -(vv - K[1, 2]) / K[1, 1], -np.ones_like(uu)], axis=-1).reshape(-1, 3)
    d = d @ np.asarray(c2w)[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.broadcast_to(np.asarray(c2w)[:3, 3], d.shape).copy(), d


def score_poses(cast: CastFn, poses: np.ndarray, K: np.ndarray, width: int, height: int, model: SceneModel,
                obstacle_distance, grid: int) -> ViewScores:
    """Cast a grid of rays from every pose [C, 4, 4]; see :class:`ViewScores`. ``obstacle_distance``: one
    distance, or one per pose [C]."""
    content_ids = model.content_ids
    lut = np.full(int(max(np.max(model.ids, initial=0), 0)) + 2, -1, dtype=np.int64)
    lut[content_ids] = np.arange(len(content_ids))
    c = len(poses)
    share, obstacle, backface = np.zeros(c), np.zeros(c), np.zeros(c)
    objects = np.zeros((c, len(content_ids)))
    if c == 0:
        return ViewScores(share, obstacle, backface, objects)
    rays = [ray_grid(p, K, width, height, grid) for p in poses]
    per = len(rays[0][0])
    ids, dist, back = cast(np.concatenate([r[0] for r in rays]), np.concatenate([r[1] for r in rays]))
    ids = np.clip(np.asarray(ids, dtype=np.int64), 0, len(lut) - 1).reshape(c, per)
    dist = np.asarray(dist, dtype=np.float64).reshape(c, per)
    back = np.asarray(back, dtype=bool).reshape(c, per)
    slot = lut[ids]
    for k in range(c):
        s = slot[k][slot[k] >= 0]
        objects[k] = np.bincount(s, minlength=len(content_ids)) / per
    share = (slot >= 0).mean(axis=1)
    near = np.broadcast_to(np.asarray(obstacle_distance, dtype=np.float64), (c,))
    obstacle = (dist < near[:, None]).mean(axis=1)
    backface = back.mean(axis=1)
    return ViewScores(share, obstacle, backface, objects)


def first_hit_excluding(cast: CastFn, origin, direction, exclude: int, max_steps: int = 8) -> float:
    """Distance along a ray to the first surface not of leaf ``exclude`` (inf when none)."""
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    travelled = 0.0
    for _ in range(max_steps):
        ids, dist, _ = cast(o[None], d[None])
        if int(ids[0]) == 0 or not np.isfinite(dist[0]):
            return math.inf
        if int(ids[0]) != exclude:
            return travelled + float(dist[0])
        step = float(dist[0]) + 1e-4 * max(1.0, travelled + float(dist[0]))
        travelled += step
        o = o + step * d
    return math.inf


def pull_in(cast: CastFn, eye, target, exclude: int, clearance: float, min_distance: float) -> np.ndarray | None:
    """``eye`` when the line from ``target`` to it is clear (surfaces of leaf ``exclude`` ignored); else the
    point ``clearance`` in front of the first blocker; None when that is nearer than ``min_distance``."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    v = eye - target
    length = float(np.linalg.norm(v))
    if length == 0:
        return None
    d = v / length
    hit = first_hit_excluding(cast, target, d, exclude)
    if hit >= length + clearance:
        return eye
    new = hit - clearance
    if new < min_distance:
        return None
    return target + new * d
