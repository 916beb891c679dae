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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cameras import fit_distance, look_at, orbit_poses, rotate_about_axis

CastFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]



@dataclass(frozen=True)
class PlacementSettings:
    """Tunables of the scored placement (defaults are used by every command; not part of the CLI)."""

    grid: int = 32
    """Rays per image side when scoring a candidate (grid x grid rays through pixel positions)."""
    candidates_per_view: int = 8
    """Candidate poses scored per requested view (at least :attr:`min_candidates`)."""
    min_candidates: int = 800
    """Fewest candidates scored for the train split (val and test: a quarter of it)."""
    max_candidates: int = 1200
    """Most candidates scored for a split."""
    enclosed_share: float = 0.75
    """``auto`` picks ``inside`` when rays from the content centre hit structure in this share of directions."""
    obstacle_distance: float = 0.08
    """Obstacle distance as a fraction of the main content group's bounding radius (in a room, at most this
    fraction of the room's smallest inner size); also how far cameras stay in front of what blocks them."""
    obstacle_reach: float = 0.2
    """A surface also counts as an obstacle when nearer than this fraction of the distance to the view's target."""
    max_obstacle_share: float = 0.2
    """A candidate is rejected when more than this share of its rays hit a surface nearer than the obstacle distance."""
    min_content_share: float = 0.05
    """A candidate is rejected when less than this share of its rays hit content."""
    seen_share: float = 0.0075
    """An object counts as seen by a candidate when at least this share of its rays hit it."""
    size_share: float = 0.04
    """An object's credit grows with its share of the view up to this share."""
    views_per_object: int = 3
    """Chosen views each content object should appear in before it stops earning full credit."""
    new_direction_deg: float = 30.0
    """A view sees an object from a new direction when it is this far (degrees) from earlier views of it."""
    share_weight: float = 1.0
    """Weight of the content share against one object's credit."""
    heights: tuple[float, ...] = (0.3, 0.5, 0.7)
    """Camera heights inside a room, as fractions of the room's inner height."""


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


