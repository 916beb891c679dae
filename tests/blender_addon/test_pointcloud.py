"""blender_addon.pointcloud: point clouds made without operators, both ways (``PointCloud.resize`` where the
API has it, Geometry Nodes on older Blenders), keep every point in order and leave no temporary data."""

from __future__ import annotations

import numpy as np
import pytest


def _ways():
    import bpy

    from blender_addon.pointcloud import has_direct_api

    yield pytest.param(False, id="geometry-nodes")
    yield pytest.param(True, id="direct", marks=pytest.mark.skipif(
        not has_direct_api(), reason=f"bpy {bpy.app.version_string} has no PointCloud.resize"))


def _counts(bpy) -> dict[str, int]:
    return {k: len(getattr(bpy.data, k)) for k in ("meshes", "objects", "scenes", "node_groups", "pointclouds")}


@pytest.mark.parametrize("direct", list(_ways()))
def test_new_point_cloud_keeps_points_in_order_and_no_temporaries(direct):
    import bpy

    from blender_addon.pointcloud import new_point_cloud

    points = np.random.default_rng(1).normal(size=(5000, 3)).astype(np.float32) * 7.3
    before = _counts(bpy)
    with bpy.context.temp_override(scene=None, view_layer=None):  # no context needed (timers, headless)
        assert bpy.context.scene is None
        pc = new_point_cloud("pc_test", points, radius=0.125, direct=direct)
    try:
        assert pc.name == "pc_test" and not pc.is_evaluated and len(pc.points) == 5000
        pos = np.empty(points.size, np.float32)
        pc.attributes["position"].data.foreach_get("vector", pos)
        assert np.array_equal(pos.reshape(-1, 3), points)  # exact and in order
        rad = np.empty(5000, np.float32)
        pc.attributes["radius"].data.foreach_get("value", rad)
        assert np.all(rad == np.float32(0.125))
        assert not any(a.name.startswith(".select") for a in pc.attributes)
        after = _counts(bpy)
        assert after == dict(before, pointclouds=before["pointclouds"] + 1), (before, after)
    finally:
        bpy.data.pointclouds.remove(pc)


def test_create_point_cloud_object_with_attributes():
    import bpy

    from blender_addon import importer

    scene = bpy.context.scene
    n = 300
    rng = np.random.default_rng(2)
    points = rng.random((n, 3), dtype=np.float32)
    colours = rng.random((n, 4), dtype=np.float32)
    labels = rng.integers(0, 9, n).astype(np.int32)
    obj = importer.create_point_cloud(scene, "pc_object", points, colours, int_attrs={"segment": labels},
                                      colour_attrs={"rgb": colours[::-1].copy()})
    try:
        assert obj.type == "POINTCLOUD" and obj.name in importer.segmentation_collection(scene).objects
        np.testing.assert_array_equal(importer.read_attribute(obj, "position"), points)
        np.testing.assert_array_equal(importer.read_attribute(obj, "segment"), labels)
        np.testing.assert_array_equal(importer.read_attribute(obj, "segment_colour"), colours)
        np.testing.assert_array_equal(importer.read_attribute(obj, "rgb"), colours[::-1])
        assert obj.data.attributes["segment_colour"].data_type == "FLOAT_COLOR"
        assert obj.data.materials[0].name == importer.MATERIAL_NAME
    finally:
        data = obj.data
        bpy.data.objects.remove(obj)
        bpy.data.pointclouds.remove(data)
