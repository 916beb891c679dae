"""Orchestration: render a Blender-HS folder from a .blend file or from the open scene.

Layout written (see ``docs/architecture.md``): ``transforms_{train,val,test}.json`` (always, with instant-ngp's
``aabb``/``aabb_scale``), ``transforms.json`` (nerfstudio's format), ``transforms_val_rotate[_N].json``,
``{split}/r_<i>.png``, ``depth/{split}/r_<i>.npy`` (and ``.png`` in millimetres for train/val/test),
``gt_seg/{split}/r_<i>_{seg_objects.tif,seg_collections.tif,ids.png}``, ``val_depth/r_<i>_depth.png``,
``val_visible/r_<i>[_N].png`` (val-view pixels also visible in the view turned by N degrees; no suffix for
10) and ``val_visible/r_<i>_rotate[_N].png`` (turned-view pixels also visible in the val view),
``hierarchy.json`` and ``meta.json``.

Resuming: ``meta.json`` is written first; a rerun into the same folder compares it (everything but the
source path) and refuses a mismatch; every view whose files are all present and readable is skipped.
Each file is written atomically (temporaries left by a killed writer are deleted on resume), and
rendering is deterministic, so a resumed folder is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from backend.wire.files import is_temporary

from . import framing, writers
from .camera_plan import content_ids, plan_cameras
from .cameras import fit_distance, intrinsics, rotate_about_axis
from .coverage import Coverage, coverage
from .config import RenderConfig, rotation_suffix
from .errors import DatasetError
from .render import PreparedScene, ProgressFn, ViewData, prepared_scene, quiet_output, scene_camera_poses
from .visibility import covisibility_pair

FORMAT_VERSION = 1
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


@dataclass
class ViewJob:
    """One view to render: its split folder (``train``, ``val_rotate_45``...), index and pose."""

    split: str
    index: int
    c2w: np.ndarray

    @property
    def stem(self) -> str:
        return f"r_{self.index}"

    def files(self) -> dict[str, str]:
        """Relative paths of every file this view produces, keyed by role."""
        s, stem = self.split, self.stem
        out = {
            "rgba": f"{s}/{stem}.png",
            "depth": f"depth/{s}/{stem}.npy",
            "seg_objects": f"gt_seg/{s}/{stem}_seg_objects.tif",
            "seg_collections": f"gt_seg/{s}/{stem}_seg_collections.tif",
            "ids": f"gt_seg/{s}/{stem}_ids.png",
        }
        if s == "val":
            out["depth_png"] = f"val_depth/{stem}_depth.png"
        return out


@dataclass
class DatasetResult:
    """What :func:`render_dataset` did."""

    out_dir: Path
    rendered: int = 0
    skipped: int = 0
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)
    coverage: Coverage | None = None
    """What the train views show (also in meta.json's ``coverage``)."""


def rotated_split(angle: float) -> str:
    return "val_rotate" + rotation_suffix(angle)


def placed_views(poses: dict[str, np.ndarray], centre: np.ndarray, config: RenderConfig,
                 scene_poses: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Poses [N, 4, 4] per split folder from planned ``poses`` per split (train replaced by the scene's own
    cameras when given), with every rotated val split turned about the vertical through ``centre``."""
    plan: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        if split == "train" and scene_poses is not None:
            plan[split] = scene_poses
        elif split in poses and len(poses[split]):
            plan[split] = poses[split]
    if "val" in plan:
        for angle in config.rotations:
            plan[rotated_split(angle)] = rotate_about_axis(plan["val"], centre, angle)
    return plan


def _depth_range(plan: dict[str, np.ndarray], bounds: np.ndarray) -> tuple[float, float]:
    """(0, farthest corner of ``bounds`` from any val camera): the 8-bit val depth range of scored placements."""
    eyes = np.concatenate([p[:, :3, 3] for s, p in plan.items() if s.startswith("val")] or [np.zeros((0, 3))])
    if not len(eyes):
        return 0.0, 1.0
    corners = np.array([[bounds[i][0], bounds[j][1], bounds[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    return 0.0, float(np.linalg.norm(eyes[:, None] - corners[None], axis=-1).max())


def train_coverage(out_dir: Path, n_train: int, content: list[int], names: dict[int, str],
                   placement: str = "") -> Coverage:
    """Coverage of the train views written in ``out_dir`` (from their ground-truth id maps)."""
    views = ((f"train/r_{i}", writers.read_png(out_dir / f"gt_seg/train/r_{i}_ids.png")) for i in range(n_train))
    return coverage(views, content, names, placement)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _readable(path: Path) -> bool:
    try:
        if path.suffix == ".png":
            writers.read_png(path)
        elif path.suffix == ".tif":
            writers.read_tiff(path)
        elif path.suffix == ".npy":
            writers.read_npy(path)
        else:
            return path.is_file()
        return True
    except (OSError, ValueError, KeyError, EOFError, IndexError):
        return False


def view_done(out_dir: Path, rel_paths) -> bool:
    """Whether every file exists and parses (the resume check)."""
    return all(_readable(out_dir / p) for p in rel_paths)


def _prepare_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise DatasetError(f"output folder {out_dir} is not writable")
    probe = out_dir / f".write_probe{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DatasetError(f"output folder {out_dir} is not writable: {exc.strerror or exc}") from None


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete temporaries a killed writer left behind (``.<name>.<pid>.tmp``, see ``backend.wire.files``).

    Returns how many were removed. Only run before rendering into ``out_dir`` (not concurrently).
    """
    n = 0
    for p in out_dir.rglob(".*.tmp"):
        if is_temporary(p) and p.is_file():
            p.unlink()
            n += 1
    return n


#: meta.json keys added after format version 1 was released -> the value a folder without them implies
#: (None: any value; the framing they describe is compared through scene_centre and camera_distance).
_ADDED_KEYS = {"frame": [], "frame_bounds": None, "frame_backdrops": None, "placement": None,
               "placement_used": "orbit", "enclosure": None}

#: meta.json keys written after the views (not settings; never compared).
_RESULT_KEYS = {"coverage"}


def _check_meta(out_dir: Path, meta: dict) -> None:
    path = out_dir / "meta.json"
    if not path.exists():
        others = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")]
        if others:
            raise DatasetError(f"output folder {out_dir} is not empty and has no meta.json; choose an empty folder")
        return
    try:
        old = writers.read_json(path)
    except (OSError, ValueError):
        raise DatasetError(f"{path} is unreadable; remove the folder or choose another") from None
    old_flat = {**{k: v for k, v in old.items() if k != "settings"}, **old.get("settings", {})}
    new_flat = {**{k: v for k, v in meta.items() if k != "settings"}, **meta.get("settings", {})}
    for key in sorted(set(old_flat) | set(new_flat)):
        if key == "source" or key in _RESULT_KEYS:
            continue
        if key not in old_flat and key in _ADDED_KEYS and _ADDED_KEYS[key] in (None, new_flat.get(key)):
            continue  # a folder from before the key existed; scene_centre and camera_distance still guard it
        if old_flat.get(key) != new_flat.get(key):
            raise DatasetError(f"{out_dir} was rendered with different settings ({key}: {old_flat.get(key)!r} there, "
                               f"{new_flat.get(key)!r} now); use a new folder or the original settings")


def _camera_fields(config: RenderConfig) -> dict:
    K = intrinsics(config.width, config.height, config.camera_angle_x)
    return {
        "camera_angle_x": float(config.camera_angle_x),
        "w": int(config.width), "h": int(config.height),
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
    }


def _transforms(poses: np.ndarray, split: str, config: RenderConfig, ngp: dict) -> dict:
    """A NeRF-synthetic ``transforms_<split>.json`` (extension-less ``./split/r_i`` paths) plus instant-ngp's box."""
    return {
        **_camera_fields(config), **ngp,
        "frames": [{"file_path": f"./{split}/r_{i}", "transform_matrix": np.asarray(c2w, float).tolist()}
                   for i, c2w in enumerate(poses)],
    }


#: Splits listed in ``transforms.json`` (nerfstudio), in frame order.
NERFSTUDIO_SPLITS = ("train", "val", "test")


def nerfstudio_depth_file(split: str, index: int) -> str:
    """Relative path of a view's 16-bit millimetre depth PNG (``depth_file_path`` in ``transforms.json``)."""
    return f"depth/{split}/r_{index}.png"


def _nerfstudio_transforms(plan: dict[str, np.ndarray], config: RenderConfig, ngp: dict) -> dict:
    """``transforms.json`` in nerfstudio's own format (nerfstudio-data dataparser), also read by instant-ngp.

    Every train, val and test view is a frame (``file_path`` with its extension, ``depth_file_path``);
    ``train_filenames`` / ``val_filenames`` / ``test_filenames`` pick the splits (an empty val or test list
    falls back to the other one, as nerfstudio evaluates on both). Poses are the .blend's world frame, so
    ``applied_transform`` is the identity.
    """
    frames, names = [], {}
    for split in NERFSTUDIO_SPLITS:
        poses = plan.get(split, np.zeros((0, 4, 4)))
        names[split] = [f"{split}/r_{i}.png" for i in range(len(poses))]
        frames += [{"file_path": f"{split}/r_{i}.png", "depth_file_path": nerfstudio_depth_file(split, i),
                    "transform_matrix": np.asarray(c2w, float).tolist()} for i, c2w in enumerate(poses)]
    return {
        "camera_model": "OPENCV", **_camera_fields(config),
        "applied_transform": np.eye(4)[:3].tolist(), **ngp,
        "train_filenames": names["train"],
        "val_filenames": names["val"] or names["test"],
        "test_filenames": names["test"] or names["val"],
        "frames": frames,
    }


def _write_view(out_dir: Path, job: ViewJob, view: ViewData, prep: PreparedScene, depth_range) -> None:
    files = job.files()
    obj_lut = prep.hierarchy.level_lut("object")
    coll_lut = prep.hierarchy.level_lut("collection")
    writers.write_png(out_dir / files["rgba"], view.rgba)
    writers.write_npy(out_dir / files["depth"], view.depth.astype(np.float32))
    writers.write_tiff(out_dir / files["seg_objects"], writers.seg_tiff_image(obj_lut[view.ids]))
    writers.write_tiff(out_dir / files["seg_collections"], writers.seg_tiff_image(coll_lut[view.ids]))
    writers.write_png(out_dir / files["ids"], view.ids.astype(np.uint16))
    if "depth_png" in files:
        writers.write_png(out_dir / files["depth_png"], writers.depth_to_png8(view.depth, *depth_range))


def _ensure_nerfstudio_depth(out_dir: Path, job: ViewJob) -> None:
    """Write the view's millimetre depth PNG from its float depth unless a readable one is there."""
    rel = nerfstudio_depth_file(job.split, job.index)
    if not view_done(out_dir, (rel,)):
        depth = writers.read_npy(out_dir / job.files()["depth"])
        writers.write_png(out_dir / rel, writers.depth_to_png16_mm(depth))


def visibility_files(index: int, angle: float) -> tuple[str, str]:
    """(val-view mask, rotated-view mask) relative paths for val view ``index`` and rotation ``angle``."""
    suf = rotation_suffix(angle)
    return f"val_visible/r_{index}{suf}.png", f"val_visible/r_{index}_rotate{suf}.png"


def _drive(steps, progress: ProgressFn | None) -> DatasetResult:
    """Run a render generator to its end, reporting each ``(done, total, what)`` it yields; returns its result."""
    while True:
        try:
            done, total, what = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, what)


def _render_into(scene, out_dir: Path, config: RenderConfig, source: str, source_sha256: str | None,
                 progress: ProgressFn | None) -> DatasetResult:
    return _drive(_render_steps(scene, out_dir, config, source, source_sha256), progress)


def _render_steps(scene, out_dir: Path, config: RenderConfig, source: str,
                  source_sha256: str | None) -> Generator[tuple[int, int, str], None, DatasetResult]:
    """The dataset render one file group at a time: yields ``(done, total, what)`` after each view (and
    each visibility pair) and returns the :class:`DatasetResult`. Closing it early restores the scene; the
    folder then holds the finished views, and a later render resumes from them."""
    t0 = time.perf_counter()
    config.validate()
    _prepare_out_dir(out_dir)
    with prepared_scene(scene, config) as prep:
        centre, radius = prep.centre, prep.radius
        distance = fit_distance(radius, config.camera_angle_x, config.width, config.height, config.margin)
        scene_poses = None
        if config.use_scene_cameras:
            scene_poses = scene_camera_poses(scene)
            if len(scene_poses) == 0:
                raise DatasetError("the scene has no camera objects (--use-scene-cameras)")
        counts = {"train": 0 if scene_poses is not None else config.n_train, "val": config.n_val,
                  "test": config.n_test}
        placement = plan_cameras(prep, config, counts)
        centre = placement.centre
        plan = placed_views(placement.poses, centre, config, scene_poses)
        depth_range = (max(distance - radius, 0.0), distance + radius) if placement.used == "orbit" else \
            _depth_range(plan, prep.bounds)
        ngp = framing.ngp_box(prep.frame_box, prep.bounds, config.margin)
        settings = config.to_meta()
        settings.pop("threads")
        settings.pop("device")  # the preference; the device actually used is compared instead
        meta = {
            "format": "blender-hs", "format_version": FORMAT_VERSION, "generator": "dataset_tools",
            "source": source, "source_sha256": source_sha256, "blender_version": bpy.app.version_string,
            "settings": settings, "seed": config.seed,
            "counts": {split: int(len(p)) for split, p in plan.items()},
            "scene_bounds": prep.bounds.tolist(), "scene_centre": centre.tolist(), "scene_radius": radius,
            "frame_bounds": prep.frame_box.tolist(), "frame_backdrops": list(prep.backdrops),
            "placement_used": placement.used, "enclosure": round(float(placement.enclosure), 4),
            "render_device": prep.device, "camera_distance": distance, "val_depth_png_range": list(depth_range),
            "colour": "sRGB (Standard view transform), straight alpha",
            "conventions": "c2w OpenGL axes (NeRF-synthetic); depth planar, world units, 0 = background",
            "num_nodes": len(prep.hierarchy.nodes), "num_leaves": len(prep.hierarchy.leaf_ids),
        }
        _check_meta(out_dir, meta)
        remove_stale_temporaries(out_dir)
        writers.write_json(out_dir / "meta.json", meta)
        writers.write_json(out_dir / "hierarchy.json", prep.hierarchy.to_json())
        for split, poses in {**{s: np.zeros((0, 4, 4)) for s in NERFSTUDIO_SPLITS}, **plan}.items():
            name = "transforms_val_rotate" + split[len("val_rotate"):] if split.startswith("val_rotate") else \
                f"transforms_{split}"
            writers.write_json(out_dir / f"{name}.json", _transforms(poses, split, config, ngp))
        writers.write_json(out_dir / "transforms.json", _nerfstudio_transforms(plan, config, ngp))

        jobs = [ViewJob(split, i, c2w) for split, poses in plan.items() for i, c2w in enumerate(poses)]
        n_vis = len(plan.get("val", [])) * len(config.rotations)
        total = len(jobs) + n_vis
        result = DatasetResult(out_dir=out_dir, counts=meta["counts"])
        done = 0
        for job in jobs:
            if view_done(out_dir, job.files().values()):
                result.skipped += 1
            else:
                view = prep.renderer.render(job.c2w)
                _write_view(out_dir, job, view, prep, depth_range)
                result.rendered += 1
            if job.split in NERFSTUDIO_SPLITS:
                _ensure_nerfstudio_depth(out_dir, job)
            done += 1
            yield done, total, f"{job.split}/{job.stem}"

        K = intrinsics(config.width, config.height, config.camera_angle_x)
        for i in range(len(plan.get("val", []))):
            for angle in config.rotations:
                rel_a, rel_b = visibility_files(i, angle)
                if not view_done(out_dir, (rel_a, rel_b)):
                    split_b = rotated_split(angle)
                    d_a = writers.read_npy(out_dir / f"depth/val/r_{i}.npy")
                    d_b = writers.read_npy(out_dir / f"depth/{split_b}/r_{i}.npy")
                    vis_a, vis_b = covisibility_pair(d_a, plan["val"][i], K, d_b, plan[split_b][i], K,
                                                     config.visibility_rel_tol)
                    writers.write_png(out_dir / rel_a, vis_a.astype(np.uint8) * 255)
                    writers.write_png(out_dir / rel_b, vis_b.astype(np.uint8) * 255)
                done += 1
                yield done, total, f"val_visible/r_{i}{rotation_suffix(angle)}"
        names = {n["id"]: n["name"] for n in prep.hierarchy.nodes}
        result.coverage = train_coverage(out_dir, len(plan.get("train", [])), content_ids(prep, config), names,
                                         placement.used)
        writers.write_json(out_dir / "meta.json", {**meta, "coverage": result.coverage.to_json()})
    result.seconds = time.perf_counter() - t0
    return result


def check_blend_file(path: Path) -> None:
    """Raise :class:`DatasetError` unless ``path`` is a readable .blend (plain, gzip or zstd compressed)."""
    if not path.exists():
        raise DatasetError(f"no such file: {path}")
    if not path.is_file():
        raise DatasetError(f"not a file: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not (head.startswith(b"BLENDER") or head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd")):
        raise DatasetError(f"not a .blend file: {path}")


