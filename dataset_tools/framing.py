"""What the cameras frame: the named content, or everything except large flat backdrops (pure NumPy).

Cameras look at the centre of the *framed* content and stand where its bounding sphere fits the view
(:func:`dataset_tools.cameras.fit_distance`). Everything still renders and keeps its ids; framing only
decides where the cameras go.

``RenderConfig.frame`` (``--frame``):

- ``()`` (default): every rendered object except **backdrops**, found from world-space dimensions by
  :func:`backdrop_mask`: an object is a backdrop when it is *flat* (its smallest world-space dimension is
  at most :data:`FLAT_RATIO` of its middle one; dimensions are the edge lengths of its evaluated bounding
  box in world space, rotation and scale included) and *large* (its largest dimension is at least
  :data:`BACKDROP_FACTOR` times the largest side of the world box around all non-flat objects). A 6 m
  floor under a 1 m desk is a backdrop; a table top, a plate or a book is flat but not large. With no
  non-flat object (or when every object would be a backdrop) everything is framed.
  :func:`structure_mask` extends the rule to **enclosing structure** (walls, a ceiling, a floor under a
  room's furniture, a ground) that the size rule misses because the furniture spans the room: a *slab*
  (smallest dimension at most :data:`SLAB_RATIO` of its middle one) whose face area is at least
  :data:`STRUCTURE_AREA_FACTOR` times the largest face of any non-slab object, with at least
  :data:`ONE_SIDED_SHARE` of the non-slab objects on one side of it (a wall has the room on one side; a
  table top has legs below and cups above). An object whose box holds at least :data:`CONTAINER_SHARE` of
  the other objects' centres (a room modelled as one closed box) is structure too.
- ``("*",)``: everything that renders.
- names: the rendered objects at or below each named collection or object of the hierarchy (a collection
  frames its nested collections, an object its child objects and realised instances).
"""

from __future__ import annotations

import difflib

import numpy as np

#: An object is flat when its smallest world-space dimension is at most this fraction of its middle one.
FLAT_RATIO = 0.05

#: A flat object is a backdrop when its largest dimension is at least this many times the largest side
#: of the box around all non-flat objects.
BACKDROP_FACTOR = 3.0

#: A slab: smallest world-space dimension at most this fraction of the middle one (walls 10-20 cm thick).
SLAB_RATIO = 0.1

#: A slab is structure when its face (largest x middle dimension) is at least this many times the largest
#: face of any object that is not a slab ...
STRUCTURE_AREA_FACTOR = 4.0

#: ... and at least this share of the non-slab objects' centres lie on one side of its mid-plane.
ONE_SIDED_SHARE = 0.9

#: An object whose box holds at least this share of the other objects' centres (at least two) is structure.
CONTAINER_SHARE = 0.9

#: ``RenderConfig.frame`` value that frames everything that renders.
FRAME_ALL = "*"


def box_dimensions(corners: np.ndarray) -> np.ndarray:
    """Edge lengths [N, 3] (local x, y, z in world units) of bounding boxes given as world corners [N, 8, 3].

    Corners follow Blender's ``Object.bound_box`` order: corner 0 is (x0, y0, z0), 1 (x0, y0, z1),
    3 (x0, y1, z0) and 4 (x1, y0, z0).
    """
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    return np.stack([np.linalg.norm(c[:, 4] - c[:, 0], axis=-1), np.linalg.norm(c[:, 3] - c[:, 0], axis=-1),
                     np.linalg.norm(c[:, 1] - c[:, 0], axis=-1)], axis=-1)


def aabb(corners: np.ndarray) -> np.ndarray:
    """World-space axis-aligned box [[min xyz], [max xyz]] (float64 [2, 3]) around points [..., 3]."""
    pts = np.asarray(corners, dtype=np.float64).reshape(-1, 3)
    return np.stack([pts.min(axis=0), pts.max(axis=0)])


def backdrop_mask(corners: np.ndarray) -> np.ndarray:
    """Which objects (world bounding-box corners [N, 8, 3]) are large flat backdrops (bool [N]); see the module doc."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    dims = np.sort(box_dimensions(c), axis=1)
    flat = (dims[:, 1] > 0) & (dims[:, 0] <= FLAT_RATIO * dims[:, 1])
    if flat.all() or not flat.any():
        return np.zeros(len(c), dtype=bool)
    content = aabb(c[~flat])
    extent = float((content[1] - content[0]).max())
    if extent <= 0:
        return np.zeros(len(c), dtype=bool)
    return flat & (dims[:, 2] >= BACKDROP_FACTOR * extent)


def _axes(c: np.ndarray) -> np.ndarray:
    """Edge vectors [3, 3] (local x, y, z) of one box's world corners [8, 3] (``bound_box`` order)."""
    return np.stack([c[4] - c[0], c[3] - c[0], c[1] - c[0]])


