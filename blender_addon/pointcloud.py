"""Point-cloud data blocks made without operators, so the import works headless and from a timer in the UI
(``bpy.ops.object.convert`` needs an active, selected object in a view layer and, before Blender 5.0, the
experimental "new point cloud type").

Two ways, chosen by what this Blender's Python API has (checked on bpy 4.2.23, 4.5.15, 5.0.1, 5.1.2, 5.2.4
and 5.3.0):

- ``PointCloud.resize`` (Blender 5.1 and later; absent in 4.2, 4.5 and 5.0): ``bpy.data.pointclouds.new``
  sized at once;
- otherwise (4.2 LTS to 5.0): a Geometry Nodes *Mesh to Points* evaluated once on a temporary vertex-only
  mesh in a temporary scene (``ViewLayer.update`` evaluates it without a context); the evaluated point cloud
  is copied into ``bpy.data`` and every temporary data block removed again. The copy keeps the vertices'
  order and exact positions.

Either way the result is a ``PointCloud`` with ``position`` and ``radius`` point attributes; callers add
their own attributes to it.
"""

from __future__ import annotations

import numpy as np

import bpy


class PointCloudUnavailable(RuntimeError):
    """This Blender can make no point-cloud data block."""


def has_direct_api() -> bool:
    """True when point clouds can be sized directly (``PointCloud.resize``)."""
    return "resize" in bpy.types.PointCloud.bl_rna.functions


def new_point_cloud(name: str, points: np.ndarray, radius: float, direct: bool | None = None):
    """A new ``PointCloud`` data block ``name`` (no users) with ``points`` float [N, 3] and one ``radius``.

    ``direct``: force one way (tests); None picks :func:`has_direct_api`.
    """
    points = np.ascontiguousarray(points, np.float32).reshape(-1, 3)
    use_direct = has_direct_api() if direct is None else direct
    pc = _direct(name, points.shape[0]) if use_direct else _via_geometry_nodes(name, points)
    pc.attributes["position"].data.foreach_set("vector", points.ravel())
    rad = pc.attributes.get("radius")
    if rad is None:
        rad = pc.attributes.new("radius", "FLOAT", "POINT")
    rad.data.foreach_set("value", np.full(points.shape[0], radius, np.float32))
    for hidden in (".select_vert", ".selection"):  # selection carried over from the mesh: none chosen
        attr = pc.attributes.get(hidden)
        if attr is not None:
            pc.attributes.remove(attr)
    pc.update_tag()
    return pc


def _direct(name: str, n: int):
    pc = bpy.data.pointclouds.new(name)
    pc.resize(n)
    return pc


def _via_geometry_nodes(name: str, points: np.ndarray):
    mesh = bpy.data.meshes.new(name + ".tmp")
    tree = scene = obj = None
    try:
        mesh.vertices.add(points.shape[0])
        mesh.attributes["position"].data.foreach_set("vector", points.ravel())
        obj = bpy.data.objects.new(name + ".tmp", mesh)
        tree = _mesh_to_points_tree(name + ".tmp")
        obj.modifiers.new("to_points", "NODES").node_group = tree
        scene = bpy.data.scenes.new(name + ".tmp")
        scene.collection.objects.link(obj)
        layer = scene.view_layers[0]
        layer.update()  # makes and evaluates the new scene's depsgraph; needs no context
        depsgraph = layer.depsgraph
        evaluated = [inst.object.data for inst in depsgraph.object_instances if inst.object.type == "POINTCLOUD"]
        if len(evaluated) != 1 or len(evaluated[0].points) != points.shape[0]:
            raise PointCloudUnavailable(f"Mesh to Points gave {[len(e.points) for e in evaluated]} points, "
                                        f"not {points.shape[0]}")
        pc = evaluated[0].copy()
        pc.name = name
        return pc
    finally:
        if obj is not None:
            bpy.data.objects.remove(obj)
        if scene is not None:
            bpy.data.scenes.remove(scene)
        if tree is not None:
            bpy.data.node_groups.remove(tree)
        bpy.data.meshes.remove(mesh)


def _mesh_to_points_tree(name: str):
    tree = bpy.data.node_groups.new(name, "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    source, sink = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")
    to_points = tree.nodes.new("GeometryNodeMeshToPoints")
    tree.links.new(source.outputs[0], to_points.inputs["Mesh"])
    tree.links.new(to_points.outputs["Points"], sink.inputs[0])
    return tree
