"""Audit of the rendered ground truth against the scene's known geometry (tiny real Cycles render).

Each test checks a claim of the renderer with evidence that does not come from the code under test:
object positions known from the example generator, the tree in hierarchy.json, and the backend's loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from backend.core import geometry as geo
from dataset_tools import cameras as cam
from dataset_tools import writers

from .conftest import SMALL, make_config
from .test_dataset import K_of, _edges, load_json, views


def _nodes(ds: Path):
    h = load_json(ds / "hierarchy.json")
    return h, {n["id"]: n for n in h["nodes"]}, {n["name"]: n for n in h["nodes"]}


def _interior(ids: np.ndarray, node_id: int) -> np.ndarray:
    """Pixels of ``node_id`` whose 3x3 neighbourhood is all ``node_id`` (no silhouette pixels)."""
    m = ids == node_id
    return m & ~_edges(ids)


def _world_points(ds: Path, splits=("train", "val", "test"), interior: bool = True):
    """(node id, world xyz) of every foreground pixel (only interior ones by default) of the views of ``splits``."""
    out_ids, out_pts = [], []
    for split in splits:
        tf, vs = views(ds, split)
        K = K_of(tf)
        for v in vs:
            keep = (v["ids"] > 0) & (~_edges(v["ids"]) if interior else True)
            out_ids.append(v["ids"][keep])
            out_pts.append(geo.unproject_depth(v["depth"], K, v["c2w"])[keep])
    return np.concatenate(out_ids), np.concatenate(out_pts)


# ------------------------------------------------------------------------------------------ hierarchy and levels


def test_levels_are_ancestors_and_masks_nest(small_dataset):
    """leaf -> object -> collection -> scene: each level node is an ancestor (or self) of the finer one in the
    tree, and in every image each segment of a level lies inside exactly one segment of the next coarser level."""
    h, nodes, _ = _nodes(small_dataset)
    lv = {k: {int(a): b for a, b in m.items()} for k, m in h["levels"].items()}

    def ancestors(i):
        out = [i]
        while nodes[out[-1]]["parent"] is not None:
            out.append(nodes[out[-1]]["parent"])
        return out

    leaves = [n["id"] for n in h["nodes"] if n["rendered"]]
    assert set(lv["object"]) == set(lv["collection"]) == set(lv["scene"]) == set(leaves)
    for leaf in leaves:
        obj, coll = lv["object"][leaf], lv["collection"][leaf]
        assert nodes[obj]["kind"] == "object" and obj in ancestors(leaf)
        assert coll in ancestors(obj)
        assert nodes[coll]["kind"] == "collection" or coll == obj  # loose objects form their own group
        assert lv["scene"][leaf] == h["root"]
    for split in ("train", "val_rotate_45"):
        _, vs = views(small_dataset, split)
        for v in vs:
            scene = (v["ids"] > 0).astype(np.uint16)
            for fine, coarse in ((v["ids"], v["obj"]), (v["obj"], v["coll"]), (v["coll"], scene)):
                for seg in set(np.unique(fine).tolist()) - {0}:
                    inside = np.unique(coarse[fine == seg])
                    assert len(inside) == 1 and inside[0] != 0, (seg, inside)
                np.testing.assert_array_equal(fine > 0, coarse > 0)


def test_backend_loader_reads_the_folder(small_dataset):
    """What dataset_tools writes is what backend.method.data reads: images, poses, K, depth, ids and levels."""
    from backend.method.data import load_ground_truth, load_scene

    s = load_scene(small_dataset, "train", normalised=False)
    tf, vs = views(small_dataset, "train")
    assert s.rgb.shape == (SMALL["n_train"], 64, 64, 3)
    np.testing.assert_allclose(s.K[0], K_of(tf), rtol=1e-6)
    np.testing.assert_allclose(s.c2w[1], vs[1]["c2w"], atol=1e-6)
    np.testing.assert_array_equal(s.depth[2], vs[2]["depth"])
    gt = load_ground_truth(small_dataset, "train", s.names)
    np.testing.assert_array_equal(gt.ids[0], vs[0]["ids"])
    masks = gt.level_masks(0, "collection", min_pixels=1)
    assert masks.shape[0] == len(set(np.unique(vs[0]["coll"]).tolist()) - {0})
    rot = load_scene(small_dataset, transforms="transforms_val_rotate_90.json", normalised=True)
    assert rot.depth is not None and len(rot.names) == SMALL["n_val"]


# ------------------------------------------------------------------------------------------ object kinds


def test_linked_duplicates_and_instances_get_distinct_ids(small_dataset):
    """The four table legs share one mesh and the two chairs are instances of one collection: each copy has
    its own id, and its pixels unproject to where that copy stands (not to another copy)."""
    h, nodes, by_name = _nodes(small_dataset)
    ids, pts = _world_points(small_dataset, interior=False)  # legs are 2-3 pixels wide at 64x64
    legs = {f"TableLeg{k}": xy for k, xy in enumerate([(0.7, 0.4), (-0.7, 0.4), (0.7, -0.4), (-0.7, -0.4)])}
    leg_ids = {by_name[n]["id"] for n in legs}
    assert len(leg_ids) == 4
    seen_legs = 0
    for name, xy in legs.items():
        p = pts[ids == by_name[name]["id"]]
        if len(p) >= 3:
            seen_legs += 1
            np.testing.assert_allclose(np.median(p[:, :2], axis=0), xy, atol=0.06)
    assert seen_legs >= 2
    for k, y in enumerate((-0.85, 0.85)):
        seat = by_name[f"Chair{k}.Seat"]
        assert nodes[seat["parent"]]["name"] == f"Chair{k}"
        assert h["levels"]["object"][str(seat["id"])] == by_name[f"Chair{k}"]["id"]
        chair_pts = pts[np.isin(ids, [n["id"] for n in h["nodes"] if n["name"].startswith(f"Chair{k}.")])]
        assert len(chair_pts) > 20
        assert (np.abs(chair_pts[:, 1] - y) < 0.26).mean() > 0.98  # chair footprint: y +- 0.225 (+ back)


def test_hidden_from_render_is_excluded(small_dataset):
    """A hide_render object and a render-disabled collection (both above the table) are nowhere: not in the
    tree, not in the bounds, no pixel lies where they would be."""
    _, _, by_name = _nodes(small_dataset)
    for name in ("HelperBox", "Helpers", "GuideSphere", "ChairSource", "Sun"):
        assert name not in by_name
    lo, hi = np.array(load_json(small_dataset / "meta.json")["scene_bounds"])
    assert hi[2] < 1.2  # the hidden helpers float at z = 2.5 and 3
    _, pts = _world_points(small_dataset)
    assert pts[:, 2].max() < 1.2


def test_curves_and_text_count(small_dataset):
    """The bevelled curve rim of the bowl is a rendered leaf of its own, and its pixels lie on the ring."""
    h, nodes, by_name = _nodes(small_dataset)
    rim = by_name["BowlRim"]
    assert rim["rendered"] and rim.get("type") == "CURVE" and nodes[rim["parent"]]["name"] == "FruitBowl"
    ids, pts = _world_points(small_dataset, interior=False)  # id and depth come from the same sample
    p = pts[ids == rim["id"]]
    assert len(p) >= 3
    r = np.hypot(p[:, 0] - 0.0, p[:, 1] - 0.15)
    assert np.median(np.abs(r - 0.215)) < 0.03 and np.median(np.abs(p[:, 2] - 0.89)) < 0.03


# ------------------------------------------------------------------------------------------ geometry


def test_depth_is_the_same_surface_from_every_view(small_dataset):
    """Interior pixels of the table top's upper face unproject onto the plane z = 0.79 in every view."""
    _, _, by_name = _nodes(small_dataset)
    ids, pts = _world_points(small_dataset)
    z = pts[(ids == by_name["TableTop"]["id"]) & (pts[:, 2] > 0.775), 2]  # upper face, not the sides
    assert len(z) > 100
    err = np.abs(z - 0.79)
    assert np.percentile(err, 95) < 2e-3, np.percentile(err, [50, 95, 100])