# ------------------------------------------------------------------------------------------ geometry


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` unit vectors [n, 3] spread evenly over the sphere (deterministic)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    phi = math.pi * (1.0 + math.sqrt(5.0)) * k
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def box_gap(lo_a, hi_a, lo_b, hi_b) -> float:
    """Euclidean gap between two axis-aligned boxes (0 when they touch or overlap)."""
    d = np.maximum(0.0, np.maximum(np.asarray(lo_a) - hi_b, np.asarray(lo_b) - hi_a))
    return float(np.linalg.norm(d))


def clusters(boxes: np.ndarray, link: float = 0.5, strict: bool = False) -> np.ndarray:
    """Group objects (world corners [N, 8, 3]) whose boxes are closer than ``link`` times the larger box's
    diagonal (``strict``: the smaller one's), single linkage; labels [N] numbered by group size, largest 0."""
    c = np.asarray(boxes, dtype=np.float64).reshape(-1, 8, 3)
    lo, hi = c.min(axis=1), c.max(axis=1)
    diag = np.linalg.norm(hi - lo, axis=1)
    n = len(c)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        gaps = np.linalg.norm(np.maximum(0.0, np.maximum(lo[i] - hi, lo - hi[i])), axis=1)
        scale = np.minimum(diag[i], diag) if strict else np.maximum(diag[i], diag)
        for j in np.flatnonzero(gaps <= link * scale):
            a, b = find(i), find(int(j))
            if a != b:
                parent[a] = b
    roots = np.array([find(i) for i in range(n)])
    uniq, counts = np.unique(roots, return_counts=True)
    rank = {int(r): k for k, r in enumerate(uniq[np.argsort(-counts, kind="stable")])}
    return np.array([rank[int(r)] for r in roots], dtype=np.int64)


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


# ------------------------------------------------------------------------------------------ choosing


def greedy_select(scores: ViewScores, positions: np.ndarray, object_centres: np.ndarray, n: int,
                  valid: np.ndarray, settings: PlacementSettings) -> list[int]:
    """Pick ``n`` candidate indices (valid ones first): greedy maximum coverage, then one swap pass.

    Each pick maximises ``share_weight * content share`` plus, for every object the candidate sees (at
    least ``seen_share`` of its rays), a credit of 1 while the object is in fewer than ``views_per_object``
    chosen views (0.1 after that), a quarter of it when an earlier view saw the object from within
    ``new_direction_deg``, times up to 3 for objects few candidates see. The swap pass then replaces a
    chosen view by a candidate whenever that raises the number of (object, view) sightings counted up to
    ``views_per_object`` per object.
    """
    c, o = scores.objects.shape
    seen = scores.objects >= settings.seen_share
    valid = np.asarray(valid, dtype=bool)
    dirs = positions[:, None, :] - object_centres[None, :, :]
    dirs /= np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    maxdot = np.full((c, o), -2.0)
    count = np.zeros(o)
    cos_new = math.cos(math.radians(settings.new_direction_deg))
    chosen: list[int] = []
    available = valid.copy()
    k_need = settings.views_per_object
    # objects few candidates see are hard to cover: up to 3x credit, so they are not left to the last views
    n_seen = (seen & valid[:, None]).sum(axis=0).astype(np.float64)
    typical = float(np.median(n_seen[n_seen > 0])) if (n_seen > 0).any() else 1.0
    rarity = np.clip(typical / np.maximum(n_seen, 1.0), 1.0, 3.0)
    for _ in range(min(n, c)):
        if not available.any():
            break
        need = np.where(count < k_need, 1.0, 0.1)
        novelty = np.where(maxdot < cos_new, 1.0, 0.25)
        gain = settings.share_weight * scores.share + (seen * novelty * (need * rarity)[None, :]).sum(axis=1)
        gain = np.where(available, gain, -np.inf)
        pick = int(np.argmax(gain))
        chosen.append(pick)
        available[pick] = False
        vis = seen[pick]
        count[vis] += 1
        dots = np.einsum("cok,ok->co", dirs[:, vis], dirs[pick, vis])
        maxdot[:, vis] = np.maximum(maxdot[:, vis], dots)
    chosen = _swap_pass(seen, scores.share, valid, chosen, settings)
    if len(chosen) < n:  # not enough valid candidates: the best of the rest, by content share
        taken = set(chosen)
        rest = [int(i) for i in np.argsort(-scores.share, kind="stable") if int(i) not in taken]
        chosen += rest[: n - len(chosen)]
    return chosen


def _swap_pass(seen: np.ndarray, share: np.ndarray, valid: np.ndarray, chosen: list[int],
               settings: PlacementSettings) -> list[int]:
    """Replace chosen views by valid candidates while that raises the capped sighting count (ties: share)."""
    if not chosen:
        return chosen
    k = settings.views_per_object
    chosen = list(chosen)
    s = seen.astype(np.float64)
    eps = 1e-3 * settings.share_weight
    for _ in range(2):
        improved = False
        for slot in range(len(chosen)):
            rest = [j for t, j in enumerate(chosen) if t != slot]
            base = s[rest].sum(axis=0) if rest else np.zeros(s.shape[1])
            value = np.minimum(base[None, :] + s, k).sum(axis=1) + eps * share
            value = np.where(valid, value, -np.inf)
            value[rest] = -np.inf
            best = int(np.argmax(value))
            if value[best] > value[chosen[slot]] + 1e-9:
                chosen[slot] = best
                improved = True
        if not improved:
            break
    return chosen


# ------------------------------------------------------------------------------------------ candidates


def _elevated_directions(n: int, rng: np.random.Generator, z_lo: float, z_hi: float) -> np.ndarray:
    z = rng.uniform(z_lo, z_hi, size=n)
    phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


def object_spheres(model: SceneModel) -> tuple[np.ndarray, np.ndarray]:
    """Centres [O, 3] and bounding radii [O] of the content objects' world boxes."""
    b = model.boxes[model.content]
    lo, hi = b.min(axis=1), b.max(axis=1)
    return (lo + hi) / 2.0, np.maximum(np.linalg.norm(hi - lo, axis=1) / 2.0, 1e-6)


@dataclass
class _Candidates:
    poses: list = field(default_factory=list)
    targets: list = field(default_factory=list)

    def add(self, eye, target) -> None:
        if np.linalg.norm(np.asarray(eye) - np.asarray(target)) > 0:
            self.poses.append(look_at(eye, target))
            self.targets.append(np.asarray(target, dtype=np.float64))

    def array(self) -> np.ndarray:
        return np.stack(self.poses) if self.poses else np.zeros((0, 4, 4))


def _inside_box(p: np.ndarray, box: np.ndarray | None) -> bool:
    return box is None or bool(np.all(p >= box[0]) and np.all(p <= box[1]))


def group_spheres(model: SceneModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres [G, 3], radii [G] and object counts [G] of the content's groups (strict :func:`clusters`)."""
    b = model.boxes[model.content]
    labels = clusters(b, strict=True)
    centres, radii, counts = [], [], []
    for g in range(int(labels.max(initial=-1)) + 1):
        pts = b[labels == g].reshape(-1, 3)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        centres.append((lo + hi) / 2.0)
        radii.append(max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-6))
        counts.append(int((labels == g).sum()))
    return np.array(centres).reshape(-1, 3), np.array(radii), np.array(counts)


def generate_candidates(cast: CastFn, model: SceneModel, count: int, rng: np.random.Generator, fov: float,
                        width: int, height: int, clearance: float, room: np.ndarray | None,
                        settings: PlacementSettings) -> _Candidates:
    """About ``count`` candidate poses: around each group of content objects (two distances), around each
    content object (three distances), and (in a room) at free positions at several heights looking at
    objects. Every camera is pulled in front of whatever blocks its line of sight; in a room it must lie
    inside ``room`` (the inner box)."""
    out = _Candidates()
    centres, radii = object_spheres(model)
    ids = model.content_ids
    n_obj = len(ids)
    if n_obj == 0:
        return out
    g_centres, g_radii, g_counts = group_spheres(model)
    for g in np.flatnonzero(g_counts > 1):  # around each group, at two distances
        n_g = max(4, int(count // 4 * g_counts[g] / n_obj))
        d = fit_distance(float(g_radii[g]), fov, width, height, 0.1)
        for k, direction in enumerate(_elevated_directions(n_g, rng, 0.05, 0.95)):
            eye = g_centres[g] + d * (1.0 if k % 2 == 0 else 0.7) * direction
            if room is not None:
                eye = np.clip(eye, room[0], room[1])
            eye = pull_in(cast, eye, g_centres[g], -1, clearance, 2 * clearance)
            if eye is not None and _inside_box(eye, room):
                out.add(eye, g_centres[g])
    per_object = max(2, (count - len(out.poses)) // (n_obj * (2 if room is not None else 1)))
    scales = (1.6, 2.6, 4.0)
    for j in range(n_obj):
        dirs = _elevated_directions(per_object, rng, -0.1 if room is not None else 0.05, 0.85)
        for k, direction in enumerate(dirs):
            d = fit_distance(radii[j], fov, width, height, 0.1) * scales[k % len(scales)]
            eye = centres[j] + d * direction
            if room is not None:
                eye = np.clip(eye, room[0], room[1])
            eye = pull_in(cast, eye, centres[j], int(ids[j]), clearance, max(2 * clearance, radii[j]))
            if eye is not None and _inside_box(eye, room):
                out.add(eye, centres[j])
    if room is not None:  # free positions at several heights, each looking at an object
        lo, hi = room
        n_free = max(count - len(out.poses), count // 2)
        for k in range(n_free):
            j = int(rng.integers(n_obj))
            h = settings.heights[k % len(settings.heights)]
            eye = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1]), lo[2] + h * (hi[2] - lo[2])])
            target = centres[j]
            eye = pull_in(cast, eye, target, int(ids[j]), clearance, max(2 * clearance, radii[j]))
            if eye is not None and _inside_box(eye, room):
                out.add(eye, target)
    return out


# ------------------------------------------------------------------------------------------ the plan


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
    if room is not None and not all(_inside_box(p[:3, 3], room) for p in turned):
        return False, 0.0
    if not len(turned):
        return True, 1.0
    s = score_poses(cast, turned, K, width, height, model, obstacle, max(8, settings.grid // 2))
    ok = bool(np.all(s.obstacle <= settings.max_obstacle_share) & np.all(s.backface <= 0.5)
              & np.all(s.share >= settings.min_content_share))
    return ok, float(s.share.min())


def focus_candidates(out: _Candidates, cast: CastFn, centre: np.ndarray, radius: float, count: int,
                     rng: np.random.Generator, fov: float, width: int, height: int, clearance: float,
                     room: np.ndarray | None, settings: PlacementSettings) -> None:
    """Add ``count`` candidates looking at ``centre``: in a room from free positions at several heights,
    else from around it (the distance at which ``radius`` fits, and 0.7 of it)."""
    d = fit_distance(radius, fov, width, height, 0.1)
    dirs = _elevated_directions(count, rng, 0.05, 0.95)
    for k in range(count):
        if room is not None:
            lo, hi = room
            h = settings.heights[k % len(settings.heights)]
            eye = np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1]), lo[2] + h * (hi[2] - lo[2])])
        else:
            eye = centre + d * (1.0 if k % 2 == 0 else 0.7) * dirs[k]
        eye = pull_in(cast, eye, centre, -1, clearance, 2 * clearance)
        if eye is not None and _inside_box(eye, room):
            out.add(eye, centre)


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
        poses = {s: orbit_poses(n, frame_centre, d, seed, streams[s], hemisphere) for s, n in counts.items() if n > 0}
        return Placement(poses=poses, used="orbit", centre=np.asarray(frame_centre, dtype=np.float64), enclosure=share)

    groups = clusters(model.boxes[model.content])
    g_centres, g_radii, _ = group_spheres(model)
    main_centre, main_radius = g_centres[0], float(g_radii[0])
    clearance = settings.obstacle_distance * main_radius
    room = None
    if used == "inside":
        size = hits.max(axis=0) - hits.min(axis=0)
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
