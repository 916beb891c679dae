"""Render the README pictures: a segmented scene, from Blender, at two granularities.

Usage::

    python3 scripts/render_readme_images.py RESULT_DIR BLEND OUT_DIR [--fine T] [--coarse T]
                                            [--original-engine workbench|eevee]

``RESULT_DIR`` holds ``result.npz`` (as written by ``backend demo`` / ``backend submit --out``) and
``BLEND`` is the scene it was computed from. In headless ``bpy`` the script opens the scene, adds a
camera looking at it from a 3/4 view (fitted to the points' bounds), renders the scene itself, then
hides it and imports the result with the add-on's importer (:func:`blender_addon.importer.import_result`)
and renders the cloud cut at a fine and a coarse tree threshold. It writes to ``OUT_DIR``:

- ``segmented_<stem>.png``: the three renders side by side (original | fine | coarse) with captions;
- with ``--tiles`` also ``<stem>_original.png``, ``<stem>_fine.png``, ``<stem>_coarse.png`` (the
  three renders alone, transparent background);
- the pictures ``backend segment`` made next to the result, when present: ``<stem>_sweep.gif`` and
  ``<stem>_sweep.png`` (the granularity sweep) and ``<stem>_view.png`` (the first view's contact sheet:
  image, PCA of the features, 4 cuts), so one command refreshes every README picture.

The README pictures in ``docs/images/`` are made from a real run in one command::

    backend demo --out /tmp/demo1        # or: backend train DATA RUN && backend segment RUN
    python3 scripts/render_readme_images.py /tmp/demo1/run/segmentation /tmp/demo1/table_set.blend docs/images

Workbench cannot colour point clouds by attribute, so each segment is made its own object with the
add-on's "Separate Segments" (:func:`blender_addon.importer.separate_segments`) and the segment colour
is set as the object colour (Workbench "Object" colour mode); the colours are the add-on's own
(:func:`backend.wire.tree_cut.segment_colours`). Workbench renders in about a second; EEVEE works
headless too but renders in software (about a minute per image).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import bpy  # noqa: E402
from mathutils import Vector  # noqa: E402

from backend.wire import tree_cut  # noqa: E402
from backend.wire.presets import DEFAULT_EXPORT_THRESHOLDS, default_cut_index  # noqa: E402
from blender_addon import importer  # noqa: E402
from blender_addon.messages import ResultError, load_result_file  # noqa: E402

#: Camera direction (from the scene's centre towards the camera): a 3/4 view from slightly above.
VIEW_DIRECTION = (1.0, -0.85, 0.75)
#: Margin kept around the fitted bounds, as a fraction of the image (each side).
FRAME_MARGIN = 0.04
#: Background of the composed picture (sRGB).
BACKGROUND = (246, 246, 246)
#: Size above which a PNG is saved with a 256-colour palette instead (README pictures stay small).
MAX_BYTES = 140_000


class RenderFailed(RuntimeError):
    """A render or the composition of the pictures failed."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("result_dir", type=Path, help="folder with result.npz (or the file itself)")
    p.add_argument("blend", type=Path, help="the scene the result was computed from")
    p.add_argument("out_dir", type=Path, help="where the PNGs go")
    p.add_argument("--fine", type=float, default=None,
                   help="tree threshold of the fine cut (objects apart); default: the exported cut the add-on "
                        "opens on")
    p.add_argument("--coarse", type=float, default=None,
                   help="tree threshold of the coarse cut (few segments); default: the next exported cut")
    p.add_argument("--coloured", type=int, default=0,
                   help="largest segments given a colour, the rest grey (default 0: every segment of at "
                        "least 0.1%% of the points)")
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--radius-scale", type=float, default=1.25,
                   help="point radius relative to the importer's default display radius")
    p.add_argument("--original-engine", choices=("workbench", "eevee"), default="workbench",
                   help="engine for the render of the scene itself (eevee: textures, ~1 min)")
    p.add_argument("--stem", default=None, help="name of the pictures (default: the .blend's name)")
    p.add_argument("--tiles", action="store_true",
                   help="also keep the three renders (<stem>_original/_fine/_coarse.png) in OUT_DIR")
    return p.parse_args(argv)


def look_at(cam, target: Vector) -> None:
    """Point the camera ``cam`` (looking down its -Z, +Y up) at ``target``."""
    cam.rotation_euler = (target - cam.location).to_track_quat("-Z", "Y").to_euler()