def test_transforms_follow_nerf_synthetic_convention(small_dataset):
    """camera_angle_x, fl_x and w agree; c2w is rigid, OpenGL axes: -Z looks at the centre, +Y is up-ish."""
    meta = load_json(small_dataset / "meta.json")
    centre = np.array(meta["scene_centre"])
    for name in ("transforms_train.json", "transforms_val.json", "transforms_test.json",
                 "transforms_val_rotate_135.json"):
        tf = load_json(small_dataset / name)
        assert tf["fl_x"] == pytest.approx(tf["w"] / (2 * math.tan(tf["camera_angle_x"] / 2)), rel=1e-12)
        assert cam.fov_from_focal(tf["w"], tf["fl_x"]) == pytest.approx(tf["camera_angle_x"], rel=1e-12)
        assert (tf["cx"], tf["cy"]) == (tf["w"] / 2, tf["h"] / 2) and tf["fl_y"] == tf["fl_x"]
        for fr in tf["frames"]:
            assert not fr["file_path"].endswith(".png") and fr["file_path"].startswith("./")
            c2w = np.array(fr["transform_matrix"])
            r = c2w[:3, :3]
            np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
            assert np.linalg.det(r) == pytest.approx(1.0)
            np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
            to_centre = centre - c2w[:3, 3]
            assert np.dot(-r[:, 2], to_centre / np.linalg.norm(to_centre)) == pytest.approx(1.0, abs=1e-9)
            assert r[2, 1] >= 0  # camera +Y (image up) never points below the horizon
            assert c2w[2, 3] >= centre[2] - 1e-9  # upper hemisphere (default)
            assert np.linalg.norm(to_centre) == pytest.approx(meta["camera_distance"])


