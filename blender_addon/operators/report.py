"""Show a message as an operator report: how the timer (which has no operator) reports to the user."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty


class USEG_OT_report(bpy.types.Operator):
    """Show a message of the segmentation job in the status bar and the Info log"""

    bl_idname = "useg.report"
    bl_label = "Segmentation Report"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=[(k, k.title(), "") for k in ("INFO", "WARNING", "ERROR")], default="INFO")
    message: StringProperty(default="")

    @classmethod
    def poll(cls, context):
        return True

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}
