"""Masks supplied by the user: with the scene, or on disk next to the dataset.

Looked up per view, in this order:

1. ``Scene.masks`` when the scene carries masks;
2. ``<folder>/<split>_seg/<stem>/<k>.png``: the released Blender-HS layout, one binary PNG per mask
   (non-zero = inside), ``k`` ordered numerically;
3. ``<folder>/<split>_seg/<stem>.npz``: one array ``masks`` (or the file's only array) ``[M, H, W]``,
   bool or 0/non-0 integers.

``<folder>`` is :attr:`GivenConfig.folder`, else the dataset folder passed as ``data_dir``;
``<stem>`` is the view's file name without extension (``train/r_3`` -> ``r_3``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backend.method.masks.errors import MaskSourceError
from backend.core.scene import Scene


@dataclass
class GivenConfig:
    """Where user-supplied masks are read from."""

    folder: Path | None = None
    """Folder holding ``<split>_seg/``; None = the dataset folder (``data_dir``)."""
    use_scene_masks: bool = True
    """Prefer masks carried by the scene (``Scene.masks``) over files."""


def _sort_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def read_png_masks(folder: Path, shape: tuple[int, int]) -> np.ndarray:
    """Bool ``[M, H, W]`` from ``folder/<k>.png`` (one binary mask per file, non-zero = inside)."""
    from PIL import Image

    files = sorted(folder.glob("*.png"), key=_sort_key)
    masks = []
    for f in files:
        try:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L")) > 0
        except OSError as e:
            raise MaskSourceError(f"cannot read mask {f}: {e}") from None
        if arr.shape != shape:
            raise MaskSourceError(f"mask {f} is {arr.shape[1]}x{arr.shape[0]}, the image is {shape[1]}x{shape[0]}")
        masks.append(arr)
    return np.stack(masks) if masks else np.zeros((0,) + shape, bool)


def read_npz_masks(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Bool ``[M, H, W]`` from an ``.npz`` holding ``masks`` (or a single array)."""
    try:
        with np.load(path) as z:
            if "masks" in z.files:
                arr = z["masks"]
            elif len(z.files) == 1:
                arr = z[z.files[0]]
            else:
                raise MaskSourceError(f"{path} holds {z.files}; expected one array named 'masks'")
    except (OSError, ValueError) as e:
        if isinstance(e, MaskSourceError):
            raise
        raise MaskSourceError(f"cannot read masks file {path}: {e}") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != shape:
        raise MaskSourceError(f"{path}: masks must be [M,{shape[0]},{shape[1]}], got {arr.shape}")
    return arr.astype(bool)


def masks_for_scene(scene: Scene, config: GivenConfig, data_dir: Path | None = None, split: str = "train",
                    progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """The user's masks of every view; :class:`MaskSourceError` naming the first view without any."""
    n, shape = scene.num_views, (scene.height, scene.width)
    if config.use_scene_masks and scene.masks is not None:
        if len(scene.masks) != n:
            raise MaskSourceError(f"the scene carries masks for {len(scene.masks)} views but has {n} views")
        out = []
        for i, m in enumerate(scene.masks):
            m = np.asarray(m)
            if m.ndim != 3 or m.shape[1:] != shape:
                raise MaskSourceError(f"masks of view {i} must be [M,{shape[0]},{shape[1]}], got {m.shape}")
            if m.shape[0] == 0:
                raise MaskSourceError(f"view {i} ({_name(scene, i)}) has no masks in the scene")
            out.append(m.astype(bool))
        return out
    folder = Path(config.folder) if config.folder is not None else data_dir
    if folder is None:
        raise MaskSourceError("mask source 'given': the scene carries no masks and no folder was given "
                              "(set masks.given.folder or pass the dataset folder)")
    if not scene.names:
        raise MaskSourceError("mask source 'given' reads files per view but the scene has no view names")
    seg = Path(folder) / f"{split}_seg"
    out = []
    for i in range(n):
        stem = Path(scene.names[i]).stem
        png_dir, npz = seg / stem, seg / f"{stem}.npz"
        if png_dir.is_dir():
            masks = read_png_masks(png_dir, shape)
        elif npz.is_file():
            masks = read_npz_masks(npz, shape)
        else:
            raise MaskSourceError(f"view {stem}: no masks (looked for {png_dir}/<k>.png and {npz})")
        if masks.shape[0] == 0:
            raise MaskSourceError(f"view {stem}: no masks in {png_dir if png_dir.is_dir() else npz}")
        out.append(masks)
        if progress is not None:
            progress(i + 1, n)
    return out


def _name(scene: Scene, i: int) -> str:
    return scene.names[i] if scene.names else f"#{i}"
