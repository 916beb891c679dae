"""Separate segments: one point-cloud object per segment of the current granularity."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from .. import importer, runtime
from ..properties import state_of


def result_object(context):
    """The active object when it is a segmentation result, else the scene's result object."""
    obj = context.active_object
    if obj is not None and importer.RESULT_PATH_PROP in obj:
        return obj
    return state_of(context.scene).result_object if context.scene is not None else None


class OnResult:
    """Mixin of the operators that act on an imported result at the current granularity: ``poll`` needs a result
    object, :meth:`current_cut` gives the object, its loaded result and the cut (or reports why not)."""

    @classmethod
    def poll(cls, context):
        if result_object(context) is None:
            cls.poll_message_set("No segmentation result (run Segment Scene or Import Result)")
            return False
        return True

    def current_cut(self, context):
        """``(object, loaded result, cut)`` at the scene's granularity, or None after an error report."""
        obj = result_object(context)
        loaded = runtime.loaded_result(obj)
        if loaded is None:
            self.report({"ERROR"}, f"The result behind {obj.name!r} is no longer available; import it again")
            return None
        granularity = state_of(context.scene).granularity
        return obj, loaded, importer.result_cut(loaded.result, loaded.threshold(granularity))


class USEG_OT_separate_segments(OnResult, bpy.types.Operator):
    """Make one object per segment (the largest ones; the rest go together into one object)"""

    bl_idname = "useg.separate_segments"
    bl_label = "Separate Segments"
    bl_options = {"REGISTER", "UNDO"}

    max_objects: IntProperty(name="Most Objects", default=64, min=1, max=4096,
                             description="Objects for the largest segments; the remaining points form one more")
    min_points: IntProperty(name="Min Points", default=0, min=0, max=10_000_000,
                            description="Skip segments with fewer points (their points join the rest); 0: the "
                                        "panel's Min Points")

    def execute(self, context):
        found = self.current_cut(context)
        if found is None:
            return {"CANCELLED"}
        obj, _, c = found
        props = state_of(context.scene)
        min_points = self.min_points or props.min_points
        made = importer.separate_segments(context.scene, obj, c, self.max_objects, props.coloured_segments,
                                          min_points)
        text = f"Made {len(made.objects)} objects from {c.n_segments} segments"
        if made.skipped:
            text += (f"; skipped {made.skipped} segments under {min_points} points ({made.skipped_points} points, "
                     f"kept together in {obj.name}.rest)")
        self.report({"INFO"}, text)
        runtime.SESSION.reports.append(("INFO", text))
        return {"FINISHED"}
