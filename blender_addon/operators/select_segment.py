"""Select segment: select every point of the segment(s) of the selected points, or of the point
nearest to the 3D cursor when no points are selected (edit mode shows the selection)."""

from __future__ import annotations

import bpy
import numpy as np

from .. import importer
from .separate_segments import result_object


class USEG_OT_select_segment(bpy.types.Operator):
    """Select the whole segment of the selected points (or of the point nearest the 3D cursor)"""

    bl_idname = "useg.select_segment"
    bl_label = "Select Segment"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = result_object(context)
        if obj is None or obj.data.attributes.get(importer.SEGMENT_ATTR) is None:
            cls.poll_message_set("No segmentation result")
            return False
        return True

    def execute(self, context):
        obj = result_object(context)
        was_edit = obj.mode == "EDIT"
        if was_edit:
            bpy.ops.object.mode_set(mode="OBJECT")
        labels = importer.read_attribute(obj, importer.SEGMENT_ATTR)
        if labels.size == 0:
            self.report({"WARNING"}, "The result has no points")
            return {"CANCELLED"}
        chosen = importer.selected_points(obj)
        if chosen is None:
            pts = importer.read_attribute(obj, "position")
            cursor = np.array(obj.matrix_world.inverted() @ context.scene.cursor.location, np.float32)
            chosen = np.zeros(labels.size, bool)
            chosen[int(np.argmin(((pts - cursor) ** 2).sum(1)))] = True
        segments = np.unique(labels[chosen])
        mask = np.isin(labels, segments)
        importer.select_segments(obj, mask)
        if was_edit:
            bpy.ops.object.mode_set(mode="EDIT")
        self.report({"INFO"}, f"Selected {int(mask.sum())} points of segment(s) {', '.join(map(str, segments[:8]))}")
        return {"FINISHED"}
