"""Render Blender-HS dataset: the open scene to a folder, exactly as the ``dataset-tools`` CLI does.

From the UI the operator is modal like Segment Scene: it renders ONE view per timer event
(:func:`dataset_tools.dataset.render_dataset_steps`), so Blender redraws, shows progress and takes clicks
between views; Esc or the panel's Cancel stops it and restores the scene (the folder keeps the finished
views; rendering again resumes there). From scripts and headless sessions ``execute`` renders everything.

The dataset tools write PNG/TIFF/NPY with their own dependency-free writers, so tifffile and Pillow
(absent inside Blender) are not needed.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from .. import jobstate, runtime
from . import modal
from dataset_tools.config import DEFAULT_ROTATIONS, RenderConfig
from dataset_tools.errors import DatasetError
from ..preferences import OPERATOR_ENGINE_ITEMS, get_preferences, operator_engine
from ..properties import PATH_OPTIONS, state_of


class USEG_OT_render_dataset(bpy.types.Operator):
    """Render a Blender-HS dataset (views, depth, ground-truth segmentation, hierarchy) of this scene to a folder"""

    bl_idname = "useg.render_dataset"
    bl_label = "Render Blender-HS Dataset"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="", options=PATH_OPTIONS,
                              description="Output folder; empty: the scene's Dataset Folder")
    n_train: IntProperty(name="Train Views", default=100, min=0, max=10000)
    n_val: IntProperty(name="Val Views", default=10, min=0, max=10000)
    n_test: IntProperty(name="Test Views", default=0, min=0, max=10000)
    resolution: IntProperty(name="Resolution", default=0, min=0, max=16384, description="0: from the preferences")
    samples: IntProperty(name="Samples", default=0, min=0, max=4096, description="0: from the preferences")
    engine: EnumProperty(name="Engine", items=OPERATOR_ENGINE_ITEMS, default="PREFERENCES")
    rotations: BoolProperty(name="Rotated Val Views", default=True,
                            description="Also render each val view turned by 10, 45, 90 and 135 degrees")

    @classmethod
    def poll(cls, context):
        if runtime.SESSION.busy:
            cls.poll_message_set("A job is running (Cancel it first)")
            return False
        if context.scene is None:
            return False
        if not context.scene.objects:
            cls.poll_message_set("The scene is empty")
            return False
        return True

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    # -- shared by execute and modal ---------------------------------------------------------------

    def _begin(self, context) -> bool:
        """Check the settings and create the step generator; reports and returns False when invalid."""
        from dataset_tools.dataset import render_dataset_steps

        prefs = get_preferences(context)
        folder = self.directory or state_of(context.scene).dataset_dir
        if not folder:
            self.report({"ERROR"}, "Choose an output folder")
            return False
        if folder.startswith("//") and not bpy.data.filepath:
            self.report({"ERROR"}, "Save the .blend first or choose an absolute folder (the path is relative)")
            return False
        self._out = Path(bpy.path.abspath(folder))
        res = self.resolution or prefs.resolution
        config = RenderConfig(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, width=res, height=res,
                              samples=self.samples or prefs.samples, engine=operator_engine(self.engine, prefs),
                              rotations=DEFAULT_ROTATIONS if self.rotations else ())
        try:
            config.validate()
        except DatasetError as e:
            self.report({"ERROR"}, f"Invalid settings: {e}")
            return False
        self._scene = context.scene
        total = config.n_train + config.n_val * (1 + 2 * len(config.rotations)) + config.n_test
        state = jobstate.start_rendering(runtime.SESSION.state, total)
        runtime.set_state(self._scene, jobstate.transition(state, jobstate.Phase.RENDERING, stage="dataset",
                                                           message=f"rendering the dataset to {self._out}"))
        self._steps = render_dataset_steps(self._out, config, context.scene)
        return True

    def _step(self) -> bool:
        """Render one view (or one visibility pair); True when all are done (``self._result`` then holds the
        summary)."""
        try:
            done, total, what = next(self._steps)
        except StopIteration as stop:
            self._result = stop.value
            return True
        state = jobstate.render_progress(runtime.SESSION.state, done, total)
        runtime.set_state(self._scene, jobstate.transition(state, jobstate.Phase.RENDERING,
                                                           message=f"dataset {done}/{total}: {what}"))
        return False

    def _fail(self, error: Exception) -> set[str]:
        text = f"cannot write {self._out}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
        runtime.set_state(self._scene, jobstate.fail(runtime.SESSION.state, "render_failed", text))
        self.report({"ERROR"}, f"Dataset render failed: {text}")
        return {"CANCELLED"}

    def _finish(self) -> set[str]:
        r = self._result
        message = f"Wrote the Blender-HS dataset to {self._out} ({r.seconds:.1f} s)"
        runtime.set_state(self._scene, jobstate.JobState(message=message))
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def execute(self, context):
        """The dialog's OK: modal in the UI; all at once in background sessions (no event loop)."""
        if not bpy.app.background and context.window is not None:
            return self._run_modal(context)
        return self._render_all(context)

    # -- background: all at once -------------------------------------------------------------------

    def _render_all(self, context):
        if not self._begin(context):
            return {"CANCELLED"}
        wm = context.window_manager
        wm.progress_begin(0, 1000)
        try:
            while not self._step():
                wm.progress_update(int(10 * runtime.SESSION.state.percent))
        except (DatasetError, RuntimeError, OSError) as e:
            return self._fail(e)
        finally:
            wm.progress_end()
        return self._finish()

    # -- the UI: modal, one view per timer event ---------------------------------------------------

    def _run_modal(self, context):
        if not self._begin(context):
            return {"CANCELLED"}
        return modal.start(self, context)

    def _end_modal(self, context) -> None:
        modal.end(self, context)

    def modal(self, context, event):
        cancelled = runtime.SESSION.state.phase == jobstate.Phase.CANCELLED
        if event.type == "ESC" or cancelled:
            self._steps.close()  # restores the scene; the finished views stay (a new render resumes)
            if not cancelled:
                runtime.set_state(self._scene, jobstate.request_cancel(runtime.SESSION.state))
            self._end_modal(context)
            self.report({"WARNING"}, f"Dataset render cancelled; {self._out} keeps the finished views")
            return {"CANCELLED"}
        if not modal.is_own_tick(self, event):
            return {"PASS_THROUGH"}
        try:
            finished = self._step()
        except (DatasetError, RuntimeError, OSError) as e:
            self._end_modal(context)
            return self._fail(e)
        if not finished:
            return {"RUNNING_MODAL"}
        self._end_modal(context)
        return self._finish()

