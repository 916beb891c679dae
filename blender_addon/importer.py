"""The segmentation result in Blender: a point cloud under the "Segmentation" collection.

The point-cloud data is made without operators (:mod:`.pointcloud`: directly where the Blender's API
allows, else through a Geometry Nodes evaluation), so the import works headless and in the UI alike; the
attributes are written with ``foreach_set``. Attributes (point domain):

- ``segment_colour`` (FLOAT_COLOR): the colour of the point's segment at the current granularity;
- ``segment`` (INT): the point's segment at the current granularity (0 = largest);
- ``segment_level_<i>`` (INT): the server's labels at its thresholds (``thresholds`` kept on the object);
- ``rgb`` (FLOAT_COLOR): the point's own colour; ``radius`` (FLOAT): display size.

Colours are linear RGB. Everything here runs on Blender's main thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import bpy

from .messages import SegmentationResult
from .pointcloud import PointCloudUnavailable, new_point_cloud
from backend.wire.tree_cut import Cut, cut, point_colours, relabel_by_size

COLLECTION_NAME = "Segmentation"
COLOUR_ATTR = "segment_colour"
SEGMENT_ATTR = "segment"
RGB_ATTR = "rgb"
LEVEL_ATTR = "segment_level_{}"
#: Custom property of the result object: path of the cached result (``result.npz``) the slider cuts.
RESULT_PATH_PROP = "useg_result_path"
THRESHOLDS_PROP = "useg_thresholds"
MATERIAL_NAME = "Segmentation Points"
#: Emission of the result's material in its segment colour (renders show the segments without lights).
EMISSION_STRENGTH = 0.6
#: Point-cloud edit-mode selection attribute (absent = all selected).
SELECTION_ATTR = ".selection"


class ImportFailed(RuntimeError):
    """The result could not be turned into Blender objects."""


def segmentation_collection(scene, name: str = COLLECTION_NAME):
    """The collection ``name`` linked under the scene's master collection (created when missing)."""
    coll = bpy.data.collections.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _point_radius(points: np.ndarray) -> float:
    """A display radius that roughly closes the gaps of a surface sampled by ``points``."""
    if points.shape[0] == 0:
        return 0.01
    diag = float(np.linalg.norm(points.max(0) - points.min(0))) or 1.0
    r = 0.6 * diag / np.sqrt(points.shape[0])
    return float(min(max(r, diag * 1e-4), diag * 0.02))


def _material():
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(MATERIAL_NAME)
    tree = mat.node_tree
    if tree is None:  # Blender < 5 needs nodes switched on
        mat.use_nodes = True
        tree = mat.node_tree
    bsdf = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        attr = tree.nodes.new("ShaderNodeAttribute")
        attr.attribute_name = COLOUR_ATTR
        attr.location = (bsdf.location.x - 300, bsdf.location.y)
        tree.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
        # glowing a little in the segment colour: the segments read in a dark or unlit scene too
        if "Emission Color" in bsdf.inputs and "Emission Strength" in bsdf.inputs:
            tree.links.new(attr.outputs["Color"], bsdf.inputs["Emission Color"])
            bsdf.inputs["Emission Strength"].default_value = EMISSION_STRENGTH
    return mat


def show_colours_in_viewports(window_manager) -> int:
    """Switch every 3D viewport in Solid shading to Material Preview, where the result's material shows the
    ``segment_colour`` attribute (Solid shading, Workbench, cannot colour a point cloud by an attribute: its
    Attribute colour falls back to the material's flat colour for point clouds, measured on Blender 5.3).
    Returns how many viewports changed (0 headless: no windows)."""
    changed = 0
    for window in (window_manager.windows if window_manager is not None else ()):
        for area in window.screen.areas:
            if area.type != "VIEW_3D":
                continue
            space = area.spaces.active
            if space.shading.type == "SOLID":
                space.shading.type = "MATERIAL"
                changed += 1
    return changed


