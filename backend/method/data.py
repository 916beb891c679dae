"""Read a Blender-HS (or any NeRF-synthetic) folder into a :class:`~backend.core.scene.Scene`.

The folder layout is the one ``dataset_tools`` writes (see ``docs/architecture.md``):
``transforms_<split>.json`` with NeRF-synthetic frames, RGBA images, optional
``depth/<split>/r_<i>.npy`` planar depth, and for evaluation ``gt_seg/<split>/<stem>_ids.png`` with
``hierarchy.json``. Every split of one folder is normalised the same way (from ``meta.json``'s scene
bounds when present, else from the train cameras), so train and val views share one frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.core.scene import Scene, SceneError, normalisation, normalise, unit_box_bounds


class DataError(ValueError):
    """A dataset folder is missing, incomplete or inconsistent; the message says which file."""


@dataclass
class GroundTruth:
    """Per-view ground truth of a Blender-HS split.

    ``ids``: uint16 ``[N, H, W]`` leaf node ids (0 = background); ``levels``: for each level name
    (``object``, ``collection``, ``scene``) a dict leaf id -> level node id; ``hierarchy`` the raw
    ``hierarchy.json``.
    """

    ids: np.ndarray
    levels: dict[str, dict[int, int]]
    hierarchy: dict

    def level_labels(self, leaf: np.ndarray, level: str) -> np.ndarray:
        """int64 ids of ``level``'s nodes for an array of leaf ids (0 stays 0: background or unknown)."""
        leaf = np.asarray(leaf).astype(np.int64)
        mapping = self.levels[level]
        lut = np.zeros(int(max(max(mapping, default=0), leaf.max(initial=0))) + 1, np.int64)
        for k, v in mapping.items():
            if k < lut.size:
                lut[k] = v
        lab = lut[leaf]
        lab[leaf == 0] = 0
        return lab

    def level_masks(self, view: int, level: str, min_pixels: int = 20) -> np.ndarray:
        """Bool ``[G, H, W]`` masks of one level in one view (segments under ``min_pixels`` dropped)."""
        leaf = self.ids[view]
        lab = self.level_labels(leaf, level)
        ids, counts = np.unique(lab[lab > 0], return_counts=True)
        keep = ids[counts >= min_pixels]
        return lab[None] == keep[:, None, None] if keep.size else np.zeros((0,) + leaf.shape, bool)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing {path.name} in {path.parent} (is this a Blender-HS / NeRF-synthetic folder?)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _read_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A planar depth map ``[H, W]``: a float .npy (never unpickled) of the image's size, finite and >= 0."""
    try:
        d = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, pickled or not an .npy
        raise DataError(f"cannot read depth {path}: {str(e)[:200]} (expected a float .npy of shape {shape})") from None
    if not isinstance(d, np.ndarray) or d.shape != shape or d.dtype.kind not in "fiu":
        raise DataError(f"depth {path} is {getattr(d, 'dtype', type(d).__name__)}{list(getattr(d, 'shape', ()))}, "
                        f"expected a float array of shape {list(shape)}")
    d = d.astype(np.float32)
    if not np.isfinite(d).all() or (d < 0).any():
        raise DataError(f"depth {path} has NaN/inf or negative values (0 = background)")
    return d


