"""Rendering with bpy: one render per view gives colour, planar depth and exact leaf ids as NumPy arrays.

Cycles (default) writes a multilayer EXR with the Combined, Depth and Object Index passes in one render
(32-bit float, uncompressed; Blender 5.0 and later write it as a multi-part file), read by
:mod:`dataset_tools.exr`: with the OpenImageIO module when the Blender ships one (4.5 and later), else
with NumPy (4.2), to the same float32 values. The object-index pass holds exact integers (ids are
written per pixel from one path, never filtered), depth is planar camera Z with 1e10 for background
(mapped to 0 here).

The ``workbench`` engine is a fast path (tests, previews): it has no object-index pass, so each view is
rendered twice, once with material colours (studio light) and once flat-shaded with one colour per id
and anti-aliasing off; ids are decoded from the colour exactly.

Everything here returns data; file formats live in :mod:`dataset_tools.writers`. All scene changes are
undone when the context managers exit, so the add-on can render the open scene without side effects.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

import bpy
import numpy as np

from . import framing
from . import hierarchy as hier
from .cameras import intrinsics
from .config import ENGINES, RenderConfig
from .errors import DatasetError
from .exr import read_exr_parts

#: Blender's depth for rays that hit nothing.
BACKGROUND_DEPTH = 1e9

ProgressFn = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------------------ EXR reading


def _find_channel(channels: dict[str, np.ndarray], layer: str, suffixes: tuple[str, ...]) -> np.ndarray:
    for s in suffixes:
        for key in (f"{layer}.{s}", s):
            if key in channels:
                return channels[key]
    raise DatasetError(f"rendered EXR lacks pass {suffixes[0]!r} (have {sorted(channels)[:8]})")


def linear_to_srgb8(rgba_premul: np.ndarray) -> np.ndarray:
    """Linear premultiplied float RGBA [H, W, 4] -> straight-alpha sRGB uint8 RGBA (the 'Standard' view transform)."""
    rgba = np.clip(rgba_premul.astype(np.float32), 0.0, None)
    alpha = np.clip(rgba[..., 3:4], 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = np.where(alpha > 1e-6, rgba[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    rgb = np.clip(rgb, 0.0, 1.0)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1.0 / 2.4) - 0.055)
    out = np.concatenate([srgb, alpha], axis=-1)
    return np.round(out * 255.0).astype(np.uint8)


# ------------------------------------------------------------------------------------------ state handling


@contextmanager
def quiet_output(enabled: bool = True) -> Iterator[None]:
    """Send Blender's C-level log lines (``Saved: ...``, ``Read blend: ...``) to a scratch file for the block.

    Used headless only (``bpy.app.background``) so progress bars stay readable; a no-op in the Blender UI.
    """
    if not enabled:
        yield
        return
    import ctypes

    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            try:
                ctypes.CDLL(None).fflush(None)
            except (OSError, AttributeError):
                pass
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextmanager
def _saved_attrs(pairs: list[tuple[object, str]]) -> Iterator[None]:
    """Restore ``getattr(owner, name)`` for each pair on exit (in the given order: order matters for enums)."""
    saved = []
    for owner, name in pairs:
        try:
            saved.append((owner, name, getattr(owner, name)))
        except AttributeError:
            pass
    try:
        yield
    finally:
        for owner, name, value in saved:
            try:
                setattr(owner, name, value)
            except (AttributeError, TypeError, ValueError, ReferenceError):
                pass


def _settings_to_save(scene, view_layer) -> list[tuple[object, str]]:
    r, ims, cy = scene.render, scene.render.image_settings, scene.cycles
    pairs = [(scene, "camera"), (r, "engine"), (r, "resolution_x"), (r, "resolution_y"), (r, "resolution_percentage"),
             (r, "pixel_aspect_x"), (r, "pixel_aspect_y"), (r, "use_border"), (r, "film_transparent"),
             (r, "filepath"), (r, "use_compositing"), (r, "use_sequencer"), (r, "use_persistent_data"),
             (r, "use_motion_blur"), (r, "threads_mode"), (r, "threads"), (r, "use_file_extension"),
             (ims, "media_type"), (ims, "file_format"), (ims, "color_depth"), (ims, "exr_codec"),
             (ims, "color_mode"), (ims, "color_management"),
             (scene.view_settings, "view_transform"), (scene.view_settings, "look"), (scene.view_settings, "exposure"),
             (scene.view_settings, "gamma"),
             (view_layer, "use_pass_z"), (view_layer, "use_pass_object_index"), (view_layer, "use"),
             (scene.display, "render_aa"), (scene.display.shading, "light"), (scene.display.shading, "color_type"),
             (scene.display.shading, "show_shadows"), (scene.display.shading, "show_cavity"),
             (scene.display.shading, "show_object_outline"), (scene.display.shading, "show_specular_highlight")]
    for name in ("samples", "seed", "use_animated_seed", "use_denoising", "use_adaptive_sampling", "adaptive_threshold",
                 "device", "max_bounces", "diffuse_bounces", "glossy_bounces", "transmission_bounces",
                 "transparent_max_bounces", "volume_bounces", "caustics_reflective", "caustics_refractive",
                 "pixel_filter_type", "filter_width", "sample_clamp_indirect", "time_limit"):
        pairs.append((cy, name))
    return pairs


#: Cycles GPU back-ends, in order of preference.
GPU_BACKENDS = ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL")


def _cycles_preferences():
    try:
        return bpy.context.preferences.addons["cycles"].preferences
    except (KeyError, AttributeError):
        return None


def _device_state(prefs) -> tuple:
    """What :func:`select_cycles_device` may change, to restore it afterwards."""
    if prefs is None:
        return ()
    return (prefs.compute_device_type, [(d, d.use) for d in prefs.devices])


def _restore_device_state(prefs, state: tuple) -> None:
    if not state:
        return
    try:
        prefs.compute_device_type = state[0]
        for d, use in state[1]:
            d.use = use
    except (AttributeError, TypeError, ReferenceError):
        pass


def select_cycles_device(preference: str = "auto") -> str:
    """Pick the Cycles device: ``"CPU"`` or the GPU back-end enabled (``"OPTIX"``, ``"CUDA"``, ...).

    ``preference``: ``auto`` (first GPU back-end with a device, else CPU), ``cpu``, or ``gpu`` (raises
    :class:`DatasetError` when Blender finds no GPU). Enables that back-end's GPUs in Cycles' preferences
    (callers restore them; :func:`prepared_scene` does).
    """
    if preference == "cpu":
        return "CPU"
    prefs = _cycles_preferences()
    if prefs is not None:
        for backend in GPU_BACKENDS:
            try:
                prefs.compute_device_type = backend
            except TypeError:  # back-end not built into this Blender
                continue
            with quiet_output(bpy.app.background):
                prefs.refresh_devices()
            gpus = [d for d in prefs.devices if d.type == backend]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == backend
                return backend
        prefs.compute_device_type = "NONE"
    if preference == "gpu":
        raise DatasetError("no GPU found by Cycles (OptiX, CUDA, HIP, oneAPI, Metal); use --device cpu or auto")
    return "CPU"


def _configure(scene, view_layer, config: RenderConfig, camera_obj, device: str = "CPU") -> None:
    r = scene.render
    r.engine = ENGINES[config.engine]
    r.resolution_x, r.resolution_y, r.resolution_percentage = config.width, config.height, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.use_border = False
    r.film_transparent = True
    r.use_compositing = False
    r.use_sequencer = False
    r.use_persistent_data = True
    r.use_motion_blur = False
    r.use_file_extension = True
    if config.threads > 0:
        r.threads_mode, r.threads = "FIXED", config.threads
    else:
        r.threads_mode = "AUTO"
    ims = r.image_settings
    if hasattr(ims, "media_type"):
        ims.media_type = "MULTI_LAYER_IMAGE"
    ims.file_format = "OPEN_EXR_MULTILAYER"
    ims.color_depth = "32"
    ims.exr_codec = "NONE"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    view_layer.use = True
    view_layer.use_pass_z = True
    view_layer.use_pass_object_index = True
    scene.camera = camera_obj
    if config.engine == "cycles":
        cy = scene.cycles
        cy.device = "CPU" if device == "CPU" else "GPU"
        cy.samples = config.samples
        cy.seed = config.seed
        cy.use_animated_seed = False
        cy.use_denoising = False
        cy.use_adaptive_sampling = True
        cy.adaptive_threshold = 0.02
        cy.time_limit = 0.0
        cy.max_bounces, cy.diffuse_bounces, cy.glossy_bounces = 4, 2, 2
        cy.transmission_bounces, cy.transparent_max_bounces, cy.volume_bounces = 4, 8, 0
        cy.caustics_reflective = cy.caustics_refractive = False
    else:
        scene.display.render_aa = "8"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "MATERIAL"
        scene.display.shading.show_shadows = False
        scene.display.shading.show_cavity = False
        scene.display.shading.show_object_outline = False
        scene.display.shading.show_specular_highlight = True


def _set_camera(camera_obj, c2w: np.ndarray, config: RenderConfig) -> None:
    import mathutils

    camera_obj.matrix_world = mathutils.Matrix([list(map(float, row)) for row in np.asarray(c2w)])
    cam = camera_obj.data
    cam.type = "PERSP"
    cam.sensor_fit = "HORIZONTAL"
    cam.lens_unit = "FOV"
    cam.angle = float(config.camera_angle_x)
    cam.shift_x = cam.shift_y = 0.0
    span = max(1.0, float(np.abs(c2w[:3, 3]).max()))
    cam.clip_start = 1e-3 * span
    cam.clip_end = 1e4 * span


# ------------------------------------------------------------------------------------------ the renderer


@dataclass
class ViewData:
    """One rendered view. ``rgba`` uint8 [H, W, 4] (sRGB, straight alpha); ``depth`` float32 [H, W] planar,
    0 = background; ``ids`` uint16 [H, W] leaf node ids, 0 = background."""

    rgba: np.ndarray
    depth: np.ndarray
    ids: np.ndarray


class Renderer:
    """Renders views of a prepared scene (see :func:`prepared_scene`); not to be built directly."""

    def __init__(self, scene, view_layer, config: RenderConfig, camera_obj, leaf_ids: list[int],
                 objects_by_id: dict[int, object], workdir: str):
        self.scene, self.view_layer, self.config = scene, view_layer, config
        self.camera_obj = camera_obj
        self.workdir = workdir
        self.objects_by_id = objects_by_id
        self._valid = np.zeros(max(leaf_ids) + 1 if leaf_ids else 1, dtype=bool)
        self._valid[leaf_ids] = True

    def _render_exr(self, name: str) -> dict[str, np.ndarray]:
        path = os.path.join(self.workdir, name + ".exr")
        self.scene.render.filepath = path
        with quiet_output(bpy.app.background):
            bpy.ops.render.render(write_still=True, scene=self.scene.name, layer=self.view_layer.name)
        if not os.path.isfile(path):
            raise DatasetError("Blender produced no image (render failed; see the log above)")
        chans = read_exr_parts(path)
        os.remove(path)
        return chans

    def render(self, c2w: np.ndarray) -> ViewData:
        """Render the view seen from ``c2w`` [4, 4] (OpenGL axes, world units)."""
        _set_camera(self.camera_obj, c2w, self.config)
        layer = self.view_layer.name
        chans = self._render_exr("view")
        rgba = np.stack([_find_channel(chans, layer, (f"Combined.{c}",)) for c in "RGBA"], axis=-1)
        depth = _find_channel(chans, layer, ("Depth.Z", "Z")).astype(np.float32)
        if self.config.engine == "cycles":
            raw = _find_channel(chans, layer, ("Object Index.X", "IndexOB.X"))
            ids = np.rint(raw).astype(np.int64)
        else:
            ids = self._workbench_ids()
        ids[(ids < 0) | (ids >= self._valid.size)] = 0
        ids[~self._valid[ids]] = 0
        depth = np.where((depth >= BACKGROUND_DEPTH) | (ids == 0) | ~np.isfinite(depth), 0.0, depth).astype(np.float32)
        return ViewData(rgba=linear_to_srgb8(rgba), depth=depth, ids=ids.astype(np.uint16))

    def _workbench_ids(self) -> np.ndarray:
        """Second workbench render: flat, unlit, no anti-aliasing, object colour = id in base 64 per channel."""
        shading, display = self.scene.display.shading, self.scene.display
        saved = [(o, tuple(o.color)) for o in self.objects_by_id.values()]
        others = [(o, tuple(o.color)) for o in self.scene.objects if o.type in hier.RENDERABLE_TYPES]
        try:
            for o, _ in others:
                o.color = (0.0, 0.0, 0.0, 1.0)
            for node_id, o in self.objects_by_id.items():
                o.color = (*encode_id_colour(node_id), 1.0)
            display.render_aa, shading.light, shading.color_type = "OFF", "FLAT", "OBJECT"
            chans = self._render_exr("ids")
        finally:
            display.render_aa, shading.light, shading.color_type = "8", "STUDIO", "MATERIAL"
            for o, c in others + saved:
                o.color = c
        layer = self.view_layer.name
        rgb = np.stack([_find_channel(chans, layer, (f"Combined.{c}",)) for c in "RGB"], axis=-1)
        alpha = _find_channel(chans, layer, ("Combined.A",))
        ids = decode_id_colour(rgb)
        ids[alpha < 0.5] = 0
        return ids


def encode_id_colour(node_id: int) -> tuple[float, float, float]:
    """Linear RGB for an id: 5 bits per channel, levels spaced 1/31 apart (robust to display conversions)."""
    return ((node_id & 31) / 31.0, ((node_id >> 5) & 31) / 31.0, ((node_id >> 10) & 31) / 31.0)


def decode_id_colour(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_id_colour` on a rendered linear RGB image [H, W, 3] -> int64 ids."""
    q = np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 31.0), 0, 31).astype(np.int64)
    return q[..., 0] | (q[..., 1] << 5) | (q[..., 2] << 10)