def create_point_cloud(scene, name: str, points: np.ndarray, colours: np.ndarray,
                       int_attrs: dict[str, np.ndarray] | None = None,
                       colour_attrs: dict[str, np.ndarray] | None = None, collection=None):
    """A point-cloud object ``name`` with ``points`` float [N, 3] and per-point attributes.

    ``colours`` float32 [N, 4] becomes ``segment_colour``; ``int_attrs`` INT and ``colour_attrs``
    FLOAT_COLOR [N, 4] point attributes. Linked to ``collection`` (default: "Segmentation"). Raises
    :class:`ImportFailed` when this Blender can make no point cloud.
    """
    points = np.ascontiguousarray(points, np.float32).reshape(-1, 3)
    try:
        pc = new_point_cloud(name, points, _point_radius(points))
    except (PointCloudUnavailable, RuntimeError, TypeError, KeyError) as e:
        raise ImportFailed(f"Blender {bpy.app.version_string} could not make a point cloud: {e}") from e
    attrs = {COLOUR_ATTR: ("FLOAT_COLOR", "color", colours)}
    attrs.update({key: ("FLOAT_COLOR", "color", values) for key, values in (colour_attrs or {}).items()})
    attrs.update({key: ("INT", "value", values) for key, values in (int_attrs or {}).items()})
    for key, (kind, field, values) in attrs.items():
        dtype = np.int32 if kind == "INT" else np.float32
        pc.attributes.new(key, kind, "POINT").data.foreach_set(field, np.ascontiguousarray(values, dtype).ravel())
    pc.materials.append(_material())
    obj = bpy.data.objects.new(name, pc)
    (collection or segmentation_collection(scene)).objects.link(obj)
    return obj


def read_attribute(obj, name: str) -> np.ndarray:
    """A point attribute of ``obj`` as NumPy (INT -> int32 [N]; FLOAT_COLOR -> float32 [N, 4];
    FLOAT_VECTOR -> float32 [N, 3]; FLOAT -> float32 [N]; BOOLEAN -> bool [N])."""
    attr = obj.data.attributes.get(name)
    if attr is None:
        raise KeyError(f"{obj.name} has no attribute {name!r}")
    n = len(attr.data)
    kind = {"INT": (np.int32, 1, "value"), "FLOAT_COLOR": (np.float32, 4, "color"),
            "FLOAT_VECTOR": (np.float32, 3, "vector"), "FLOAT": (np.float32, 1, "value"),
            "BOOLEAN": (bool, 1, "value")}[attr.data_type]
    out = np.empty(n * kind[1], kind[0])
    attr.data.foreach_get(kind[2], out)
    return out.reshape(n, kind[1]) if kind[1] > 1 else out


def write_attribute(obj, name: str, values: np.ndarray) -> None:
    """Overwrite an existing point attribute (see :func:`read_attribute` for shapes)."""
    attr = obj.data.attributes[name]
    key = {"INT": "value", "FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector", "FLOAT": "value",
           "BOOLEAN": "value"}[attr.data_type]
    attr.data.foreach_set(key, np.ascontiguousarray(values).ravel())
    obj.data.update_tag()


def result_cut(result: SegmentationResult, threshold: float) -> Cut:
    """Segments of the result at ``threshold``: from the tree, else the server level nearest below."""
    if result.has_tree:
        return cut(result.parents, result.altitudes, result.n_points, threshold)
    i = int(np.clip(np.searchsorted(result.thresholds, threshold, side="right") - 1, 0, len(result.thresholds) - 1))
    return relabel_by_size(result.labels[i])


def import_result(scene, result: SegmentationResult, threshold: float, n_coloured: int = 64,
                  name: str = "Segmentation", result_path: str = ""):
    """Create the result object (see the module docstring); returns it and the :class:`Cut` shown."""
    c = result_cut(result, threshold)
    rgb = np.ones((result.n_points, 4), np.float32)
    rgb[:, :3] = srgb8_to_linear(result.colors)
    levels = {LEVEL_ATTR.format(i): result.labels[i] for i in range(result.labels.shape[0])}
    obj = create_point_cloud(scene, name, result.points, point_colours(c, n_coloured),
                             int_attrs={SEGMENT_ATTR: c.labels, **levels}, colour_attrs={RGB_ATTR: rgb})
    obj[RESULT_PATH_PROP] = str(result_path)
    obj[THRESHOLDS_PROP] = [float(t) for t in result.thresholds]
    return obj, c


