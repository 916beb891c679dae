"""Framing: cameras frame the content, not the floor under it (``--frame``, ``RenderConfig.frame``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset_tools import framing, writers

from .conftest import make_config

REPO = Path(__file__).resolve().parents[2]


def box(lo, hi, rot_deg: float = 0.0) -> np.ndarray:
    """World corners [8, 3] (Blender bound_box order) of an axis box, optionally turned about world X."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    c = np.array([(x0, y0, z0), (x0, y0, z1), (x0, y1, z1), (x0, y1, z0),
                  (x1, y0, z0), (x1, y0, z1), (x1, y1, z1), (x1, y1, z0)], float)
    a = np.radians(rot_deg)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return c @ r.T


# ------------------------------------------------------------------------------------------ the rule (pure)


def test_floor_is_a_backdrop_table_top_is_not():
    floor = box((-3, -3, 0), (3, 3, 0))
    top = box((-0.5, -0.3, 0.72), (0.5, 0.3, 0.76))  # flat (4 cm / 60 cm) but not large
    leg = box((-0.5, -0.3, 0), (-0.46, -0.26, 0.72))
    cup = box((0, 0, 0.76), (0.1, 0.1, 0.88))
    mask = framing.backdrop_mask(np.stack([floor, top, leg, cup]))
    assert mask.tolist() == [True, False, False, False]


def test_walls_of_a_room_and_a_tilted_backdrop():
    walls = [box((-3, -3, 0), (3, 3, 0.02)), box((-3, 3, 0), (3, 3.1, 3)), box((3, -3, 0), (3.1, 3, 3)),
             box((-3, -3, 0), (3, 3, 0), rot_deg=30)]  # a plane turned 30 degrees: still flat in its own axes
    desk = [box((-0.5, -0.3, 0), (0.5, 0.3, 0.8))]
    mask = framing.backdrop_mask(np.stack(walls + desk))
    assert mask.tolist() == [True, True, True, True, False]


def test_no_backdrop_without_content_or_when_not_much_larger():
    plane = box((-3, -3, 0), (3, 3, 0))
    assert not framing.backdrop_mask(np.stack([plane, box((-1, -1, 0), (1, 1, 0.01))])).any()  # all flat
    assert not framing.backdrop_mask(np.stack([plane, box((-1.5, -1, 0), (1.5, 1, 1))])).any()  # 6 m < 3 x 3 m
    rod = box((0, 0, 0), (0.02, 0.02, 6))  # thin in two dimensions: a rod, not flat
    assert not framing.backdrop_mask(np.stack([rod, box((0, 0, 0), (0.5, 0.5, 0.5))])).any()


def test_ngp_box_is_a_power_of_two_that_holds_the_whole_scene():
    frame = np.array([[-0.5, -0.3, 0.0], [0.5, 0.3, 0.9]])
    ngp = framing.ngp_box(frame, np.array([[-3, -3, 0], [3, 3, 0.9]]), margin=0.1)
    assert ngp["aabb_scale"] == 8  # cube side 1.08 m; the floor needs 6 m around the centre
    np.testing.assert_allclose(ngp["aabb"], [[-0.6, -0.36, -0.09], [0.6, 0.36, 0.99]])
    assert framing.ngp_box(frame, frame)["aabb_scale"] == 1
    assert framing.ngp_box(frame, frame * 1e4)["aabb_scale"] == 128  # instant-ngp's largest


def test_named_leaves_follow_the_hierarchy():
    nodes = [dict(id=1, name="Scene", parent=None, children=[2, 5], rendered=False),
             dict(id=2, name="Desk", parent=1, children=[3, 4], rendered=False),
             dict(id=3, name="Top", parent=2, children=[], rendered=True),
             dict(id=4, name="Items", parent=2, children=[6], rendered=False),
             dict(id=5, name="Floor", parent=1, children=[], rendered=True),
             dict(id=6, name="Cup", parent=4, children=[], rendered=True)]
    assert framing.named_leaves(nodes, ["Items"]) == ([6], [])
    assert framing.named_leaves(nodes, ["Desk", "Nope"]) == ([3, 6], ["Nope"])
    assert framing.named_leaves(nodes, ["Scene"]) == ([3, 5, 6], [])
    assert framing.suggestion("Itmes", ["Items", "Floor"]) == " (did you mean 'Items'?)"


# ------------------------------------------------------------------------------------------ a desk on a floor