@dataclass
class PreparedScene:
    """A scene ready to render: its hierarchy, the rendered objects by id, bounds and a :class:`Renderer`."""

    hierarchy: hier.Hierarchy
    objects_by_id: dict[int, object]
    bounds: np.ndarray
    """World AABB [2, 3] of everything that renders."""
    renderer: Renderer
    device: str = "CPU"
    """Device rendering the views: ``CPU``, a Cycles GPU back-end (``OPTIX``, ``CUDA``...) or ``WORKBENCH``."""
    frame_bounds: np.ndarray | None = None
    """World AABB [2, 3] of the framed content (``RenderConfig.frame``); None = ``bounds``."""
    backdrops: tuple[str, ...] = ()
    """Names of the objects left out of the framing as backdrops or enclosing structure (automatic framing only)."""
    boxes: np.ndarray | None = None
    """World bounding-box corners [N, 8, 3] of ``objects_by_id``'s objects, in its order."""
    framed: np.ndarray | None = None
    """Which of those objects are framed (bool [N]): the content the cameras look at."""
    depsgraph: object = None
    """The evaluated dependency graph the boxes came from (ray casts use it)."""

    @property
    def centre(self) -> np.ndarray:
        """Centre of the framed content's AABB: the point sampled cameras look at and val views turn about."""
        return self.frame_box.mean(axis=0)

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere of the framed content's AABB."""
        b = self.frame_box
        return float(max(np.linalg.norm(b[1] - b[0]) / 2.0, 1e-6))

    @property
    def frame_box(self) -> np.ndarray:
        """World AABB [2, 3] of the framed content."""
        return self.bounds if self.frame_bounds is None else self.frame_bounds


