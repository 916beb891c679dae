"""Layout only: the "Segment" tab of the 3D viewport sidebar, and the job line in the status bar."""

from __future__ import annotations

import bpy

from . import runtime
from .jobstate import status_text
from .properties import ATTR


class _SidebarPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Segment"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, ATTR)


class USEG_PT_segment(_SidebarPanel, bpy.types.Panel):
    bl_idname = "USEG_PT_segment"
    bl_label = "Ultrametric Segmentation"

    def draw(self, context):
        layout = self.layout
        props = getattr(context.scene, ATTR)
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("useg.segment_scene", icon="RENDER_STILL")
        row.operator("useg.segment_scene", icon="RESTRICT_SELECT_OFF", text="Selected").selected_only = True
        if props.active:
            row.operator("useg.cancel_job", icon="CANCEL", text="")
        settings = layout.column(align=True)
        settings.enabled = not props.active
        settings.prop(props, "preset")
        row = settings.row(align=True)
        row.prop(props, "views")
        row.prop(props, "resolution")
        settings.prop(props, "iterations")
        if props.estimate:
            for chunk in _wrap(props.estimate, 48):
                settings.label(text=chunk)
        if props.phase != "idle":
            col = layout.column(align=True)
            label = props.stage if props.active and props.stage else props.phase
            col.progress(factor=props.progress / 100.0, type="BAR",
                         text=f"{label} {props.progress:.0f}%" + (f" · ETA {props.eta}" if props.eta else ""))
            if props.message:
                col.label(text=props.message)
            if props.active:
                col.operator("useg.cancel_job", icon="CANCEL")
        if props.error:
            box = layout.box()
            box.alert = True
            for i, chunk in enumerate(_wrap(props.error, 48)):
                box.label(text=chunk, icon="ERROR" if i == 0 else "BLANK1")
        layout.operator("useg.ping_server", icon="LINKED")


class USEG_PT_result(_SidebarPanel, bpy.types.Panel):
    bl_idname = "USEG_PT_result"
    bl_label = "Result"
    bl_parent_id = "USEG_PT_segment"

    def draw(self, context):
        layout = self.layout
        props = getattr(context.scene, ATTR)
        layout.prop(props, "result_object", text="")
        col = layout.column()
        col.enabled = props.result_object is not None
        col.prop(props, "granularity", slider=True)
        col.prop(props, "coloured_segments")
        col.label(text=f"{props.segments} segments · threshold {props.threshold:.4g}")
        for i, chunk in enumerate(_wrap(props.levels, 48)):
            col.label(text=chunk, icon="OUTLINER" if i == 0 else "BLANK1")
        col.prop(props, "min_points")
        row = col.row(align=True)
        row.operator("useg.separate_segments", icon="OUTLINER_OB_POINTCLOUD")
        row.operator("useg.select_segment", icon="RESTRICT_SELECT_OFF")
        row = col.row(align=True)
        row.operator("useg.transfer_segments", icon="MOD_DATA_TRANSFER")
        row.operator("useg.separate_mesh", icon="MOD_EXPLODE")
        layout.operator("useg.import_result", icon="IMPORT")


class USEG_PT_dataset(_SidebarPanel, bpy.types.Panel):
    bl_idname = "USEG_PT_dataset"
    bl_label = "Blender-HS Dataset"
    bl_parent_id = "USEG_PT_segment"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        props = getattr(context.scene, ATTR)
        self.layout.prop(props, "dataset_dir", text="")
        self.layout.operator("useg.render_dataset", icon="FILE_FOLDER")


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return lines + ([line] if line else [])


def draw_status(self, context):
    """Appended to the status bar: the job's one-line status while there is one."""
    state = runtime.SESSION.state
    text = status_text(state)
    if not text:
        return
    row = self.layout.row()
    if state.active:
        row.progress(factor=state.progress, type="RING", text="")
    row.label(text=text[:160])


def attach_status_bar() -> None:
    bpy.types.STATUSBAR_HT_header.append(draw_status)


def detach_status_bar() -> None:
    try:
        bpy.types.STATUSBAR_HT_header.remove(draw_status)
    except ValueError:
        pass
