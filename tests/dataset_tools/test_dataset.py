"""End-to-end: a real (tiny) Cycles render of the bundled example, checked against its own ground truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from backend.core import geometry as geo
from dataset_tools import cameras as cam
from dataset_tools import writers
from dataset_tools.visibility import covisible, reproject

from .conftest import SMALL, make_config


def load_json(p: Path):
    return json.loads(p.read_text())


def views(ds: Path, split: str):
    tf = load_json(ds / f"transforms_{split}.json")
    out = []
    for i, fr in enumerate(tf["frames"]):
        stem = Path(fr["file_path"]).name
        out.append(dict(
            c2w=np.array(fr["transform_matrix"]),
            rgba=writers.read_png(ds / split / f"{stem}.png"),
            depth=np.load(ds / "depth" / split / f"{stem}.npy"),
            ids=writers.read_png(ds / "gt_seg" / split / f"{stem}_ids.png"),
            obj=writers.read_tiff(ds / "gt_seg" / split / f"{stem}_seg_objects.tif")[..., 0],
            coll=writers.read_tiff(ds / "gt_seg" / split / f"{stem}_seg_collections.tif")[..., 0],
        ))
    return tf, out


def K_of(tf):
    return np.array([[tf["fl_x"], 0, tf["cx"]], [0, tf["fl_y"], tf["cy"]], [0, 0, 1]])


def test_layout_and_transforms(small_dataset):
    ds = small_dataset
    for name in ["transforms_train.json", "transforms_val.json", "transforms_test.json", "transforms_val_rotate.json",
                 "transforms_val_rotate_45.json", "transforms_val_rotate_90.json", "transforms_val_rotate_135.json",
                 "hierarchy.json", "meta.json", "val_depth/r_0_depth.png", "val_visible/r_0.png",
                 "val_visible/r_0_rotate.png", "val_visible/r_1_rotate_135.png", "val_visible/r_1_45.png",
                 "val_rotate_90/r_1.png", "depth/val_rotate_45/r_0.npy", "gt_seg/val_rotate/r_1_ids.png",
                 "test/r_0.png"]:
        assert (ds / name).is_file(), name
    tf = load_json(ds / "transforms_train.json")
    assert len(tf["frames"]) == SMALL["n_train"]
    assert tf["frames"][2]["file_path"] == "./train/r_2"
    assert (tf["w"], tf["h"]) == (64, 64)
    assert tf["fl_x"] == pytest.approx(0.5 * tf["w"] / math.tan(0.5 * tf["camera_angle_x"]))
    assert tf["fl_y"] == tf["fl_x"] and (tf["cx"], tf["cy"]) == (32.0, 32.0)
    rgba = writers.read_png(ds / "train/r_0.png")
    assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
    assert 0 < (rgba[..., 3] > 0).mean() < 0.9  # transparent film around the content
    meta = load_json(ds / "meta.json")
    assert meta["counts"]["val_rotate_135"] == 2 and meta["settings"]["samples"] == SMALL["samples"]
    assert len(meta["source_sha256"]) == 64 and meta["blender_version"].startswith("5.")


def test_hierarchy_structure(small_dataset):
    h = load_json(small_dataset / "hierarchy.json")
    nodes = {n["id"]: n for n in h["nodes"]}
    by_name = {n["name"]: n for n in h["nodes"]}
    assert nodes[h["root"]]["kind"] == "scene"
    assert "ChairSource" not in by_name  # excluded collection
    assert "Sun" not in by_name  # lights do not render
    # nested two deep: Tableware -> FruitBowl -> Fruit -> Apple0
    apple = by_name["Apple0"]
    chain = []
    p = apple["parent"]
    while p is not None:
        chain.append(nodes[p]["name"])
        p = nodes[p]["parent"]
    assert chain[:3] == ["Fruit", "FruitBowl", "Tableware"]
    # parenting kept: legs under the table top; the object level is the top-most parent
    leg = by_name["TableLeg0"]
    assert nodes[leg["parent"]]["name"] == "TableTop"
    assert h["levels"]["object"][str(leg["id"])] == by_name["TableTop"]["id"]
    # two chair instances: distinct leaf ids, each grouped under its instancer
    seats = [n for n in h["nodes"] if n["name"].endswith("Seat")]
    assert len(seats) == 2 and seats[0]["id"] != seats[1]["id"]
    assert {nodes[s["parent"]]["name"] for s in seats} == {"Chair0", "Chair1"}
    for n in h["nodes"]:
        for c in n["children"]:
            assert nodes[c]["parent"] == n["id"]


def test_ids_agree_with_hierarchy_and_levels_nest(small_dataset):
    h = load_json(small_dataset / "hierarchy.json")
    leaves = {n["id"] for n in h["nodes"] if n["rendered"]}
    lv = {k: {int(a): b for a, b in m.items()} for k, m in h["levels"].items()}
    seen = set()
    for split in ["train", "val", "val_rotate_90"]:
        _, vs = views(small_dataset, split)
        for v in vs:
            ids = v["ids"]
            present = set(np.unique(ids).tolist()) - {0}
            assert present <= leaves
            seen |= present
            fg = ids > 0
            np.testing.assert_array_equal(v["depth"] > 0, fg)
            assert (v["rgba"][..., 3][fg] > 0).all()
            for level, img in (("object", v["obj"]), ("collection", v["coll"])):
                expect = np.zeros_like(ids)
                for leaf in present:
                    expect[ids == leaf] = lv[level][leaf]
                np.testing.assert_array_equal(img, expect)
            # nesting: every object segment lies in exactly one collection segment; scene level = foreground
            for o in set(np.unique(v["obj"]).tolist()) - {0}:
                assert len(np.unique(v["coll"][v["obj"] == o])) == 1
            np.testing.assert_array_equal(v["coll"] > 0, fg)
    assert len(seen) > 10  # most of the scene's objects appear somewhere


def test_ids_are_exact_integers_not_blended(small_dataset):
    """Edges between two objects hold one of the two ids, never an average (no anti-aliasing of ids)."""
    h = load_json(small_dataset / "hierarchy.json")
    leaves = {n["id"] for n in h["nodes"] if n["rendered"]}
    _, vs = views(small_dataset, "train")
    for v in vs:
        assert set(np.unique(v["ids"]).tolist()) <= leaves | {0}


def _edges(ids):
    e = np.zeros(ids.shape, bool)
    e[1:] |= ids[1:] != ids[:-1]
    e[:-1] |= ids[1:] != ids[:-1]
    e[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    e[:, :-1] |= ids[:, 1:] != ids[:, :-1]
    return e


def test_multiview_consistency(small_dataset):
    """Points unprojected from one view land on the same leaf id in another wherever visible."""
    tf, vs = views(small_dataset, "train")
    K = K_of(tf)
    agree = total = 0
    for a in range(len(vs)):
        for b in range(len(vs)):
            if a == b:
                continue
            va, vb = vs[a], vs[b]
            vis = covisible(va["depth"], va["c2w"], K, vb["depth"], vb["c2w"], K, search=0, rel_tol=0.005)
            rows, cols, _, _ = reproject(va["depth"], va["c2w"], K, vb["c2w"], K, vb["depth"].shape)
            away = vis & ~_edges(va["ids"]) & ~_edges(vb["ids"])[rows, cols]
            agree += (va["ids"][away] == vb["ids"][rows, cols][away]).sum()
            total += away.sum()
    print(f"multi-view agreement {agree}/{total} = {agree / total:.4f}")
    assert total > 150
    assert agree / total >= 0.99


def test_known_points_project_where_expected(small_dataset):
    """Independent of the depth maps: an object's world position projects onto that object's pixels,
    and planar depth puts the plate's surface at the plate's height."""
    h = load_json(small_dataset / "hierarchy.json")
    orange = next(n["id"] for n in h["nodes"] if n["name"] == "Orange")
    plate = next(n["id"] for n in h["nodes"] if n["name"] == "Plate0")
    tf, vs = views(small_dataset, "train")
    K = K_of(tf)
    checked = 0
    for v in vs:
        mask = v["ids"] == orange
        if mask.sum() >= 4:
            (u, vv), _ = geo.project(np.array([0.03, 0.02, 0.96]), K, v["c2w"])
            rows, cols = np.nonzero(mask)
            assert abs(cols.mean() + 0.5 - u) < 2.0 and abs(rows.mean() + 0.5 - vv) < 2.0
            checked += 1
        pmask = (v["ids"] == plate) & ~_edges(v["ids"])
        if pmask.sum() >= 4:
            pts = geo.unproject_depth(v["depth"], K, v["c2w"])[pmask]
            assert np.median(pts[:, 2]) == pytest.approx(0.8125, abs=0.02)  # plate top surface
    assert checked >= 1


def test_scene_bounds_contain_the_surface(small_dataset):
    meta = load_json(small_dataset / "meta.json")
    lo, hi = np.array(meta["scene_bounds"])
    np.testing.assert_allclose(lo, [-0.8, -1.075, 0.0], atol=0.02)
    tf, vs = views(small_dataset, "val")
    K = K_of(tf)
    for v in vs:
        pts = geo.unproject_depth(v["depth"], K, v["c2w"])[v["depth"] > 0]
        assert (pts >= lo - 0.05).all() and (pts <= hi + 0.05).all()


@pytest.mark.parametrize("angle,suffix", [(10, ""), (45, "_45"), (90, "_90"), (135, "_135")])
def test_rotated_views_and_visibility(small_dataset, angle, suffix):
    ds = small_dataset
    meta = load_json(ds / "meta.json")
    centre = np.array(meta["scene_centre"])
    tf_val, vs_val = views(ds, "val")
    tf_rot, vs_rot = views(ds, f"val_rotate{suffix}")
    K = K_of(tf_val)
    for i, (va, vb) in enumerate(zip(vs_val, vs_rot)):
        assert tf_rot["frames"][i]["file_path"] == f"./val_rotate{suffix}/r_{i}"
        np.testing.assert_allclose(vb["c2w"], cam.rotate_about_axis(va["c2w"], centre, angle), atol=1e-9)
        a, b = va["c2w"][:3, 3] - centre, vb["c2w"][:3, 3] - centre
        assert b[2] == pytest.approx(a[2])
        turned = math.degrees(math.atan2(b[1], b[0]) - math.atan2(a[1], a[0]))
        assert (turned - angle + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)
        vis_a = writers.read_png(ds / "val_visible" / f"r_{i}{suffix}.png") > 0
        vis_b = writers.read_png(ds / "val_visible" / f"r_{i}_rotate{suffix}.png") > 0
        np.testing.assert_array_equal(vis_a, covisible(va["depth"], va["c2w"], K, vb["depth"], vb["c2w"], K))
        np.testing.assert_array_equal(vis_b, covisible(vb["depth"], vb["c2w"], K, va["depth"], va["c2w"], K))
        assert not vis_a[va["depth"] == 0].any() and not vis_b[vb["depth"] == 0].any()
        if angle == 10:
            assert vis_a.sum() >= 0.8 * (va["depth"] > 0).sum()
        # visible pixels carry the same leaf in both views (away from edges)
        rows, cols, _, _ = reproject(va["depth"], va["c2w"], K, vb["c2w"], K, vb["depth"].shape)
        away = vis_a & ~_edges(va["ids"]) & ~_edges(vb["ids"])[rows, cols]
        if away.sum() > 20:
            assert (va["ids"][away] == vb["ids"][rows, cols][away]).mean() >= 0.97


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_after_interruption_is_byte_identical(small_dataset, dataset_copy, table_set_blend):
    from dataset_tools.dataset import render_dataset

    ds = dataset_copy
    (ds / "train/r_1.png").unlink()  # view never finished
    p = ds / "gt_seg/val_rotate_45/r_0_ids.png"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated (only possible if not atomic)
    (ds / "depth/test/r_0.npy").write_bytes(b"")
    (ds / "val_visible/r_1_rotate_90.png").unlink()
    (ds / "train" / ".r_2.png.123.tmp").write_bytes(b"junk")  # a stray temporary from a killed writer
    result = render_dataset(table_set_blend, ds, make_config())
    assert result.rendered == 3
    assert result.skipped == sum(load_json(ds / "meta.json")["counts"].values()) - 3
    assert _all_files(ds) == _all_files(small_dataset)


def test_mismatched_settings_are_refused(dataset_copy, table_set_blend):
    from dataset_tools.dataset import render_dataset
    from dataset_tools.errors import DatasetError

    with pytest.raises(DatasetError, match="different settings"):
        render_dataset(table_set_blend, dataset_copy, make_config(samples=5))