def apply_cut(obj, c: Cut, n_coloured: int) -> None:
    """Recolour ``obj`` and rewrite its ``segment`` attribute for the cut ``c``."""
    if len(obj.data.attributes[SEGMENT_ATTR].data) != c.labels.shape[0]:
        raise ImportFailed(f"{obj.name} has {len(obj.data.attributes[SEGMENT_ATTR].data)} points, "
                           f"the result {c.labels.shape[0]}")
    write_attribute(obj, COLOUR_ATTR, point_colours(c, n_coloured))
    write_attribute(obj, SEGMENT_ATTR, c.labels)


@dataclass(frozen=True)
class Separated:
    """What :func:`separate_segments` made."""

    objects: list
    skipped: int
    """Segments under ``min_points`` (their points are in the ``.rest`` object)."""
    skipped_points: int


def separate_plan(sizes: np.ndarray, max_objects: int, min_points: int) -> int:
    """How many of the segments (``sizes`` largest first) get an object of their own: at most ``max_objects``,
    none under ``min_points`` points.

    >>> separate_plan(np.array([500, 300, 40, 10]), 64, 100)
    2
    """
    sizes = np.asarray(sizes)
    if min_points < 1 or max_objects < 1:
        raise ValueError(f"max_objects and min_points must be >= 1, got {max_objects} and {min_points}")
    return int(min(max_objects, np.count_nonzero(sizes >= min_points)))


def separate_segments(scene, obj, c: Cut, n_segments: int, n_coloured: int, min_points: int = 1) -> Separated:
    """One point-cloud object per segment of ``c`` for the ``n_segments`` largest with at least ``min_points``
    points, plus one object ``<obj>.rest`` with the remaining points (if any), in a collection "<obj> segments"
    under "Segmentation"."""
    points = read_attribute(obj, "position")
    colours = point_colours(c, n_coloured)
    order = np.argsort(c.labels, kind="stable")
    bounds = np.searchsorted(c.labels[order], np.arange(c.n_segments + 1))
    sizes = np.diff(bounds)  # labels are by size: 0 = largest
    k = separate_plan(sizes, int(n_segments), int(min_points))
    skipped = int(np.count_nonzero(sizes < min_points))
    parent = segmentation_collection(scene)
    coll = bpy.data.collections.new(f"{obj.name} segments")
    parent.children.link(coll)
    created = []
    for s in range(k):
        idx = order[bounds[s]:bounds[s + 1]]
        created.append(create_point_cloud(scene, f"{obj.name}.segment_{s:03d}", points[idx], colours[idx],
                                          int_attrs={SEGMENT_ATTR: np.full(idx.size, s, np.int32)},
                                          collection=coll))
    if k < c.n_segments:
        idx = order[bounds[k]:]
        created.append(create_point_cloud(scene, f"{obj.name}.rest", points[idx], colours[idx],
                                          int_attrs={SEGMENT_ATTR: c.labels[idx]}, collection=coll))
    return Separated(created, skipped, int(sizes[sizes < min_points].sum()))


def selected_points(obj) -> np.ndarray | None:
    """bool [N] of the points selected in edit mode, or None when none/all are (no explicit choice)."""
    for name in (SELECTION_ATTR, ".select_vert"):
        if obj.data.attributes.get(name) is not None:
            sel = read_attribute(obj, name)
            return sel if 0 < sel.sum() < sel.size else None
    return None


def select_segments(obj, mask: np.ndarray) -> None:
    """Make ``mask`` bool [N] the object's point selection (edit mode)."""
    name = SELECTION_ATTR if obj.type == "POINTCLOUD" else ".select_vert"
    if obj.data.attributes.get(name) is None:
        obj.data.attributes.new(name, "BOOLEAN", "POINT")
    write_attribute(obj, name, mask.astype(bool))


def srgb8_to_linear(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB [.., 3] to linear float32 (Blender's colour attributes are linear)."""
    c = np.asarray(rgb, np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
