"""The procedural example scenes and :func:`dataset_tools.examples.render_example` (real bpy, tiny renders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataset_tools import writers


def _depth_of(nodes: list[dict]) -> dict[int, int]:
    """Number of collection nodes above each node (scene = 0)."""
    by_id = {n["id"]: n for n in nodes}
    out = {}
    for n in nodes:
        k, p = 0, n["parent"]
        while p is not None:
            k += by_id[p]["kind"] == "collection"
            p = by_id[p]["parent"]
        out[n["id"]] = k
    return out


@pytest.mark.parametrize("name", ["table_set", "bookshelf", "vehicle", "room", "surroundings"])
def test_example_has_a_real_hierarchy_and_textured_materials(name):
    import bpy

    from dataset_tools.examples import build_example
    from dataset_tools.hierarchy import build_hierarchy, realised_instances

    scene = build_example(name)
    with realised_instances(scene, bpy.context.view_layer):
        h, objs = build_hierarchy(scene, bpy.context.view_layer)
        mats = {m for o in objs.values() for m in o.data.materials if m is not None}
    nodes = h.nodes
    colls = [n for n in nodes if n["kind"] == "collection"]
    leaves = h.leaf_ids
    assert len(leaves) >= 10 and len(colls) >= 4
    # scene -> collection -> collection -> object somewhere
    assert max(_depth_of(nodes)[i] for i in leaves) >= 2
    assert len(set(h.levels["collection"].values())) >= 3 and len(set(h.levels["object"].values())) >= 6
    # varied colours and procedural textures on the rendered objects
    assert len(mats) >= 4
    colours = {tuple(round(c, 2) for c in m.diffuse_color[:3]) for m in mats}
    assert len(colours) >= 4
    textured = [m for m in mats if any(n.type.startswith("TEX_") for n in m.node_tree.nodes)]
    assert len(textured) == len(mats)


def test_vehicle_text_plate_is_a_rendered_segment():
    """A text (FONT) object renders and gets its own id; seen from behind the car it covers pixels."""
    from dataset_tools.cameras import look_at
    from dataset_tools.config import RenderConfig
    from dataset_tools.examples import build_example
    from dataset_tools.render import render_views

    scene = build_example("vehicle")
    pose = look_at((-3.0, 0.0, 0.6), (-1.0, 0.0, 0.45))
    rv = render_views(scene, RenderConfig(width=48, height=48, samples=2), poses=pose[None])
    plate = next(n for n in rv.hierarchy.nodes if n["name"] == "PlateText")
    assert plate["rendered"] and plate["type"] == "FONT"
    assert (rv.ids[0] == plate["id"]).sum() >= 10


def test_cycles_images_carry_texture(small_dataset):
    """Inside one object (the table top, away from its silhouette) colours vary: the images have texture."""
    h = json.loads((small_dataset / "hierarchy.json").read_text())
    top = next(n["id"] for n in h["nodes"] if n["name"] == "TableTop")
    spreads = []
    for i in range(4):
        rgba = writers.read_png(small_dataset / "train" / f"r_{i}.png").astype(float)
        ids = writers.read_png(small_dataset / "gt_seg" / "train" / f"r_{i}_ids.png")
        inner = ids == top
        for ax in (0, 1):
            inner[1:-1] &= np.roll(ids == top, 1, ax)[1:-1] & np.roll(ids == top, -1, ax)[1:-1]
        if inner.sum() > 30:
            spreads.append(rgba[inner][:, :3].std(axis=0).max())
    assert spreads and max(spreads) > 3.0


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_render_example_in_process_and_resume(tmp_path):
    """The backend demo's entry point: renders, loads with backend.method.data, resumes to identical files, refuses
    other settings."""
    from backend.method.data import load_ground_truth, load_scene
    from dataset_tools.errors import DatasetError
    from dataset_tools.examples import render_example

    calls = []
    kw = dict(n_train=3, n_val=1, res=32, samples=2, rotations=(10.0,))
    out = render_example("table_set", tmp_path / "demo", progress=lambda d, t, m: calls.append((d, t, m)), **kw)
    assert out == (tmp_path / "demo").resolve()
    assert calls[-1][0] == calls[-1][1] == 3 + 1 + 1 + 1  # train, val, val_rotate, one visibility pair
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"] == "example:table_set" and len(meta["source_sha256"]) == 64
    assert meta["settings"]["engine"] == "cycles" and meta["render_device"] == "CPU"
    s = load_scene(out, "train")
    gt = load_ground_truth(out, "train", s.names)
    assert s.rgb.shape == (3, 32, 32, 3) and gt.ids.shape == (3, 32, 32) and (gt.ids > 0).any()
    first = _files(out)
    (out / "train" / "r_2.png").unlink()
    render_example("table_set", out, **kw)
    assert _files(out) == first
    with pytest.raises(DatasetError, match="different settings"):
        render_example("table_set", out, **{**kw, "samples": 3})
    with pytest.raises(DatasetError, match="different settings"):
        render_example("bookshelf", out, **kw)
    with pytest.raises(DatasetError, match="unknown engine"):
        render_example("table_set", tmp_path / "x", engine="EEVEE", **kw)


def test_render_example_workbench_engine(tmp_path):
    from dataset_tools.examples import render_example

    out = render_example("bookshelf", tmp_path / "wb", n_train=2, n_val=0, res=24, samples=1, engine="WORKBENCH")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["settings"]["engine"] == "workbench" and meta["render_device"] == "WORKBENCH"
    ids = writers.read_png(out / "gt_seg" / "train" / "r_0_ids.png")
    assert len(np.unique(ids)) >= 5
