"""Cancel the running segmentation job (before submitting it ends at once; after, the server confirms)."""

from __future__ import annotations

import bpy

from .. import runtime


class USEG_OT_cancel_job(bpy.types.Operator):
    """Cancel the running segmentation job"""

    bl_idname = "useg.cancel_job"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        if not runtime.SESSION.state.active:
            cls.poll_message_set("No segmentation job is running")
            return False
        return True

    def execute(self, context):
        if runtime.cancel():
            self.report({"INFO"}, "Cancelling the segmentation job")
            return {"FINISHED"}
        self.report({"WARNING"}, "No segmentation job is running")
        return {"CANCELLED"}