def fit_camera(scene, cam, points: np.ndarray, direction=VIEW_DIRECTION, margin: float = FRAME_MARGIN,
               max_points: int = 3000) -> float:
    """Place ``cam`` on the ray from the centre of the points' bounding box along ``direction`` at the
    smallest distance whose view holds all ``points`` float [N, 3] (a subsample of ``max_points``)
    inside the frame less ``margin``, then centre their projection by shifting the lens. Returns the
    distance."""
    from bpy_extras.object_utils import world_to_camera_view

    points = np.asarray(points, np.float64).reshape(-1, 3)
    if points.shape[0] == 0:
        raise RenderFailed("no points to frame")
    lo, hi = points.min(0), points.max(0)
    centre = Vector(((lo + hi) / 2).tolist())
    d = Vector(direction).normalized()
    step = max(1, points.shape[0] // max_points)
    corners = [Vector(p) for p in points[::step].tolist()]
    diag = float(np.linalg.norm(hi - lo)) or 1.0
    cam.data.shift_x = cam.data.shift_y = 0.0

    def projected(dist: float) -> np.ndarray:
        cam.location = centre + d * dist
        look_at(cam, centre)
        bpy.context.view_layer.update()
        return np.array([tuple(world_to_camera_view(scene, cam, c))[:2] for c in corners])

    near, far = 0.5 * diag, 20.0 * diag
    if not _fits(projected(far), margin):
        raise RenderFailed("the scene does not fit the camera even from far away")
    for _ in range(40):  # bisection on the distance
        mid = 0.5 * (near + far)
        near, far = (near, mid) if _fits(projected(mid), margin) else (mid, far)
    uv = projected(far)
    # centre the framing: shift the lens by the offset of the projected box (shift is in units of
    # the larger image side)
    aspect = scene.render.resolution_x / scene.render.resolution_y
    off = (uv.min(0) + uv.max(0)) / 2 - 0.5
    scale = (1.0, 1.0 / aspect) if aspect >= 1 else (aspect, 1.0)
    cam.data.shift_x, cam.data.shift_y = float(off[0] * scale[0]), float(off[1] * scale[1])
    return far


def _fits(uv: np.ndarray, margin: float) -> bool:
    return bool((uv >= margin).all() and (uv <= 1 - margin).all())


def setup_render(scene, width: int, height: int) -> None:
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"


def use_workbench(scene, colour_type: str) -> None:
    """Workbench with studio light, cavity-free, colours from ``colour_type`` (MATERIAL, OBJECT...)."""
    scene.render.engine = "BLENDER_WORKBENCH"
    sh = scene.display.shading
    sh.light = "STUDIO"
    sh.color_type = colour_type
    sh.show_shadows = False
    sh.show_cavity = False
    sh.show_specular_highlight = colour_type == "MATERIAL"
    scene.display.render_aa = "8"


def render(scene, path: Path) -> Path:
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not path.is_file():
        raise RenderFailed(f"Blender wrote no image at {path}")
    return path


def segment_objects(scene, result, threshold: float, n_coloured: int, radius_scale: float,
                    name: str) -> tuple[list, tree_cut.Cut]:
    """Import ``result`` cut at ``threshold`` with the add-on's importer, split it into one point-cloud
    object per coloured segment (the rest in one grey object), each with its segment colour as object
    colour and the display radius scaled by ``radius_scale``. The whole-cloud object is removed."""
    obj, c = importer.import_result(scene, result, threshold, n_coloured, name=name)
    # one radius for every part: the importer sizes points by the density of the whole cloud, but a
    # separated part would get a radius from its own (much smaller) point count
    radius = float(importer.read_attribute(obj, "radius")[0]) * radius_scale
    parts = importer.separate_segments(scene, obj, c, n_coloured, n_coloured).objects
    colours = tree_cut.segment_colours(c, n_coloured)
    for i, part in enumerate(parts):
        rgb = colours[i] if i < min(n_coloured, c.n_segments) else np.asarray(tree_cut.GREY, np.float32)
        part.color = (*map(float, rgb), 1.0)
        importer.write_attribute(part, "radius", np.full(len(part.data.points), radius, np.float32))
    bpy.data.objects.remove(obj)
    return parts, c


def set_render_visible(objects, visible: bool) -> None:
    for o in objects:
        o.hide_render = not visible


def compose(images: list[Path], captions: list[str], out: Path, background=BACKGROUND) -> Path:
    """Place ``images`` side by side on ``background`` with a caption under each; saved with
    :func:`save_small` (a palette PNG when the full-colour one is over ``MAX_BYTES``)."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [Image.open(p).convert("RGBA") for p in images]
    w, h = tiles[0].size
    gap, cap_h = 8, 26
    sheet = Image.new("RGB", (len(tiles) * w + (len(tiles) + 1) * gap, h + cap_h + gap), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=15)
    for i, (tile, text) in enumerate(zip(tiles, captions)):
        x = gap + i * (w + gap)
        sheet.paste(tile, (x, gap // 2), tile)
        tw = draw.textlength(text, font=font)
        draw.text((x + (w - tw) / 2, h + gap // 2 + 4), text, fill=(40, 40, 40), font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_small(sheet, out)
    return out


def save_small(img, path: Path, max_bytes: int = MAX_BYTES) -> None:
    """Save ``img`` (a PIL image) as PNG; when that is over ``max_bytes``, as an adaptive-palette PNG
    (transparency kept) instead."""
    from PIL import Image

    img.save(path, optimize=True)
    if path.stat().st_size > max_bytes:
        img.convert("RGBA").quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                     dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.blend.is_file():
        raise SystemExit(f"no .blend at {args.blend}")
    try:
        result = load_result_file(args.result_dir)
    except ResultError as e:
        raise SystemExit(f"cannot read the result: {e}") from None
    if not result.has_tree:
        raise SystemExit("the result has no tree (parents/altitudes); cannot cut at given thresholds")
    cuts = [float(t) for t in result.thresholds] or list(DEFAULT_EXPORT_THRESHOLDS)
    first = default_cut_index(len(cuts))
    args.fine = cuts[first] if args.fine is None else args.fine
    args.coarse = cuts[min(first + 1, len(cuts) - 1)] if args.coarse is None else args.coarse
    stem = args.stem or args.blend.stem
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="useg_readme_") as tmp:
        render_pictures(args, result, stem, args.out_dir if args.tiles else Path(tmp))
    for p in copy_segment_pictures(args.result_dir, args.out_dir, stem):
        print(f"wrote {p} ({p.stat().st_size // 1024} KB)")
    return 0


def copy_segment_pictures(result_dir: Path, out_dir: Path, stem: str) -> list[Path]:
    """Copy the pictures ``backend segment`` wrote beside ``result.npz`` (sweep.gif, sweep.png and the first
    view's contact sheet) to ``out_dir`` as ``<stem>_sweep.gif``, ``<stem>_sweep.png``, ``<stem>_view.png``."""
    import shutil

    folder = result_dir if result_dir.is_dir() else result_dir.parent
    sheets = sorted((folder / "views").glob("*_sheet.png"))
    pairs = [(folder / "sweep.gif", f"{stem}_sweep.gif"), (folder / "sweep.png", f"{stem}_sweep.png")]
    if sheets:
        pairs.append((sheets[0], f"{stem}_view.png"))
    written = []
    for src, name in pairs:
        if src.is_file():
            shutil.copyfile(src, out_dir / name)
            written.append(out_dir / name)
    if not written:
        print(f"note: no sweep.gif / views/*_sheet.png in {folder} (made by `backend segment`); not copied")
    return written


def render_pictures(args: argparse.Namespace, result, stem: str, tiles_dir: Path) -> None:
    """The three renders into ``tiles_dir`` and the side-by-side picture into ``args.out_dir``."""
    out = tiles_dir

    bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
    scene = bpy.context.scene
    setup_render(scene, args.width, args.height)
    original = [o for o in scene.objects if not o.hide_render]

    cam = bpy.data.objects.new("READMECamera", bpy.data.cameras.new("READMECamera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    fit_camera(scene, cam, result.points)

    # 1. the scene itself
    if args.original_engine == "eevee":
        scene.render.engine = "BLENDER_EEVEE"
    else:
        use_workbench(scene, "MATERIAL")
    paths = [render(scene, out / f"{stem}_original.png")]

    # 2. the segmented point cloud at two thresholds, the scene hidden
    set_render_visible(original, False)
    use_workbench(scene, "OBJECT")
    captions = ["Blender scene"]
    for label, threshold in (("fine", args.fine), ("coarse", args.coarse)):
        min_size = max(20, result.n_points // 1000)
        sizes = tree_cut.cut(result.parents, result.altitudes, result.n_points, threshold).sizes
        big = int((sizes >= min_size).sum())
        # colour the segments of at least min_size points, the specks stay grey
        coloured = args.coloured if args.coloured > 0 else max(big, 1)
        parts, c = segment_objects(scene, result, threshold, coloured, args.radius_scale,
                                   name=f"Segmentation_{label}")
        print(f"{label}: threshold {threshold:g}: {c.n_segments} segments ({big} with >= {min_size} points)")
        paths.append(render(scene, out / f"{stem}_{label}.png"))
        set_render_visible(parts, False)
        captions.append(f"{label} cut (t = {threshold:g}): {big} segments")

    sheet = compose(paths, captions, args.out_dir / f"segmented_{stem}.png")
    written = [sheet]
    if args.tiles:
        from PIL import Image

        for p in paths:
            save_small(Image.open(p), p)
        written += paths
    for p in written:
        print(f"wrote {p} ({p.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    raise SystemExit(main())
