"""Camera placement by what a camera sees (pure NumPy; the scene is reached through a ray-cast function).

Three placements (``RenderConfig.placement``, ``--placement``):

- ``orbit``: the hemisphere around the framed content (:func:`dataset_tools.cameras.orbit_poses`), as
  before placement existed.
- ``inside``: positions in the free space of an enclosed room (inside the box that the enclosing
  structure bounds, at several heights), each looking at a content object, scored and chosen as below.
- ``auto`` (default): ``inside`` when the content is enclosed (rays from the content's centre hit
  structure in at least :attr:`PlacementSettings.enclosed_share` of all directions); else ``orbit`` when
  the content is one compact group with no structure rising beside it (a tabletop, also on a floor);
  else (content in several groups, e.g. with distant surroundings, or walls around it) ``orbit-scored``:
  candidate views around the groups and around each object, scored and chosen as below.

Scoring (:func:`score_poses`): a grid of rays per candidate gives the share of the image on content
(objects that are not backdrop or enclosing structure), each content object's share, and the obstacle
share (rays hitting a surface closer than the obstacle distance). A candidate is kept when its obstacle
share and its share of back faces (a camera inside an object) are small and it sees some content; a
camera whose line of sight to its target is blocked is first pulled in front of the blocker
(:func:`pull_in`). :func:`greedy_select` then picks views one at a time, each maximising the content
share plus, for every content object it shows, a credit that is full while the object has been seen in
fewer than :attr:`PlacementSettings.views_per_object` chosen views from a new direction: every content
object ends up in several views from different directions, not only the largest ones.

Validation views (rendered again turned about the vertical through the content centre) are kept only
when every turned copy passes the same checks (inside: it stays inside the room), so no turned camera
ends up inside or behind a wall.

A ray-cast function ``cast(origins [N, 3], dirs [N, 3]) -> (ids int64 [N], dist [N], backface bool [N])``
gives the leaf id of the first surface hit (0 = nothing, dist = inf) and whether it was hit from behind;
:mod:`dataset_tools.raycast` builds one from the scene with Blender's BVH tree.

Modules: :mod:`dataset_tools.view_scoring` (rays through a camera's image, obstacles, pull-in),
:mod:`dataset_tools.view_candidates` (where candidates come from), :mod:`dataset_tools.view_selection`
(the greedy choice), this one (enclosure, the placement decision, the plan per split); the settings are
:class:`dataset_tools.config.PlacementSettings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cameras import fit_distance, orbit_poses, rotate_about_axis
from .config import PlacementSettings
from .view_candidates import (in_box, clusters, focus_candidates, generate_candidates, group_spheres,
                              object_spheres)
from .view_scoring import CastFn, SceneModel, ViewScores, score_poses
from .view_selection import greedy_select


@dataclass
class Placement:
    """The planned cameras: ``poses`` per split (``train``, ``val``, ``test``), the placement used
    (``orbit``, ``orbit-scored``, ``inside``), the centre val views turn about, the enclosure share and
    what decided it."""

    poses: dict[str, np.ndarray]
    used: str
    centre: np.ndarray
    enclosure: float = 0.0
    clusters: int = 1
    scored: dict[str, ViewScores] = field(default_factory=dict)


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` unit vectors [n, 3] spread evenly over the sphere (deterministic)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = math.pi * (1.0 + math.sqrt(5.0)) * k
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def enclosure(cast_structure: CastFn, centre: np.ndarray, n: int = 256) -> tuple[float, np.ndarray]:
    """Share of ``n`` directions from ``centre`` in which a ray hits structure, and the hit points [M, 3]."""
    dirs = fibonacci_directions(n)
    origins = np.broadcast_to(np.asarray(centre, dtype=np.float64), dirs.shape).copy()
    ids, dist, _ = cast_structure(origins, dirs)
    hit = (np.asarray(ids) > 0) & np.isfinite(dist)
    return float(hit.mean()), origins[hit] + dirs[hit] * np.asarray(dist)[hit][:, None]


def inner_box(hits: np.ndarray, centre: np.ndarray, clearance: float) -> np.ndarray:
    """The room's free box [[min], [max]]: the box of the structure hit points seen from ``centre``, shrunk
    by ``clearance`` (never past the centre)."""
    lo, hi = hits.min(axis=0) + clearance, hits.max(axis=0) - clearance
    return np.stack([np.minimum(lo, centre), np.maximum(hi, centre)])


def _rotation_ok(cast: CastFn, pose: np.ndarray, centre: np.ndarray, angles, K, width, height, model,
                 obstacle: float, room, settings: PlacementSettings) -> tuple[bool, float]:
    """Whether every copy of ``pose`` turned by ``angles`` about the vertical through ``centre`` passes the
    checks (in a room: stays inside it), and the smallest content share among them."""
    turned = np.stack([rotate_about_axis(pose, centre, a) for a in angles]) if len(angles) else np.zeros((0, 4, 4))
    if room is not None and not all(in_box(p[:3, 3], room) for p in turned):
        return False, 0.0
    if not len(turned):
        return True, 1.0
    s = score_poses(cast, turned, K, width, height, model, obstacle, max(8, settings.grid // 2))
    ok = bool(np.all(s.obstacle <= settings.max_obstacle_share) & np.all(s.backface <= 0.5)
              & np.all(s.share >= settings.min_content_share))
    return ok, float(s.share.min())


def resolve(placement: str, model: SceneModel, enclosure_share: float, settings: PlacementSettings,
            framed_all: bool = False) -> str:
    """The placement to use: ``orbit`` (the plain hemisphere), ``orbit-scored`` or ``inside``.

    ``orbit`` asked for is the plain hemisphere. ``auto``: ``inside`` when the content is enclosed; the plain
    hemisphere when the content is one compact group with no structure rising beside it (a tabletop, also on
    a floor); else ``orbit-scored`` (distant groups, or walls around the content).
    """
    if placement == "orbit" or framed_all or not model.content.any():
        return "orbit"
    if placement == "inside" or enclosure_share >= settings.enclosed_share:
        return "inside"
    groups = clusters(model.boxes[model.content])
    box = model.content_box
    tops = model.boxes[model.structure].max(axis=1)[:, 2] if model.structure.any() else np.zeros(0)
    walls = bool(np.any(tops > box[0, 2] + 0.25 * (box[1, 2] - box[0, 2])))
    return "orbit-scored" if (groups.max(initial=0) > 0 or walls) else "orbit"


def plan(cast: CastFn, cast_structure: CastFn | None, model: SceneModel, counts: dict[str, int], K: np.ndarray,
         width: int, height: int, fov: float, seed: int, placement: str, frame_centre: np.ndarray,
         frame_radius: float, hemisphere: bool, rotations, settings: PlacementSettings | None = None,
         streams: dict[str, int] | None = None, framed_all: bool = False, margin: float = 0.1) -> Placement:
    """Plan the cameras of every split (``counts``: views per split; a count of 0 plans none)."""
    settings = settings or PlacementSettings()
    streams = streams or {"train": 0, "val": 1, "test": 2}
    content_centre = model.content_box.mean(axis=0) if model.content.any() else np.asarray(frame_centre)
    share, hits = (enclosure(cast_structure, content_centre) if cast_structure is not None and model.structure.any()
                   else (0.0, np.zeros((0, 3))))
    used = resolve(placement, model, share, settings, framed_all)
    if used == "inside" and len(hits) < 8:
        used = "orbit-scored"
    if used == "orbit":
        d = fit_distance(frame_radius, fov, width, height, margin)
        hemi = {s: orbit_poses(n, frame_centre, d, seed, streams[s], hemisphere) for s, n in counts.items() if n > 0}
        return Placement(poses=hemi, used="orbit", centre=np.asarray(frame_centre, dtype=np.float64), enclosure=share)

    groups = clusters(model.boxes[model.content])
    g_centres, g_radii, _ = group_spheres(model)
    main_centre, main_radius = g_centres[0], float(g_radii[0])
    clearance = settings.obstacle_distance * main_radius
    room = None
    if used == "inside":
        size = np.max(hits, axis=0) - np.min(hits, axis=0)
        clearance = min(clearance, settings.obstacle_distance * float(size.min()))
        room = inner_box(hits, content_centre, clearance)
    centre = content_centre if used == "inside" else main_centre
    result = Placement(poses={}, used=used, centre=centre, enclosure=share, clusters=int(groups.max(initial=0)) + 1)
    for split, n in counts.items():
        if n <= 0:
            continue
        rng = np.random.default_rng([int(seed), int(streams[split]), 7])
        least = settings.min_candidates if split == "train" else settings.min_candidates // 4
        count = int(min(settings.max_candidates, max(least, settings.candidates_per_view * n)))
        cand = generate_candidates(cast, model, count, rng, fov, width, height, clearance, room, settings)
        if split == "val" and len(rotations):  # views of the turning axis keep seeing content when turned
            focus_candidates(cand, cast, centre, main_radius, count // 2, rng, fov, width, height, clearance, room,
                             settings)
        poses = cand.array()
        reach = np.linalg.norm(poses[:, :3, 3] - np.array(cand.targets).reshape(-1, 3), axis=1) if len(poses) else 0.0
        scores = score_poses(cast, poses, K, width, height, model,
                             np.maximum(clearance, settings.obstacle_reach * reach), settings.grid)
        valid = ((scores.obstacle <= settings.max_obstacle_share) & (scores.backface <= 0.5)
                 & (scores.share >= settings.min_content_share))
        centres, _ = object_spheres(model)
        eyes = poses[:, :3, 3] if len(poses) else np.zeros((0, 3))
        checked = np.zeros(len(poses), dtype=bool)
        while True:  # val: the turned copies of each picked view are checked, a failing view is replaced
            picked = greedy_select(scores, eyes, centres, n, valid, settings)
            todo = [i for i in picked if valid[i] and not checked[i]] if split == "val" and len(rotations) else []
            if not todo:
                break
            for i in todo:
                ok, worst = _rotation_ok(cast, poses[i], centre, rotations, K, width, height, model, clearance,
                                         room, settings)
                checked[i], valid[i] = True, ok
                scores.share[i] = min(float(scores.share[i]), worst)
        chosen = poses[picked] if picked else np.zeros((0, 4, 4))
        if len(chosen) < n:  # too few candidates at all: the plain orbit fills the rest
            d = fit_distance(frame_radius, fov, width, height, margin)
            extra = orbit_poses(n - len(chosen), frame_centre, d, seed, streams[split], hemisphere)
            chosen = np.concatenate([chosen, extra]) if len(chosen) else extra
        result.poses[split] = chosen
        result.scored[split] = ViewScores(scores.share[picked], scores.obstacle[picked], scores.backface[picked],
                                          scores.objects[picked])
    return result