def _number(tf: dict, key: str, where: str, positive: bool = True) -> float:
    v = tf[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise DataError(f"{where}: {key} must be a {'positive ' if positive else ''}finite number, got {v!r}")
    return float(v)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    for candidate in (path, path.with_suffix(".png"), Path(str(path) + ".png")):
        if candidate.is_file():
            try:
                with Image.open(candidate) as im:
                    return np.asarray(im.convert("RGBA"))
            except OSError as e:
                raise DataError(f"cannot read image {candidate}: {e}") from None
    raise DataError(f"missing image {path} (listed in transforms)")


def scene_normalisation(folder: Path) -> tuple[np.ndarray, float]:
    """The one (offset, scale) used for every split of ``folder``."""
    meta_path = folder / "meta.json"
    bounds = None
    if meta_path.is_file():
        meta = _read_json(meta_path)
        if meta.get("scene_bounds") is not None:
            frame = meta.get("frame_bounds")
            bounds = unit_box_bounds(np.asarray(meta["scene_bounds"], np.float64),
                                     None if frame is None else np.asarray(frame, np.float64))
    train = _read_json(folder / "transforms_train.json")
    c2w = np.array([f["transform_matrix"] for f in train["frames"]], np.float64)
    return normalisation(c2w, bounds)


def load_scene(folder: str | Path, split: str = "train", transforms: str | None = None,
               with_depth: bool = True, normalised: bool = True, max_views: int | None = None) -> Scene:
    """Load one split of a dataset folder as a :class:`Scene`.

    ``transforms`` overrides the file name (e.g. ``transforms_val_rotate.json``). Depth is read from
    ``depth/<image dir>/<stem>.npy`` when every view has it. With ``normalised`` the poses and depth
    are mapped into the unit box (see :func:`scene_normalisation`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} does not exist")
    where = transforms or f"transforms_{split}.json"
    tf = _read_json(folder / where)
    if not isinstance(tf, dict):
        raise DataError(f"{where} must hold a JSON object with 'frames'")
    frames = tf.get("frames") or []
    if not isinstance(frames, list):
        raise DataError(f"{where}: 'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise DataError(f"{where} lists no frames")
    if max_views is not None:
        if max_views < 1:
            raise DataError(f"max_views must be >= 1, got {max_views}")
        frames = frames[:max_views]
    images, c2ws, names, depths = [], [], [], []
    for i, f in enumerate(frames):
        if not isinstance(f, dict) or not isinstance(f.get("file_path"), str) or not f["file_path"].strip():
            raise DataError(f"{where}: frame {i} needs a 'file_path' string")
        rel = f["file_path"].lstrip("./") if f["file_path"].startswith("./") else f["file_path"]
        img_path = folder / rel
        try:
            m = np.asarray(f.get("transform_matrix"), np.float64)
        except (TypeError, ValueError):  # ragged or non-numeric
            raise DataError(f"{where}: frame {i} transform_matrix must be a 4x4 matrix of numbers") from None
        if m.shape != (4, 4):
            raise DataError(f"{where}: frame {i} transform_matrix must be 4x4, got shape {list(m.shape)}")
        if not np.isfinite(m).all():
            raise DataError(f"{where}: frame {i} transform_matrix contains NaN/inf")
        if abs(np.linalg.det(m[:3, :3])) < 1e-6:
            raise DataError(f"{where}: frame {i} transform_matrix has a degenerate rotation (all zero?)")
        images.append(_read_image(img_path))
        c2ws.append(m)
        names.append(rel)
        dpath = folder / "depth" / Path(rel).with_suffix(".npy")
        depths.append(dpath if dpath.is_file() else None)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"images of {split} have different sizes: {sorted(shapes)}")
    rgba = np.stack(images)
    n, h, w, _ = rgba.shape
    c2w = np.stack(c2ws)
    if c2w.shape[1:] != (4, 4):
        raise DataError("transform_matrix must be 4x4")
    if not np.isfinite(c2w).all():
        raise DataError(f"camera poses in transforms_{split}.json contain NaN/inf")
    K = intrinsics_from_transforms(tf, w, h)
    depth = None
    if with_depth and all(d is not None for d in depths):
        depth = np.stack([_read_depth(d, (h, w)) for d in depths])
    scene = Scene(rgb=np.ascontiguousarray(rgba[..., :3]), alpha=np.ascontiguousarray(rgba[..., 3]),
                  c2w=c2w.astype(np.float32), K=np.repeat(K[None], n, 0), depth=depth, names=names)
    try:
        scene.validate()
    except SceneError as e:
        raise DataError(f"{folder}: {e}") from None
    if normalised:
        offset, scale = scene_normalisation(folder)
        scene = normalise(scene, offset, scale)
    return scene


def intrinsics_from_transforms(tf: dict, w: int, h: int) -> np.ndarray:
    """3x3 K from ``fl_x/fl_y/cx/cy`` when present, else from ``camera_angle_x`` (square pixels)."""
    where = "transforms"
    for key in ("fl_x", "fl_y", "w", "h"):
        if key in tf:
            _number(tf, key, where)
    for key in ("cx", "cy"):
        if key in tf:
            _number(tf, key, where, positive=False)
    if "fl_x" in tf:
        fx = float(tf["fl_x"]) * w / float(tf.get("w", w))
        fy = float(tf.get("fl_y", tf["fl_x"])) * h / float(tf.get("h", h))
        cx = float(tf.get("cx", float(tf.get("w", w)) / 2)) * w / float(tf.get("w", w))
        cy = float(tf.get("cy", float(tf.get("h", h)) / 2)) * h / float(tf.get("h", h))
    elif "camera_angle_x" in tf:
        angle = _number(tf, "camera_angle_x", where)
        if not angle < math.pi:
            raise DataError(f"{where}: camera_angle_x is in radians and must be in (0, pi), got {angle}")
        fx = fy = 0.5 * w / math.tan(0.5 * angle)
        cx, cy = w / 2, h / 2
    else:
        raise DataError("transforms file has neither fl_x nor camera_angle_x")
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float32)


def read_leaf_ids(folder: str | Path, split: str, stem: str) -> np.ndarray:
    """uint16 ``[H, W]`` leaf ids into ``hierarchy.json`` of one view (``gt_seg/<split>/<stem>_ids.png``;
    0 = background)."""
    from PIL import Image

    path = Path(folder) / "gt_seg" / split / f"{stem}_ids.png"
    if not path.is_file():
        raise DataError(f"missing ground truth {path}; render the dataset with dataset_tools to get it")
    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.uint16)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None


def load_ground_truth(folder: str | Path, split: str, names: list[str]) -> GroundTruth:
    """Read ``gt_seg/<split>/<stem>_ids.png`` for each view name and the level maps of ``hierarchy.json``."""
    folder = Path(folder)
    hier = _read_json(folder / "hierarchy.json")
    ids = [read_leaf_ids(folder, split, Path(name).stem) for name in names]
    levels = {lvl: {int(k): int(v) for k, v in m.items()} for lvl, m in hier.get("levels", {}).items()}
    for lvl in ("object", "collection", "scene"):
        if lvl not in levels:
            raise DataError(f"hierarchy.json has no '{lvl}' level")
    return GroundTruth(ids=np.stack(ids), levels=levels, hierarchy=hier)
