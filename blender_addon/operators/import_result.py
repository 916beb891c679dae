"""Import a saved result (``result.npz`` written by ``backend submit --out``) as a segmented point cloud."""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from .. import runtime
from ..importer import ImportFailed
from ..messages import ResultError, load_result_file
from ..properties import PATH_OPTIONS


class USEG_OT_import_result(bpy.types.Operator):
    """Import a segmentation result file (result.npz) as a coloured point cloud"""

    bl_idname = "useg.import_result"
    bl_label = "Import Result"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Result", subtype="FILE_PATH", default="", options=PATH_OPTIONS)
    filter_glob: StringProperty(default="*.npz", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = bpy.path.abspath(self.filepath)
        try:
            result = load_result_file(path)
            cached = runtime.save_result(result, result.job)
            obj = runtime.show_result(context.scene, result, str(cached), name="Segmentation")
        except (ResultError, ImportFailed, OSError, ValueError) as e:
            self.report({"ERROR"}, f"Cannot import {path}: {e}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {result.n_points} points as {obj.name!r}")
        return {"FINISHED"}