@pytest.mark.parametrize("angle,suffix", [(10, ""), (45, "_45"), (90, "_90"), (135, "_135")])
def test_rotated_cameras_turn_about_the_vertical_through_the_centre(small_dataset, angle, suffix):
    """Rotation axis = world +Z through scene_centre: heights and distances to the axis are kept, the
    horizontal bearing turns by exactly ``angle`` (counter-clockwise from above), the view still aims at
    the centre and the camera's own axes turn by the same rotation."""
    meta = load_json(small_dataset / "meta.json")
    c = np.array(meta["scene_centre"])
    val = load_json(small_dataset / "transforms_val.json")["frames"]
    rot = load_json(small_dataset / f"transforms_val_rotate{suffix}.json")["frames"]
    rz = cam.rotation_matrix((0, 0, 1), angle)
    for fa, fb in zip(val, rot):
        a, b = np.array(fa["transform_matrix"]), np.array(fb["transform_matrix"])
        pa, pb = a[:3, 3] - c, b[:3, 3] - c
        assert pb[2] == pytest.approx(pa[2], abs=1e-9)
        assert np.hypot(*pb[:2]) == pytest.approx(np.hypot(*pa[:2]), abs=1e-9)
        bearing = math.degrees(math.atan2(pb[1], pb[0]) - math.atan2(pa[1], pa[0])) % 360
        assert bearing == pytest.approx(angle, abs=1e-6)
        np.testing.assert_allclose(b[:3, :3], rz @ a[:3, :3], atol=1e-9)
        assert np.dot(-b[:3, 2], -pb / np.linalg.norm(pb)) == pytest.approx(1.0, abs=1e-9)


