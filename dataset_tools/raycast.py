"""Ray casts against the rendered objects (bpy edge of :mod:`dataset_tools.placement`).

:func:`scene_caster` builds one BVH tree (``mathutils.bvhtree.BVHTree``) from the evaluated, world-space
triangles of the given objects and returns a cast function ``(origins [N, 3], dirs [N, 3]) -> (ids, dist,
backface)``: the leaf id of the first surface hit (0 = nothing, distance inf) and whether its face points
away from the ray (the ray starts inside or behind that object).
"""

from __future__ import annotations

import math

import numpy as np

from .view_scoring import CastFn


def _triangles(obj, depsgraph) -> tuple[np.ndarray, np.ndarray]:
    """World vertices [V, 3] and triangles [T, 3] of an object's evaluated geometry (empty when it has none)."""
    ev = obj.evaluated_get(depsgraph)
    try:
        mesh = ev.to_mesh()
    except RuntimeError:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    if mesh is None:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    try:
        mesh.calc_loop_triangles()
        v = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", v)
        t = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", t)
        mw = np.array(ev.matrix_world, dtype=np.float64)
    finally:
        ev.to_mesh_clear()
    v = v.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
    return v, t.reshape(-1, 3)


def scene_caster(objects_by_id: dict[int, object], depsgraph, only: set[int] | None = None,
                 max_distance: float | None = None) -> CastFn:
    """A cast function over ``objects_by_id`` (leaf id -> object), or over the ids in ``only``."""
    from mathutils.bvhtree import BVHTree

    verts, tris, owner = [], [], []
    offset = 0
    for node_id, obj in objects_by_id.items():
        if only is not None and node_id not in only:
            continue
        v, t = _triangles(obj, depsgraph)
        if len(t) == 0:
            continue
        verts.append(v)
        tris.append(t + offset)
        owner.append(np.full(len(t), node_id, dtype=np.int64))
        offset += len(v)
    if not tris:
        def nothing(origins: np.ndarray, dirs: np.ndarray):
            n = len(origins)
            return np.zeros(n, dtype=np.int64), np.full(n, np.inf), np.zeros(n, dtype=bool)
        return nothing
    all_v, all_t = np.concatenate(verts), np.concatenate(tris)
    owners = np.concatenate(owner)
    tree = BVHTree.FromPolygons(all_v.tolist(), all_t.tolist(), all_triangles=True)
    span = float(np.linalg.norm(all_v.max(axis=0) - all_v.min(axis=0)))
    limit = float(max_distance) if max_distance is not None else max(10.0 * span, 1.0) * 10.0
    ray_cast = tree.ray_cast

    def cast(origins: np.ndarray, dirs: np.ndarray):
        o = np.asarray(origins, dtype=np.float64).tolist()
        d = np.asarray(dirs, dtype=np.float64).tolist()
        n = len(o)
        ids = np.zeros(n, dtype=np.int64)
        dist = np.full(n, math.inf)
        back = np.zeros(n, dtype=bool)
        for k, (a, b) in enumerate(zip(o, d)):
            loc, normal, index, distance = ray_cast(a, b, limit)
            if index is not None:
                ids[k] = owners[index]
                dist[k] = distance
                back[k] = (normal[0] * b[0] + normal[1] * b[1] + normal[2] * b[2]) > 0.0
        return ids, dist, back

    return cast
