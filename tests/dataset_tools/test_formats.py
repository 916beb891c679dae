"""The folder reads in the tools people already use: each check follows what that tool's loader requires.

Written from the documented formats (no loader code copied or vendored):

- nerfstudio, ``nerfstudio-data`` dataparser (``ns-train nerfacto --data OUT``): ``OUT/transforms.json`` with
  ``frames[].file_path`` relative to the folder, with its extension; global ``fl_x, fl_y, cx, cy, w, h``
  (or per frame); ``camera_model`` one of its names; ``transform_matrix`` camera-to-world with OpenGL axes;
  once any ``<split>_filenames`` list is present, all three must be, and each name must be a frame;
  ``depth_file_path`` on every frame or on none, a 16-bit image (or .npy) multiplied by
  ``depth_unit_scale_factor`` (default 1e-3: millimetres) to metres, z-depth unless told it is Euclidean,
  0 = no depth; ``applied_transform`` a 3x4 matrix appended with ``[0, 0, 0, 1]``.
- nerfstudio, ``blender-data`` dataparser: ``transforms_{train,val,test}.json`` with ``camera_angle_x`` and
  ``frames[].file_path`` without extension (``./`` removed, ``.png`` appended); the focal length is
  ``0.5 * W / tan(0.5 * camera_angle_x)`` and the principal point the image centre.
- instant-ngp: ``aabb_scale`` a power of two up to 128, ``aabb`` ``[[min], [max]]`` in the frames' world
  coordinates, mapped to its unit cube by ``scale = 1 / longest side`` and the box centre to 0.5; the
  trained volume is ``aabb_scale`` unit cubes wide around 0.5; extension-less ``file_path`` resolves to an
  existing ``.png``; focal length from ``fl_x`` or ``camera_angle_x``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dataset_tools import writers

#: nerfstudio's camera model names (``CAMERA_MODEL_TO_TYPE``) of pinhole-like cameras.
NERFSTUDIO_PINHOLE_MODELS = {"SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"}


def load(p: Path):
    return json.loads(p.read_text())


def K_of(tf: dict) -> np.ndarray:
    return np.array([[tf["fl_x"], 0, tf["cx"]], [0, tf["fl_y"], tf["cy"]], [0, 0, 1]], float)


def unproject_opengl(depth: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """World points of pixels with depth > 0: z-depth along -Z of an OpenGL camera (+Y up, +X right)."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u]
    x = (u + 0.5 - K[0, 2]) / K[0, 0] * z
    y = -(v + 0.5 - K[1, 2]) / K[1, 1] * z
    p = np.stack([x, y, -z], axis=-1)
    return p @ c2w[:3, :3].T + c2w[:3, 3]


# ------------------------------------------------------------------------------------------ nerfstudio-data


def test_nerfstudio_transforms_json(small_dataset):
    ds = small_dataset
    meta, tf = load(ds / "meta.json"), load(ds / "transforms.json")
    assert tf["camera_model"] in NERFSTUDIO_PINHOLE_MODELS and tf["camera_model"] == "OPENCV"
    for key in ("fl_x", "fl_y", "cx", "cy"):
        assert isinstance(tf[key], float)
    assert isinstance(tf["w"], int) and isinstance(tf["h"], int)
    frames = tf["frames"]
    counts = meta["counts"]
    assert len(frames) == counts["train"] + counts["val"] + counts["test"]
    resolved = set()
    for fr in frames:
        p = Path(fr["file_path"])
        assert not p.is_absolute() and p.suffix == ".png" and (ds / p).is_file()
        img = writers.read_png(ds / p)
        assert img.shape[:2] == (tf["h"], tf["w"])
        c2w = np.array(fr["transform_matrix"], float)
        assert c2w.shape == (4, 4) and np.isfinite(c2w).all()
        resolved.add((ds / p).resolve())
    assert len(resolved) == len(frames)
    # split lists: all three present, each name a frame, train disjoint from eval
    split = {}
    for name in ("train", "val", "test"):
        split[name] = {(ds / n).resolve() for n in tf[f"{name}_filenames"]}
        assert split[name] <= resolved
    assert len(split["train"]) == counts["train"] and len(split["val"]) == counts["val"]
    assert len(split["test"]) == counts["test"]
    assert not split["train"] & (split["val"] | split["test"])
    assert all(p.parent.name == "train" for p in split["train"])
    # the poses are those of the NeRF-synthetic files
    ours = {f"train/{Path(f['file_path']).name}.png": f["transform_matrix"]
            for f in load(ds / "transforms_train.json")["frames"]}
    for fr in frames:
        if fr["file_path"] in ours:
            np.testing.assert_array_equal(fr["transform_matrix"], ours[fr["file_path"]])
    # applied_transform: a 3x4 rigid transform (identity: poses are the .blend's world frame)
    at = np.array(tf["applied_transform"], float)
    assert at.shape == (3, 4)
    np.testing.assert_allclose(np.vstack([at, [0, 0, 0, 1]]), np.eye(4))


