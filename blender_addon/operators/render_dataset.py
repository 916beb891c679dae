"""Render Blender-HS dataset: the open scene to a folder, exactly as the ``dataset-tools`` CLI does.

The dataset tools write PNG/TIFF/NPY with their own dependency-free writers, so tifffile and Pillow
(absent inside Blender) are not needed.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from dataset_tools.config import DEFAULT_ROTATIONS, RenderConfig
from dataset_tools.errors import DatasetError
from ..preferences import get_preferences
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
    engine: StringProperty(name="Engine", default="", description="cycles or workbench; empty: from the preferences")
    rotations: BoolProperty(name="Rotated Val Views", default=True,
                            description="Also render each val view turned by 10, 45, 90 and 135 degrees")

    @classmethod
    def poll(cls, context):
        if context.scene is None:
            return False
        if not context.scene.objects:
            cls.poll_message_set("The scene is empty")
            return False
        return True

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        prefs = get_preferences(context)
        folder = self.directory or state_of(context.scene).dataset_dir
        if not folder:
            self.report({"ERROR"}, "Choose an output folder")
            return {"CANCELLED"}
        out = Path(bpy.path.abspath(folder))
        if folder.startswith("//") and not bpy.data.filepath:
            self.report({"ERROR"}, "Save the .blend first or choose an absolute folder (the path is relative)")
            return {"CANCELLED"}
        res = self.resolution or prefs.resolution
        config = RenderConfig(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, width=res, height=res,
                              samples=self.samples or prefs.samples, engine=self.engine or prefs.engine,
                              rotations=DEFAULT_ROTATIONS if self.rotations else ())
        from dataset_tools.dataset import render_dataset_from_open_scene

        wm = context.window_manager
        wm.progress_begin(0, 1000)

        def progress(done: int, total: int, _what: str) -> None:
            wm.progress_update(int(1000 * done / max(total, 1)))

        try:
            result = render_dataset_from_open_scene(out, config, context.scene, progress)
        except DatasetError as e:
            self.report({"ERROR"}, f"Dataset render failed: {e}")
            return {"CANCELLED"}
        except OSError as e:
            self.report({"ERROR"}, f"Dataset render failed: cannot write {out}: {e.strerror or e}")
            return {"CANCELLED"}
        finally:
            wm.progress_end()
        self.report({"INFO"}, f"Wrote the Blender-HS dataset to {out} ({result.seconds:.1f} s)")
        return {"FINISHED"}
