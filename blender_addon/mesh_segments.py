"""The result on the scene's meshes: each face gets the segment of the cloud points nearest to it (at the current
granularity), as face attributes, and a mesh can be split into one object per segment.

Face attributes written: ``segment`` (INT, the segment, -1 where no cloud point is within reach) and
``segment_colour`` (FLOAT_COLOR, its colour; the mesh's active colour attribute, so *Solid > Color > Attribute*
shows it). The vote (:func:`vote`) is NumPy only; the nearest points come from ``mathutils.kdtree``.
"""

from __future__ import annotations

import numpy as np

import bpy

from .importer import COLOUR_ATTR, SEGMENT_ATTR

#: Cloud points asked per face (their majority wins).
NEIGHBOURS = 5


def vote(labels: np.ndarray, distances: np.ndarray, reach: float) -> np.ndarray:
    """int32 [F]: the majority of ``labels`` int [F, K] among neighbours within ``reach`` (ties: the nearer);
    -1 for a face whose nearest neighbour is farther than ``reach``.

    >>> vote(np.array([[3, 1, 1], [2, 2, 5]]), np.array([[0.1, 0.2, 0.2], [9, 9, 9]]), 1.0).tolist()
    [1, -1]
    """
    labels = np.asarray(labels)
    distances = np.asarray(distances, np.float64)
    if labels.shape != distances.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and distances {distances.shape} must be the same [F, K]")
    out = np.full(labels.shape[0], -1, np.int32)
    near = distances <= reach
    for f in np.nonzero(near[:, 0])[0]:
        ls = labels[f][near[f]]
        values, counts = np.unique(ls, return_counts=True)
        best = values[counts == counts.max()]
        out[f] = next(int(x) for x in ls if x in best)  # the nearest of the most frequent
    return out


def face_centres(obj) -> np.ndarray:
    """float64 [F, 3] world-space face centres of a mesh object."""
    mesh = obj.data
    c = np.empty(len(mesh.polygons) * 3, np.float32)
    mesh.polygons.foreach_get("center", c)
    c = c.reshape(-1, 3).astype(np.float64)
    m = np.array(obj.matrix_world, np.float64)
    return c @ m[:3, :3].T + m[:3, 3]


def transfer(objects, points: np.ndarray, labels: np.ndarray, colours: np.ndarray, reach: float) -> dict[str, int]:
    """Write each face's segment to the mesh ``objects`` (face attributes, see the module docstring) from the cloud
    ``points`` [N, 3] with ``labels`` [N] and point ``colours`` [N, 4]; returns faces labelled per object."""
    from mathutils import kdtree

    tree = kdtree.KDTree(len(points))
    for i, p in enumerate(points.tolist()):
        tree.insert(p, i)
    tree.balance()
    done: dict[str, int] = {}
    for obj in objects:
        centres = face_centres(obj)
        f = centres.shape[0]
        idx = np.zeros((f, NEIGHBOURS), np.int64)
        dist = np.full((f, NEIGHBOURS), np.inf)
        for i, c in enumerate(centres.tolist()):
            for j, (_, k, d) in enumerate(tree.find_n(c, NEIGHBOURS)):
                idx[i, j], dist[i, j] = k, d
        seg = vote(np.where(np.isfinite(dist), labels[idx], -1), dist, reach)
        colour = np.full((f, 4), (0.5, 0.5, 0.5, 1.0), np.float32)
        colour[seg >= 0] = colours[idx[seg >= 0, 0]]
        for label in np.unique(seg[seg >= 0]):  # one colour per segment: its points' colour
            pick = np.nonzero(labels == label)[0][:1]
            colour[seg == label] = colours[pick[0]]
        _face_attribute(obj.data, SEGMENT_ATTR, "INT", "value", seg)
        _face_attribute(obj.data, COLOUR_ATTR, "FLOAT_COLOR", "color", colour)
        try:
            obj.data.color_attributes.active_color_name = COLOUR_ATTR  # what Solid > Attribute shows
        except (AttributeError, TypeError):
            pass
        done[obj.name] = int((seg >= 0).sum())
    return done


def _face_attribute(mesh, name: str, kind: str, field: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name)
    if attr is not None and (attr.domain != "FACE" or attr.data_type != kind):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = mesh.attributes.new(name, kind, "FACE")
    attr.data.foreach_set(field, np.ascontiguousarray(values).ravel())
    mesh.update()


def separate_by_segment(scene, obj, min_faces: int = 1) -> tuple[list, int]:
    """One new mesh object per segment of ``obj``'s ``segment`` face attribute with at least ``min_faces`` faces
    (the faces of smaller segments and unlabelled ones go to ``<obj>.rest``), linked beside ``obj``; ``obj`` is
    hidden. Returns (the new objects, segments skipped)."""
    import bmesh

    if obj.type != "MESH" or obj.data.attributes.get(SEGMENT_ATTR) is None:
        raise ValueError(f"{obj.name} has no face segments (transfer the segments to it first)")
    if min_faces < 1:
        raise ValueError(f"min_faces must be >= 1, got {min_faces}")
    seg = np.empty(len(obj.data.polygons), np.int32)
    obj.data.attributes[SEGMENT_ATTR].data.foreach_get("value", seg)
    ids, counts = np.unique(seg[seg >= 0], return_counts=True)
    keep = ids[counts >= min_faces]
    groups = [(f"{obj.name}.segment_{int(s):03d}", seg == s) for s in keep]
    rest = ~np.isin(seg, keep)
    if rest.any():
        groups.append((f"{obj.name}.rest", rest))
    made = []
    collections = list(obj.users_collection) or [scene.collection]
    for name, mask in groups:
        bm = bmesh.new()
        bm.from_mesh(obj.data)
        bm.faces.ensure_lookup_table()
        bmesh.ops.delete(bm, geom=[f for f, m in zip(bm.faces, mask.tolist()) if not m], context="FACES")
        mesh = bpy.data.meshes.new(name)
        bm.to_mesh(mesh)
        bm.free()
        for m in obj.data.materials:
            mesh.materials.append(m)
        part = bpy.data.objects.new(name, mesh)
        part.matrix_world = obj.matrix_world.copy()
        for coll in collections:
            coll.objects.link(part)
        made.append(part)
    if bpy.context.view_layer.objects.get(obj.name) is not None:
        obj.hide_set(True)
    obj.hide_render = True
    return made, int((counts < min_faces).sum())
