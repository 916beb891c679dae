"""Segment Scene: render views of the open scene (the dataset tools' code), submit them to the job server.

Rendering runs on the main thread (bpy cannot render elsewhere); everything after the submit runs in
the client thread, followed by :func:`blender_addon.runtime.pump` on a timer.
"""

from __future__ import annotations

import bpy
from bpy.props import IntProperty, StringProperty

from .. import jobstate, runtime
from .. import protocol as P
from ..dataset_tools.config import RenderConfig
from ..dataset_tools.errors import DatasetError
from ..messages import SegmentOptions, build_submit
from ..preferences import client_config, get_preferences


def render_config(prefs, views: int = 0, resolution: int = 0, samples: int = 0, engine: str = "") -> RenderConfig:
    """The render of Segment Scene: ``views`` orbit views at ``resolution``² (0 / "" = preferences)."""
    res = resolution or prefs.resolution
    return RenderConfig(n_train=views or prefs.views, n_val=0, n_test=0, width=res, height=res,
                        samples=samples or prefs.samples, engine=engine or prefs.engine, rotations=())


class USEG_OT_segment_scene(bpy.types.Operator):
    """Render views of this scene and send them to the segmentation server; the result arrives as a coloured point cloud"""

    bl_idname = "useg.segment_scene"
    bl_label = "Segment Scene"
    bl_options = {"REGISTER"}

    views: IntProperty(name="Views", default=0, min=0, max=2000, description="0: from the preferences")
    resolution: IntProperty(name="Resolution", default=0, min=0, max=4096, description="0: from the preferences")
    samples: IntProperty(name="Samples", default=0, min=0, max=4096, description="0: from the preferences")
    engine: StringProperty(name="Engine", default="", description="cycles or workbench; empty: from the preferences")
    iterations: IntProperty(name="Iterations", default=0, min=0, description="Training iterations; 0: the preset's")

    @classmethod
    def poll(cls, context):
        if runtime.SESSION.busy:
            cls.poll_message_set("A segmentation job is running (Cancel it first)")
            return False
        if context.scene is None or not any(o.type in {"MESH", "CURVE", "SURFACE", "META", "FONT", "EMPTY"}
                                            for o in context.scene.objects):
            cls.poll_message_set("The scene has nothing to segment")
            return False
        return True

    def execute(self, context):
        scene = context.scene
        prefs = get_preferences(context)
        try:
            config = render_config(prefs, self.views, self.resolution, self.samples, self.engine)
            config.validate()
            options = SegmentOptions(preset=prefs.preset, mask_source=prefs.mask_source,
                                     max_points=prefs.max_points, iterations=self.iterations or None)
            options.job_options()
        except (DatasetError, P.ProtocolError) as e:
            self.report({"ERROR"}, f"Invalid settings: {e}")
            return {"CANCELLED"}
        from ..dataset_tools.render import render_views

        state = jobstate.start_rendering(runtime.SESSION.state, config.n_train)
        runtime.set_state(scene, state)
        wm = context.window_manager
        wm.progress_begin(0, config.n_train)

        def progress(done: int, total: int, _what: str) -> None:
            runtime.set_state(scene, jobstate.render_progress(runtime.SESSION.state, done, total))
            wm.progress_update(done)

        try:
            views = render_views(scene, config, progress=progress)
            submit = build_submit(views.rgba, views.c2w, views.K, views.depth, options)
        except (DatasetError, P.ProtocolError, RuntimeError, OSError) as e:
            runtime.set_state(scene, jobstate.fail(runtime.SESSION.state, "render_failed", str(e)))
            self.report({"ERROR"}, f"Rendering the views failed: {e}")
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        runtime.start(scene, submit, client_config(prefs))
        self.report({"INFO"}, f"Rendered {config.n_train} views; sending them to {prefs.server_address}")
        return {"FINISHED"}