def build_desk_scene():
    """A 6 m floor plane, a 1 m desk (top + four legs) and four small objects on it, in collections
    Room (Floor), Desk (DeskTop, legs) -> Items (cups, a ball, a box) and a render-hidden Hidden."""
    import bpy  # noqa: I001
    import bmesh

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene

    def coll(name, parent):
        c = bpy.data.collections.new(name)
        parent.children.link(c)
        return c

    def mesh(name, c, build, loc, scale=(1, 1, 1)):
        me = bpy.data.meshes.new(name)
        bm = bmesh.new()
        build(bm)
        bm.to_mesh(me)
        bm.free()
        obj = bpy.data.objects.new(name, me)
        obj.location, obj.scale = loc, scale
        c.objects.link(obj)
        return obj

    def cube(bm):
        bmesh.ops.create_cube(bm, size=1.0)

    def plane(bm):
        bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=3.0)  # 6 m x 6 m

    def sphere(bm):
        bmesh.ops.create_uvsphere(bm, u_segments=16, v_segments=8, radius=0.5)

    room, desk = coll("Room", scene.collection), coll("Desk", scene.collection)
    items, hidden = coll("Items", desk), coll("Hidden", scene.collection)
    mesh("Floor", room, plane, (0, 0, 0))
    mesh("DeskTop", desk, cube, (0, 0, 0.74), (1.0, 0.6, 0.04))
    for k, (x, y) in enumerate([(0.46, 0.26), (-0.46, 0.26), (0.46, -0.26), (-0.46, -0.26)]):
        mesh(f"DeskLeg{k}", desk, cube, (x, y, 0.36), (0.04, 0.04, 0.72))
    mesh("Cup0", items, cube, (0.25, 0.1, 0.82), (0.1, 0.1, 0.12))
    mesh("Cup1", items, cube, (-0.3, -0.1, 0.82), (0.1, 0.1, 0.12))
    mesh("Ball", items, sphere, (0.0, 0.05, 0.84), (0.16, 0.16, 0.16))
    mesh("Box", items, cube, (-0.05, -0.15, 0.8), (0.2, 0.12, 0.08))
    mesh("Ghost", hidden, cube, (0, 0, 5), (0.1, 0.1, 0.1))
    hidden.hide_render = True
    return scene


def _fractions(out: Path, names: set[str], of_ids: bool = False) -> np.ndarray:
    """Per train view: fraction of the pixels (of all, or of those with a rendered id) showing ``names``."""
    h = json.loads((out / "hierarchy.json").read_text())
    ids_of = np.array(sorted(n["id"] for n in h["nodes"] if n["rendered"] and n["name"] in names))
    fr = []
    for p in sorted((out / "gt_seg" / "train").glob("*_ids.png")):
        ids = writers.read_png(p)
        fr.append(np.isin(ids, ids_of).sum() / max((ids > 0).sum() if of_ids else ids.size, 1))
    return np.array(fr)


CONFIG = dict(n_train=4, n_val=0, n_test=0, width=48, height=48, engine="workbench", samples=1)
DESK = {"DeskTop", "DeskLeg0", "DeskLeg1", "DeskLeg2", "DeskLeg3", "Cup0", "Cup1", "Ball", "Box"}
ITEMS = {"Cup0", "Cup1", "Ball", "Box"}


@pytest.fixture(scope="module")
def desk_renders(tmp_path_factory):
    """The desk scene rendered with the default framing, with everything framed and with ``Items`` framed."""
    from dataset_tools.dataset import render_dataset_from_open_scene

    root = tmp_path_factory.mktemp("framing")
    outs = {}
    for key, frame in (("auto", ()), ("all", ("*",)), ("items", ("Items",))):
        scene = build_desk_scene()
        outs[key] = render_dataset_from_open_scene(root / key, make_config(**CONFIG, frame=frame), scene=scene,
                                                   source="desk").out_dir
    return outs


