"""The add-on's per-scene state: one PropertyGroup reached as ``scene.ultrametric_seg``.

The job fields are written by :mod:`blender_addon.runtime` (from :class:`jobstate.JobState`); the
panel only displays them. ``granularity`` and ``coloured_segments`` recolour the result object at
once from its tree when changed (no new request).
"""

from __future__ import annotations

from collections.abc import Callable

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from backend.wire import presets

#: Path properties accept "//" (blend-relative) paths; Blender 4.5+ wants this said explicitly.
PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()

#: Name of the pointer on ``bpy.types.Scene``.
ATTR = "ultrametric_seg"


#: Called with the scene when its granularity or coloured-segment count changes. ``register()`` adds
#: ``runtime.recolour_from_properties``; this module imports nothing of the add-on (no import cycle).
ON_GRANULARITY_CHANGE: list[Callable[[bpy.types.Scene], object]] = []


def _recolour(self, context):
    for callback in ON_GRANULARITY_CHANGE:
        callback(context.scene)


class USEG_PG_state(bpy.types.PropertyGroup):
    phase: StringProperty(name="Phase", default="idle", description="Job phase (idle, rendering, ..., done)")
    status: StringProperty(name="Status", default="", description="One-line job status (also in the status bar)")
    message: StringProperty(name="Message", default="", description="Latest message of the job")
    stage: StringProperty(name="Stage", default="", description="The server's current stage")
    eta: StringProperty(name="ETA", default="", description="Estimated time left")
    progress: FloatProperty(name="Progress", default=0.0, min=0.0, max=100.0, subtype="PERCENTAGE",
                            description="Overall job progress")
    job_id: StringProperty(name="Job", default="", description="Id of the current or last job")
    error: StringProperty(name="Error", default="", description="Why the last job failed")
    active: BoolProperty(name="Active", default=False, description="A job is under way")

    result_object: PointerProperty(name="Result", type=bpy.types.Object,
                                   description="The point cloud the granularity slider recolours")
    granularity: FloatProperty(
        name="Granularity", default=0.5, min=0.0, max=1.0, subtype="FACTOR", update=_recolour,
        description="Coarse (1: one segment) to fine (0: every point apart); logarithmic in the segment count")
    coloured_segments: IntProperty(
        name="Coloured Segments", default=64, min=1, max=4096, update=_recolour,
        description="The largest segments get distinct colours; the others are grey")
    threshold: FloatProperty(name="Threshold", default=0.0, description="Tree cut threshold of the granularity")
    segments: IntProperty(name="Segments", default=0, description="Segments at the current granularity")
    levels: StringProperty(name="Levels", default="",
                           description="How the server chose the result's exported levels, and which one opened")

    # Segment Scene's settings for this scene (0 / "From Preferences": the add-on preferences' defaults)
    preset: EnumProperty(
        name="Preset", default="PREFERENCES",
        items=[("PREFERENCES", "From Preferences", "The preset chosen in the add-on preferences (default: from the "
                "server)"),
               (presets.AUTO_PRESET, "From the Server", "The preset that fits the server's device: cpu on a CPU "
                "server, default on a GPU"),
               *[(c.name, c.label, c.description) for c in presets.PRESETS]],
        description="Training preset of Segment Scene")
    views: IntProperty(name="Views", default=0, min=0, max=2000,
                       description="Views rendered around the scene (0: the preferences')")
    resolution: IntProperty(name="Resolution", default=0, min=0, max=4096, subtype="PIXEL",
                            description="Width and height of each view (0: the preferences')")
    iterations: IntProperty(name="Iterations", default=0, min=0, max=1_000_000,
                            description="Training iterations (0: the preset's)")
    estimate: StringProperty(name="Estimate", default="",
                             description="How long the last Segment Scene was expected to take on its server")
    min_points: IntProperty(name="Min Points", default=200, min=1, max=10_000_000,
                            description="Separate Segments skips segments with fewer points than this")

    dataset_dir: StringProperty(name="Dataset Folder", subtype="DIR_PATH", default="//blender_hs", options=PATH_OPTIONS,
                                description="Folder the Blender-HS dataset of this scene is written to")


def attach(on_granularity_change: Callable[[bpy.types.Scene], object]) -> None:
    setattr(bpy.types.Scene, ATTR, PointerProperty(type=USEG_PG_state))
    ON_GRANULARITY_CHANGE[:] = [on_granularity_change]


def detach() -> None:
    ON_GRANULARITY_CHANGE.clear()
    if hasattr(bpy.types.Scene, ATTR):
        delattr(bpy.types.Scene, ATTR)


def state_of(scene) -> USEG_PG_state:
    return getattr(scene, ATTR)