def open_blend(path: str | Path):
    """Open a .blend in this Blender session and return its active scene."""
    path = Path(path).expanduser().resolve()
    check_blend_file(path)
    try:
        with quiet_output(bpy.app.background):
            bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    except RuntimeError as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise DatasetError(f"cannot open {path}: {lines[-1] if lines else 'unknown error'}") from None
    return bpy.context.scene


def render_dataset(blend_path: str | Path, out_dir: str | Path, config: RenderConfig | None = None,
                   progress: ProgressFn | None = None) -> DatasetResult:
    """Render the Blender-HS folder ``out_dir`` for the .blend at ``blend_path`` (opens it, replacing the session)."""
    config = config or RenderConfig()
    config.validate()
    blend_path = Path(blend_path).expanduser().resolve()
    scene = open_blend(blend_path)
    return _render_into(scene, Path(out_dir).expanduser().resolve(), config, str(blend_path),
                        sha256_file(blend_path), progress)


def render_dataset_from_open_scene(out_dir: str | Path, config: RenderConfig | None = None, scene=None,
                                   progress: ProgressFn | None = None, source: str | None = None,
                                   source_sha256: str | None = None) -> DatasetResult:
    """Render the Blender-HS folder for the scene open in this session (the add-on's entry point).

    The scene is left unchanged. Recorded in meta.json: ``source`` (default: the saved file's path or
    ``"<unsaved>"``) and ``source_sha256`` (default: the saved file's hash when it has no unsaved changes,
    else None); a resume must match the hash.
    """
    return _drive(render_dataset_steps(out_dir, config, scene, source, source_sha256), progress)


def render_dataset_steps(out_dir: str | Path, config: RenderConfig | None = None, scene=None,
                         source: str | None = None,
                         source_sha256: str | None = None) -> Generator[tuple[int, int, str], None, DatasetResult]:
    """:func:`render_dataset_from_open_scene` one view at a time (the add-on's modal operator): yields
    ``(done, total, what)`` and returns the :class:`DatasetResult` (``StopIteration.value``); closing the
    generator early restores the scene and leaves a folder that a later render resumes."""
    config = config or RenderConfig()
    scene = scene or bpy.context.scene
    path = bpy.data.filepath
    if source_sha256 is None:
        source_sha256 = sha256_file(path) if path and not bpy.data.is_dirty and os.path.isfile(path) else None
    return (yield from _render_steps(scene, Path(out_dir).expanduser().resolve(), config,
                                     source or path or "<unsaved>", source_sha256))