def test_default_framing_leaves_the_floor_out(desk_renders):
    out = desk_renders["auto"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["frame_backdrops"] == ["Floor"] and meta["settings"]["frame"] == []
    # the floor still renders and keeps its ids; only the cameras moved
    assert _fractions(out, {"Floor"}).mean() > 0.05
    assert (_fractions(out, DESK, of_ids=True) > 0.15).all()  # of the pixels with an id, > 15 % are the desk's
    desk = _fractions(out, DESK)  # of the whole image (sky included): ~12 % on average for this low, wide desk
    assert desk.mean() > 0.08, desk
    # everything framed (the old behaviour): the desk is a few pixels
    everything = _fractions(desk_renders["all"], DESK)
    assert everything.mean() < 0.01 and desk.mean() > 5 * everything.mean(), everything
    # scene_bounds keep the whole scene; the cameras look at the framed content's centre
    lo, hi = np.array(meta["scene_bounds"])
    assert hi[0] - lo[0] == pytest.approx(6.0)
    fb = np.array(meta["frame_bounds"])
    np.testing.assert_allclose(meta["scene_centre"], fb.mean(axis=0))
    assert fb[1, 0] - fb[0, 0] == pytest.approx(1.0, abs=1e-6)
    # instant-ngp: the unit cube holds the desk, aabb_scale the whole floor
    tf = json.loads((out / "transforms.json").read_text())
    assert tf["aabb_scale"] == 8


def test_frame_names_a_collection(desk_renders):
    out = desk_renders["items"]
    meta = json.loads((out / "meta.json").read_text())
    fb = np.array(meta["frame_bounds"])
    # Items' box: cups, ball and box on the desk top (x -0.35..0.3, z 0.76..0.88)
    np.testing.assert_allclose(fb, [[-0.35, -0.21, 0.76], [0.3, 0.15, 0.92]], atol=1e-6)
    np.testing.assert_allclose(meta["scene_centre"], fb.mean(axis=0))
    items = _fractions(out, ITEMS)
    auto = _fractions(desk_renders["auto"], ITEMS)
    assert items.mean() > 0.05 and items.mean() > 2 * auto.mean(), (items, auto)
    for fr in json.loads((out / "transforms_train.json").read_text())["frames"]:
        c2w = np.array(fr["transform_matrix"])
        assert np.linalg.norm(c2w[:3, 3] - fb.mean(axis=0)) == pytest.approx(meta["camera_distance"])


def test_resume_refuses_another_framing_and_accepts_folders_from_before_it(desk_renders, tmp_path):
    import shutil

    from dataset_tools.dataset import render_dataset_from_open_scene
    from dataset_tools.errors import DatasetError

    out = tmp_path / "copy"
    shutil.copytree(desk_renders["auto"], out)
    with pytest.raises(DatasetError, match="different settings"):
        render_dataset_from_open_scene(out, make_config(**CONFIG, frame=("Desk",)), scene=build_desk_scene(),
                                       source="desk")
    # a folder written before framing existed: no frame keys in meta.json, same cameras -> resumes
    meta = json.loads((out / "meta.json").read_text())
    for key in ("frame_bounds", "frame_backdrops"):
        meta.pop(key)
    meta["settings"].pop("frame")
    (out / "meta.json").write_text(json.dumps(meta))
    for p in (out / "depth" / "train").glob("*.png"):
        p.unlink()  # nor the millimetre depth PNGs: made again without rendering
    res = render_dataset_from_open_scene(out, make_config(**CONFIG), scene=build_desk_scene(), source="desk")
    assert res.rendered == 0 and res.skipped == CONFIG["n_train"]
    assert len(list((out / "depth" / "train").glob("*.png"))) == CONFIG["n_train"]
    assert json.loads((out / "meta.json").read_text())["frame_backdrops"] == ["Floor"]


def test_config_rejects_bad_frame_values():
    from dataset_tools.errors import DatasetError

    for bad in (("*", "Desk"), ("",), "Desk"):
        with pytest.raises(DatasetError, match="frame"):
            make_config(frame=bad).validate()


def test_cli_frame_names_and_errors(tmp_path):
    """``--frame NAME`` through the real CLI; unknown names and content that does not render: one line, exit 2."""
    import bpy

    build_desk_scene()
    blend = tmp_path / "desk.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "dataset_tools", "render", str(blend), *map(str, args),
                               "--train", "1", "--val", "0", "--res", "16", "--engine", "workbench", "--quiet"],
                              capture_output=True, text=True, timeout=180, cwd=REPO)

    for name, needle in (("Itmes", "no collection or object named 'Itmes' (did you mean 'Items'?)"),
                         ("Hidden", "nothing in 'Hidden' renders")):
        proc = cli(tmp_path / f"o_{name}", "--frame", f"Desk,{name}")
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("dataset-tools: error: ") and needle in lines[0], lines
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / f"o_{name}" / "meta.json").exists()
    proc = cli(tmp_path / "ok", "--frame", "Cup0, Ball")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "ok" / "meta.json").read_text())
    assert meta["settings"]["frame"] == ["Cup0", "Ball"]
    np.testing.assert_allclose(meta["frame_bounds"], [[-0.08, -0.03, 0.76], [0.3, 0.15, 0.92]], atol=1e-6)


def test_the_unit_box_fits_the_framed_content_not_the_floor(desk_renders):
    """The backend fits its unit box (and so its feature grid) to twice the framed content's box, cut to what
    renders: the 6 m floor under the 1 m desk no longer sets the box (everything framed: it still does)."""
    from backend.method.data import scene_normalisation

    for key in ("auto", "all"):
        meta = json.loads((desk_renders[key] / "meta.json").read_text())
        fb, sb = np.array(meta["frame_bounds"]), np.array(meta["scene_bounds"])
        _, scale = scene_normalisation(desk_renders[key])
        want = np.minimum(2.0 * (fb[1] - fb[0]), sb[1] - sb[0]).max()
        assert 1.0 / scale == pytest.approx(want, rel=1e-5), key
    _, scale = scene_normalisation(desk_renders["auto"])
    assert 1.0 / scale < 0.5 * 6.0, "the box is set by the desk, not by the 6 m floor"