def frame_content(hierarchy: hier.Hierarchy, objects_by_id: dict[int, object], boxes: np.ndarray,
                  frame: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """World AABB [2, 3] of what ``frame`` (``RenderConfig.frame``) selects, the backdrops (and enclosing
    structure) left out, and which objects are framed (bool [N], ``objects_by_id`` order).

    ``boxes`` [N, 8, 3] are the world bounding-box corners of ``objects_by_id``'s objects, in its order.
    Names that match nothing, or only content that does not render, raise :class:`DatasetError`.
    """
    ids = list(objects_by_id)
    everything = np.ones(len(ids), dtype=bool)
    if frame == (framing.FRAME_ALL,):
        return framing.aabb(boxes), (), everything
    if not frame:
        back = framing.structure_mask(boxes)
        if back.any():
            return (framing.aabb(boxes[~back]), tuple(sorted(objects_by_id[i].name for i, b in zip(ids, back) if b)),
                    ~back)
        return framing.aabb(boxes), (), everything
    chosen, missing = framing.named_leaves(hierarchy.nodes, frame)
    for name in missing:
        if name in bpy.data.collections or name in bpy.data.objects:
            raise DatasetError(f"frame: nothing in {name!r} renders (hidden, excluded from the view layer, "
                               f"holdout or not in this scene)")
        known = [n["name"] for n in hierarchy.nodes]
        raise DatasetError(f"frame: no collection or object named {name!r}{framing.suggestion(name, known)}")
    index = {node_id: k for k, node_id in enumerate(ids)}
    framed = np.zeros(len(ids), dtype=bool)
    framed[[index[i] for i in chosen]] = True
    return framing.aabb(boxes[framed]), (), framed


def default_view_layer(scene):
    """The view layer rendered: the context's when it belongs to ``scene``, else the scene's first enabled one."""
    ctx = getattr(bpy.context, "view_layer", None)
    if ctx is not None and getattr(bpy.context, "scene", None) == scene:
        return ctx
    for vl in scene.view_layers:
        if vl.use:
            return vl
    return scene.view_layers[0]


@contextmanager
def prepared_scene(scene, config: RenderConfig, view_layer=None) -> Iterator[PreparedScene]:
    """Prepare ``scene`` for rendering and undo every change on exit.

    Makes collection instances real, builds the hierarchy, sets ``pass_index`` (all other objects 0),
    configures the engine/passes/output and adds a temporary camera.
    """
    config.validate()
    view_layer = view_layer or default_view_layer(scene)
    with ExitStack() as stack:
        stack.enter_context(hier.realised_instances(scene, view_layer))
        hierarchy, objects_by_id = hier.build_hierarchy(scene, view_layer)
        ours = {o.as_pointer() for o in objects_by_id.values()}
        others = {o: o.pass_index for o in scene.objects if o.as_pointer() not in ours}

        def restore_others():
            for o, v in others.items():
                try:
                    o.pass_index = v
                except ReferenceError:
                    pass

        stack.callback(restore_others)
        for o in others:
            o.pass_index = 0
        stack.enter_context(hier.pass_indices(objects_by_id))
        depsgraph = bpy.context.evaluated_depsgraph_get() if bpy.context.scene == scene else scene.view_layers[0].depsgraph
        bounds = hier.scene_bounds(list(objects_by_id.values()), depsgraph)
        boxes = hier.world_boxes(list(objects_by_id.values()), depsgraph)
        frame_bounds, backdrops, framed = frame_content(hierarchy, objects_by_id, boxes, tuple(config.frame))
        stack.enter_context(_saved_attrs(_settings_to_save(scene, view_layer)))
        cam_data = bpy.data.cameras.new("dataset_tools_camera")
        cam_obj = bpy.data.objects.new("dataset_tools_camera", cam_data)
        scene.collection.objects.link(cam_obj)

        def remove_camera():
            bpy.data.objects.remove(cam_obj, do_unlink=True)
            bpy.data.cameras.remove(cam_data)

        stack.callback(remove_camera)
        device = "WORKBENCH"
        if config.engine == "cycles":
            prefs = _cycles_preferences()
            stack.callback(_restore_device_state, prefs, _device_state(prefs))
            device = select_cycles_device(config.device)
        _configure(scene, view_layer, config, cam_obj, device)
        workdir = tempfile.mkdtemp(prefix="dataset_tools_")
        stack.callback(shutil.rmtree, workdir, True)
        renderer = Renderer(scene, view_layer, config, cam_obj, hierarchy.leaf_ids, objects_by_id, workdir)
        yield PreparedScene(hierarchy=hierarchy, objects_by_id=objects_by_id, bounds=bounds, renderer=renderer,
                            device=device, frame_bounds=frame_bounds, backdrops=backdrops, boxes=boxes,
                            framed=framed, depsgraph=depsgraph)


def scene_camera_poses(scene) -> np.ndarray:
    """World poses [N, 4, 4] of the scene's camera objects, sorted by name (scale removed)."""
    from .cameras import normalise_c2w

    cams = sorted((o for o in scene.objects if o.type == "CAMERA" and o.name != "dataset_tools_camera"),
                  key=lambda o: o.name)
    return np.stack([normalise_c2w(np.array(o.matrix_world)) for o in cams]) if cams else np.zeros((0, 4, 4))


# ------------------------------------------------------------------------------------------ open-scene API


@dataclass
class RenderedViews:
    """Views of the open scene in memory (what the add-on sends to the backend).

    Shapes: ``rgba`` uint8 [N, H, W, 4]; ``depth`` float32 [N, H, W] (planar, world units, 0 = background);
    ``ids`` uint16 [N, H, W] (leaf ids into ``hierarchy``); ``c2w`` float32 [N, 4, 4]; ``K`` float32 [3, 3].
    """

    rgba: np.ndarray
    depth: np.ndarray
    ids: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    hierarchy: hier.Hierarchy
    bounds: np.ndarray
    content_ids: tuple[int, ...] = ()
    """Leaf ids of the content objects (not backdrop or enclosing structure); see :mod:`dataset_tools.coverage`."""
    placement: str = ""
    """The placement used (``orbit``, ``orbit-scored``, ``inside``; empty for given poses)."""

    @property
    def rgb(self) -> np.ndarray:
        return self.rgba[..., :3]


def render_views_steps(scene=None, config: RenderConfig | None = None,
                       poses: np.ndarray | None = None) -> Generator[tuple[int, int], None, RenderedViews]:
    """:func:`render_views` one view at a time: yields ``(done, total)`` after each view and returns the
    :class:`RenderedViews` (``StopIteration.value``). The scene stays prepared between steps, so a caller
    (the add-on's modal operator) can let Blender handle events between views; closing the generator early
    restores the scene exactly as :func:`render_views` does."""
    scene = scene or bpy.context.scene
    config = config or RenderConfig()
    from .camera_plan import content_ids, plan_cameras

    with prepared_scene(scene, config) as prep:
        used = ""
        if poses is None:
            if config.use_scene_cameras:
                poses = scene_camera_poses(scene)
                if len(poses) == 0:
                    raise DatasetError("the scene has no camera objects (use_scene_cameras)")
            else:
                placement = plan_cameras(prep, config, {"train": config.n_train})
                poses, used = placement.poses["train"], placement.used
        poses = np.asarray(poses, dtype=np.float64)
        views = []
        for c2w in poses:
            views.append(prep.renderer.render(c2w))
            yield len(views), len(poses)
        K = intrinsics(config.width, config.height, config.camera_angle_x)
        return RenderedViews(rgba=np.stack([v.rgba for v in views]), depth=np.stack([v.depth for v in views]),
                             ids=np.stack([v.ids for v in views]), c2w=poses.astype(np.float32),
                             K=K.astype(np.float32), hierarchy=prep.hierarchy, bounds=prep.bounds,
                             content_ids=tuple(content_ids(prep, config)), placement=used)


def render_views(scene=None, config: RenderConfig | None = None, poses: np.ndarray | None = None,
                 progress: ProgressFn | None = None) -> RenderedViews:
    """Render ``config.n_train`` orbit views (or the given ``poses`` [N, 4, 4]) of the open ``scene``.

    Defaults: the context scene and ``RenderConfig()``. With ``config.use_scene_cameras`` the scene's cameras
    are used. The scene is left exactly as it was.
    """
    steps = render_views_steps(scene, config, poses)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, "render")