def structure_mask(corners: np.ndarray) -> np.ndarray:
    """Which objects (world bounding-box corners [N, 8, 3]) are backdrops or enclosing structure (bool [N]).

    :func:`backdrop_mask` (large flat objects), plus large one-sided slabs and containers; see the module doc.
    """
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 8, 3)
    out = backdrop_mask(c)
    if len(c) < 2:
        return out
    dims = box_dimensions(c)
    order = np.argsort(dims, axis=1, kind="stable")
    sd = np.take_along_axis(dims, order, axis=1)
    slab = (sd[:, 1] > 0) & (sd[:, 0] <= SLAB_RATIO * sd[:, 1])
    centres = c.mean(axis=1)
    solid = ~slab
    if solid.any():
        biggest_face = float((sd[solid, 1] * sd[solid, 2]).max())
        for i in np.flatnonzero(slab & (sd[:, 1] * sd[:, 2] >= STRUCTURE_AREA_FACTOR * biggest_face)):
            ax = _axes(c[i])
            normal = np.cross(ax[int(order[i, 1])], ax[int(order[i, 2])])
            if np.linalg.norm(normal) == 0:
                continue
            side = (centres[solid] - centres[i]) @ (normal / np.linalg.norm(normal))
            if max(float((side > 0).mean()), float((side < 0).mean())) >= ONE_SIDED_SHARE:
                out[i] = True
    lo, hi = c.min(axis=1), c.max(axis=1)
    for j in range(len(c)):
        others = np.delete(centres, j, axis=0)
        inside = np.all((others >= lo[j]) & (others <= hi[j]), axis=1)
        if len(others) >= 2 and inside.mean() >= CONTAINER_SHARE:
            out[j] = True
    if out.all():
        return np.zeros(len(c), dtype=bool)
    return out


def named_leaves(nodes: list[dict], names) -> tuple[list[int], list[str]]:
    """Rendered node ids at or below every node named in ``names`` (hierarchy nodes, see ``hierarchy.json``),
    and the names that match no node. The root (named after the scene) frames everything."""
    by_id = {n["id"]: n for n in nodes}
    by_name: dict[str, list[dict]] = {}
    for n in nodes:
        by_name.setdefault(n["name"], []).append(n)
    found: set[int] = set()
    missing: list[str] = []
    for name in names:
        if name not in by_name:
            missing.append(name)
            continue
        stack = [n["id"] for n in by_name[name]]
        while stack:
            node = by_id[stack.pop()]
            if node["rendered"]:
                found.add(node["id"])
            stack.extend(node["children"])
    return sorted(found), missing


def suggestion(name: str, candidates) -> str:
    """`` (did you mean 'X'?)`` for the closest candidate name, or ``""``."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def ngp_box(frame_bounds: np.ndarray, scene_bounds: np.ndarray, margin: float = 0.1) -> dict:
    """instant-ngp's ``aabb`` and ``aabb_scale`` for a transforms file.

    ``aabb`` is the framed content's box grown by ``margin`` on every side; instant-ngp maps the largest
    side of it onto its unit cube, centred. ``aabb_scale`` (a power of two, 1..128) is the smallest one
    whose cube (``aabb_scale`` unit cubes wide, same centre) holds all rendered content (``scene_bounds``),
    so backdrops left out of the framing are still inside the trained volume.
    """
    fb = np.asarray(frame_bounds, dtype=np.float64)
    sb = np.asarray(scene_bounds, dtype=np.float64)
    centre = fb.mean(axis=0)
    half = 0.5 * (fb[1] - fb[0]) * (1.0 + 2.0 * margin)
    side = max(float(2.0 * half.max()), 1e-9)
    need = 2.0 * float(np.max(np.maximum(np.abs(sb[1] - centre), np.abs(sb[0] - centre))))
    scale = 1
    while scale < 128 and scale * side < need * (1.0 - 1e-9):
        scale *= 2
    return {"aabb_scale": scale, "aabb": [(centre - half).tolist(), (centre + half).tolist()]}
