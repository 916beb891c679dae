"""Candidate camera poses (pure NumPy): around groups of content objects, around each object, and at
free positions inside a room; every camera pulled in front of what blocks its line of sight."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cameras import fit_distance, look_at
from .config import PlacementSettings
from .view_scoring import CastFn, SceneModel, pull_in

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
class Candidates:
    poses: list = field(default_factory=list)
    targets: list = field(default_factory=list)

    def add(self, eye, target) -> None:
        if np.linalg.norm(np.asarray(eye) - np.asarray(target)) > 0:
            self.poses.append(look_at(eye, target))
            self.targets.append(np.asarray(target, dtype=np.float64))

    def array(self) -> np.ndarray:
        return np.stack(self.poses) if self.poses else np.zeros((0, 4, 4))


def in_box(p: np.ndarray, box: np.ndarray | None) -> bool:
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
                        settings: PlacementSettings) -> Candidates:
    """About ``count`` candidate poses: around each group of content objects (two distances), around each
    content object (three distances), and (in a room) at free positions at several heights looking at
    objects. Every camera is pulled in front of whatever blocks its line of sight; in a room it must lie
    inside ``room`` (the inner box)."""
    out = Candidates()
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
            if eye is not None and in_box(eye, room):
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
            if eye is not None and in_box(eye, room):
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
            if eye is not None and in_box(eye, room):
                out.add(eye, target)
    return out


def focus_candidates(out: Candidates, cast: CastFn, centre: np.ndarray, radius: float, count: int,
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
        pulled = pull_in(cast, eye, centre, -1, clearance, 2 * clearance)
        if pulled is not None and in_box(pulled, room):
            out.add(pulled, centre)
