"""Check that the job server answers (the answer arrives as a report)."""

from __future__ import annotations

import bpy

from .. import runtime
from ..client import network_refusal
from ..preferences import client_config, get_preferences


class USEG_OT_ping_server(bpy.types.Operator):
    """Check that the segmentation server at the preferences' address answers"""

    bl_idname = "useg.ping_server"
    bl_label = "Check Server"

    @classmethod
    def poll(cls, context):
        return True

    def execute(self, context):
        prefs = get_preferences(context)
        refusal = network_refusal(prefs.server_address, bool(getattr(bpy.app, "online_access", True)))
        if refusal is not None:
            self.report({"ERROR"}, refusal)
            return {"CANCELLED"}
        runtime.ping(client_config(prefs))
        self.report({"INFO"}, f"Contacting {prefs.server_address}")
        return {"FINISHED"}