def test_nerfstudio_depth_files(small_dataset):
    """Every frame has a depth file; at the default unit scale (1e-3) it is the planar depth in metres, and
    unprojected with the OpenGL convention it lands on the scene's geometry."""
    ds = small_dataset
    meta, tf = load(ds / "meta.json"), load(ds / "transforms.json")
    lo, hi = np.array(meta["scene_bounds"])
    K = K_of(tf)
    depth_unit_scale_factor = 1e-3  # nerfstudio's default: millimetres
    assert all("depth_file_path" in fr for fr in tf["frames"])
    for fr in tf["frames"]:
        p = ds / fr["depth_file_path"]
        assert p.suffix == ".png"
        raw = writers.read_png(p)
        assert raw.dtype == np.uint16 and raw.shape == (tf["h"], tf["w"])
        depth = raw.astype(np.float64) * depth_unit_scale_factor
        split, stem = Path(fr["file_path"]).parent.name, Path(fr["file_path"]).stem
        exact = np.load(ds / "depth" / split / f"{stem}.npy")
        np.testing.assert_array_equal(depth > 0, exact > 0)  # 0 = no depth = background
        assert np.abs(depth - exact).max() <= 0.5e-3 + 1e-9
        pts = unproject_opengl(depth, np.array(fr["transform_matrix"]), K)
        assert len(pts) > 0
        assert (pts >= lo - 2e-3).all() and (pts <= hi + 2e-3).all()


def test_png16_millimetres():
    d = np.array([[0.0, 0.0004, 0.0006, 1.2344, 65.535, 65.6, np.inf]])
    np.testing.assert_array_equal(writers.depth_to_png16_mm(d), [[0, 0, 1, 1234, 65535, 0, 0]])


# ------------------------------------------------------------------------------------------ blender-data


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_nerfstudio_blender_dataparser_files(small_dataset, split):
    ds = small_dataset
    tf = load(ds / f"transforms_{split}.json")
    assert tf["frames"]
    for fr in tf["frames"]:
        img = ds / (fr["file_path"].replace("./", "") + ".png")
        assert img.is_file()
    h, w = writers.read_png(ds / (tf["frames"][0]["file_path"].replace("./", "") + ".png")).shape[:2]
    focal = 0.5 * w / math.tan(0.5 * float(tf["camera_angle_x"]))
    assert focal == pytest.approx(tf["fl_x"]) and (tf["cx"], tf["cy"]) == (w / 2, h / 2)


def test_missing_splits_are_written_empty(tmp_path):
    """transforms_{train,val,test}.json exist even for a split without views; nerfstudio's split lists then
    evaluate on the split that has views."""
    from dataset_tools.examples import render_example

    out = render_example("vehicle", tmp_path / "v", n_train=2, n_val=1, n_test=0, res=16, samples=1,
                         engine="workbench", rotations=(10.0,))
    assert load(out / "transforms_test.json")["frames"] == []
    tf = load(out / "transforms.json")
    assert tf["val_filenames"] == ["val/r_0.png"] and tf["test_filenames"] == ["val/r_0.png"]
    assert len(tf["frames"]) == 3


# ------------------------------------------------------------------------------------------ instant-ngp


def ngp_mapping(tf: dict) -> tuple[float, np.ndarray]:
    """instant-ngp's (scale, offset) from ``aabb``: longest side -> 1, box centre -> 0.5."""
    lo, hi = np.array(tf["aabb"], float)
    scale = 1.0 / max((hi - lo).max(), 1e-6)
    return scale, 0.5 - 0.5 * (lo + hi) * scale


def test_instant_ngp_box_and_paths(small_dataset):
    ds = small_dataset
    meta = load(ds / "meta.json")
    for name in ["transforms.json", "transforms_train.json", "transforms_val.json", "transforms_test.json",
                 "transforms_val_rotate_45.json"]:
        tf = load(ds / name)
        s = tf["aabb_scale"]
        assert isinstance(s, int) and 1 <= s <= 128 and s & (s - 1) == 0
        lo, hi = np.array(tf["aabb"], float)
        assert (lo < hi).all()
        assert "fl_x" in tf or "camera_angle_x" in tf
        for fr in tf["frames"]:
            p = ds / fr["file_path"]
            if not p.suffix and not p.exists():
                p = p.with_suffix(".png")
            assert p.is_file(), fr["file_path"]
        scale, offset = ngp_mapping(tf)
        # the framed content fills instant-ngp's unit cube; all of the scene lies in the trained volume
        fb = np.array(meta["frame_bounds"]) * scale + offset
        assert (fb >= -1e-9).all() and (fb <= 1 + 1e-9).all() and (fb[1] - fb[0]).max() > 0.75
        sb = np.array(meta["scene_bounds"]) * scale + offset
        assert (sb >= 0.5 - s / 2 - 1e-9).all() and (sb <= 0.5 + s / 2 + 1e-9).all()