def test_visibility_masks_mean_seen_in_both_views(small_dataset):
    """Independent check of val_visible: a pixel marked visible lands inside the other view on a surface at
    the same 3D point (same leaf id away from edges); a foreground pixel left out either leaves the other
    image or is hidden there by something nearer."""
    ds = small_dataset
    tf, vs_val = views(ds, "val")
    K = K_of(tf)
    checked_hidden = 0
    for suffix in ("", "_45", "_90", "_135"):
        _, vs_rot = views(ds, f"val_rotate{suffix}")
        for i, (va, vb) in enumerate(zip(vs_val, vs_rot)):
            vis = writers.read_png(ds / "val_visible" / f"r_{i}{suffix}.png")
            assert vis.dtype == np.uint8 and set(np.unique(vis).tolist()) <= {0, 255}
            vis = vis > 0
            pts = geo.unproject_depth(va["depth"], K, va["c2w"])
            uv, z = geo.project(pts, K, vb["c2w"])
            h, w = vb["depth"].shape
            with np.errstate(invalid="ignore"):
                inside = (va["depth"] > 0) & (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & \
                    (uv[..., 1] < h)
            assert not (vis & ~inside).any()
            r = np.clip(np.floor(uv[..., 1]), 0, h - 1).astype(int)
            c = np.clip(np.floor(uv[..., 0]), 0, w - 1).astype(int)
            d_b = vb["depth"][r, c]
            # nearest depth agreement in the 3x3 neighbourhood (slanted surfaces change fast across a pixel)
            near = np.full(z.shape, np.inf)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    d = vb["depth"][np.clip(r + dr, 0, h - 1), np.clip(c + dc, 0, w - 1)]
                    near = np.minimum(near, np.where(d > 0, np.abs(d - z), np.inf))
            calm = ~_edges(va["ids"]) & ~_edges(vb["ids"])[r, c]
            # visible -> the other view sees that very surface there
            sel = vis & calm
            assert (near[sel] <= 0.02 * z[sel]).all()
            assert (va["ids"][sel] == vb["ids"][r, c][sel]).mean() > 0.97
            # not visible but projecting inside -> occluded: the other view sees something clearly nearer
            hid = ~vis & inside & calm
            hid &= (~_edges(vb["ids"]))[r, c]
            if hid.any():
                checked_hidden += int(hid.sum())
                assert ((d_b[hid] > 0) & (d_b[hid] < z[hid] * 0.99)).mean() > 0.95
    assert checked_hidden > 0


# ------------------------------------------------------------------------------------------ resume


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_after_a_real_interruption_is_byte_identical(small_dataset, table_set_blend, tmp_path):
    """Interrupt the render itself (KeyboardInterrupt from the progress callback after 5 views, as Ctrl-C
    would), then rerun: finished views are skipped and the folder equals the uninterrupted one."""
    from backend.wire.files import is_temporary, temporary_sibling
    from dataset_tools.dataset import render_dataset

    out = tmp_path / "ds"

    def stop_after_five(done, total, message):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_dataset(table_set_blend, out, make_config(), progress=stop_after_five)
    assert (out / "meta.json").is_file() and len(list(out.rglob("*_ids.png"))) == 5
    assert not [p for p in out.rglob(".*tmp*")]  # no temporary left behind
    stray = temporary_sibling(out / "train" / "r_3.png").with_name(".r_3.png.4242.tmp")
    assert is_temporary(stray)
    stray.write_bytes(b"half a file")  # as a SIGKILL mid-write leaves it (the writer's own naming)
    calls = []
    result = render_dataset(table_set_blend, out, make_config(), progress=lambda d, t, m: calls.append((d, t)))
    assert result.skipped == 5 and result.rendered == sum(load_json(out / "meta.json")["counts"].values()) - 5
    assert calls[-1][0] == calls[-1][1]
    assert _all_files(out) == _all_files(small_dataset)
    again = render_dataset(table_set_blend, out, make_config())
    assert again.rendered == 0


def test_other_scene_or_foreign_folder_is_refused(small_dataset, dataset_copy, tmp_path):
    """A folder rendered from another .blend (different hash) or a non-empty folder without meta.json is
    refused, and nothing in it is touched."""
    from dataset_tools.dataset import render_dataset
    from dataset_tools.errors import DatasetError
    from dataset_tools.examples import write_example

    other = write_example("vehicle", tmp_path / "vehicle.blend")
    before = _all_files(dataset_copy)
    with pytest.raises(DatasetError, match="different settings"):
        render_dataset(other, dataset_copy, make_config())
    assert _all_files(dataset_copy) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        render_dataset(other, foreign, make_config())
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
