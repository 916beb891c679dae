"""Add-on preferences: where the job server is, its keys, and the defaults of a Segment Scene render.

:func:`get_preferences` returns the stored preferences, or :class:`DefaultPreferences` (same fields,
default values) when the add-on is registered without being enabled through Blender's add-on system
(e.g. ``register()`` called directly in a headless test).
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from backend.wire import presets

from .client import DEFAULT_ADDRESS, ClientConfig
from .properties import PATH_OPTIONS

ENGINE_ITEMS = [
    ("cycles", "Cycles", "Path-traced views with exact depth and object ids (slower)"),
    ("workbench", "Workbench", "Flat-shaded fast views (previews, tests)"),
]
#: An operator's engine: the preferences' or one of :data:`ENGINE_ITEMS` (an enum, so no typo can reach a render).
OPERATOR_ENGINE_ITEMS = [("PREFERENCES", "From Preferences", "The engine chosen in the add-on preferences"),
                         *ENGINE_ITEMS]


def operator_engine(choice: str, prefs) -> str:
    """The render engine name for an operator's ``engine`` enum value."""
    return prefs.engine if choice == "PREFERENCES" else choice


#: The shared vocabulary (backend.wire.presets): the same names as `backend train` and the job protocol.
MASK_ITEMS = [(c.name, c.label, c.description) for c in presets.MASK_SOURCES if c.name != "given"]
PRESET_ITEMS = [(c.name, c.label, c.description) for c in presets.PRESETS]
#: "From the server": the preset that fits the device the server reports (cpu on a CPU server).
AUTO_PRESET_ITEM = (presets.AUTO_PRESET, "From the Server",
                    "The preset that fits the server's device: cpu on a CPU server, default on a GPU")
PREFERENCE_PRESET_ITEMS = [AUTO_PRESET_ITEM, *PRESET_ITEMS]


class USEG_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    server_address: StringProperty(
        name="Server Address", default=DEFAULT_ADDRESS,
        description="ZeroMQ endpoint of `backend serve` (tcp://HOST:PORT)")
    server_public_key: StringProperty(
        name="Server Public Key", subtype="FILE_PATH", default="", options=PATH_OPTIONS,
        description="The server's server.key for CurveZMQ (empty for a local, unencrypted server)")
    client_keys: StringProperty(
        name="Client Keys Folder", subtype="DIR_PATH", default="", options=PATH_OPTIONS,
        description="Folder holding client.key_secret (made by `backend keys DIR`)")
    timeout_s: FloatProperty(
        name="Timeout", default=10.0, min=0.5, max=3600.0, subtype="TIME_ABSOLUTE", unit="TIME_ABSOLUTE",
        description="Seconds without any answer before the server is reported unavailable")
    views: IntProperty(name="Views", default=32, min=1, max=2000,
                       description="Views rendered around the scene for Segment Scene")
    resolution: IntProperty(name="Resolution", default=200, min=8, max=4096, subtype="PIXEL",
                            description="Width and height of each rendered view")
    samples: IntProperty(name="Samples", default=64, min=1, max=4096,
                         description="Cycles samples per pixel (ids and depth are exact regardless)")
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="cycles")
    mask_source: EnumProperty(name="Mask Source", items=MASK_ITEMS, default="classical")
    preset: EnumProperty(name="Preset", items=PREFERENCE_PRESET_ITEMS, default=presets.AUTO_PRESET,
                         description="Training preset of Segment Scene (the sidebar panel can override it)")
    max_points: IntProperty(name="Max Points", default=presets.DEFAULT_MAX_POINTS, min=1, max=50_000_000,
                            description="Most points in the returned point cloud")

    def draw(self, context):
        layout = self.layout
        col = layout.column(heading="Server")
        col.prop(self, "server_address")
        col.prop(self, "server_public_key")
        col.prop(self, "client_keys")
        col.prop(self, "timeout_s")
        col.operator("useg.ping_server", icon="LINKED")
        col = layout.column(heading="Segment Scene")
        col.prop(self, "views")
        col.prop(self, "resolution")
        col.prop(self, "engine")
        col.prop(self, "samples")
        col.prop(self, "mask_source")
        col.prop(self, "preset")
        col.prop(self, "max_points")


@dataclass
class DefaultPreferences:
    """The preference defaults, used when the add-on is registered but not enabled as an add-on."""

    server_address: str = DEFAULT_ADDRESS
    server_public_key: str = ""
    client_keys: str = ""
    timeout_s: float = 10.0
    views: int = 32
    resolution: int = 200
    samples: int = 64
    engine: str = "cycles"
    mask_source: str = "classical"
    preset: str = presets.AUTO_PRESET
    max_points: int = presets.DEFAULT_MAX_POINTS


#: Used by :func:`get_preferences` when Blender holds no preferences for this package (tests may edit it).
FALLBACK = DefaultPreferences()


def get_preferences(context=None):
    """This add-on's preferences (:class:`USEG_AddonPreferences` or :data:`FALLBACK`)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None and addon.preferences is not None else FALLBACK


def client_config(prefs) -> ClientConfig:
    """The client thread's configuration from the preferences (paths made absolute)."""
    return ClientConfig(
        address=prefs.server_address.strip(),
        server_public_key=bpy.path.abspath(prefs.server_public_key) if prefs.server_public_key else "",
        client_keys=bpy.path.abspath(prefs.client_keys) if prefs.client_keys else "",
        timeout_s=float(prefs.timeout_s),
    )
