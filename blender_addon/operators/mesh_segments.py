"""The result on the scene's meshes: Segments to Meshes (face attributes from the nearest cloud points at the
current granularity) and Separate Mesh by Segment."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from .. import importer, mesh_segments, runtime
from ..properties import state_of
from .separate_segments import OnResult


def target_meshes(context, result) -> list:
    """The selected meshes, else every visible mesh of the scene outside the "Segmentation" collection."""
    seg = bpy.data.collections.get(importer.COLLECTION_NAME)
    own = set(seg.all_objects) if seg is not None else set()
    selected = [o for o in context.selected_objects if o.type == "MESH" and o not in own]
    if selected:
        return selected
    return [o for o in context.scene.objects if o.type == "MESH" and o not in own and o.visible_get()]


class USEG_OT_transfer_segments(OnResult, bpy.types.Operator):
    """Give each face of the selected meshes (none selected: all visible meshes) the segment of its nearest
    result points at the current granularity (face attributes segment and segment_colour)"""

    bl_idname = "useg.transfer_segments"
    bl_label = "Segments to Meshes"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        found = self.current_cut(context)
        if found is None:
            return {"CANCELLED"}
        obj, _, c = found
        meshes = target_meshes(context, obj)
        if not meshes:
            self.report({"ERROR"}, "No mesh to transfer the segments to")
            return {"CANCELLED"}
        props = state_of(context.scene)
        from backend.wire.tree_cut import point_colours

        radius = float(importer.read_attribute(obj, "radius")[0])
        points = importer.read_attribute(obj, "position").astype("float64")
        m = obj.matrix_world
        if not m.is_identity:
            import numpy as np

            mw = np.array(m, np.float64)
            points = points @ mw[:3, :3].T + mw[:3, 3]
        done = mesh_segments.transfer(meshes, points, c.labels, point_colours(c, props.coloured_segments),
                                      reach=8.0 * radius)
        text = (f"Segments of {c.n_segments} at this granularity on {len(done)} meshes "
                f"({sum(done.values())} faces labelled)")
        self.report({"INFO"}, text)
        runtime.SESSION.reports.append(("INFO", text))
        return {"FINISHED"}


class USEG_OT_separate_mesh(bpy.types.Operator):
    """Split the active mesh into one object per segment of its faces (Segments to Meshes first)"""

    bl_idname = "useg.separate_mesh"
    bl_label = "Separate Mesh by Segment"
    bl_options = {"REGISTER", "UNDO"}

    min_faces: IntProperty(name="Min Faces", default=10, min=1, description="Smaller segments join the rest")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or obj.data.attributes.get(importer.SEGMENT_ATTR) is None:
            cls.poll_message_set("Make a mesh with face segments active (Segments to Meshes first)")
            return False
        return True

    def execute(self, context):
        try:
            made, skipped = mesh_segments.separate_by_segment(context.scene, context.active_object, self.min_faces)
        except ValueError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        text = f"Made {len(made)} meshes" + (f"; {skipped} segments under {self.min_faces} faces joined the rest"
                                             if skipped else "")
        self.report({"INFO"}, text)
        runtime.SESSION.reports.append(("INFO", text))
        return {"FINISHED"}
