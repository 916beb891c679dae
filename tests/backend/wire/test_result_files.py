"""result_files: PLY property names by threshold, the coloured PLY, a self-describing hierarchy.json,
atomic writes, and what other programs (Open3D's PLY reader) make of the files."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from backend.wire import result_files as rf
from backend.wire import tree_cut as tc
from backend.wire.protocol import JobResult, ResultArrays


def nested_result(n: int = 60) -> JobResult:
    """Points in 3 fine segments at 0.05 merging into 2 at 0.2 and 1 at 0.4, with a matching hierarchy."""
    rng = np.random.default_rng(0)
    fine = np.repeat([0, 1, 2], [30, 20, 10])[rng.permutation(n)]
    mid = np.where(fine == 2, 1, fine)            # 2 joins 1
    coarse = np.zeros(n, np.int32)
    labels = np.stack([fine, mid, coarse]).astype(np.int32)
    thresholds = [0.05, 0.2, 0.4]
    hier = {"thresholds": thresholds, "levels": [
        {"threshold": 0.05, "segments": [{"id": 0, "size": 30, "parent": 0}, {"id": 1, "size": 20, "parent": 1},
                                         {"id": 2, "size": 10, "parent": 1}]},
        {"threshold": 0.2, "segments": [{"id": 0, "size": 30, "parent": 0}, {"id": 1, "size": 30, "parent": 0}]},
        {"threshold": 0.4, "segments": [{"id": 0, "size": 60, "parent": None}]}]}
    arrays = {ResultArrays.POINTS: rng.normal(size=(n, 3)).astype(np.float32),
              ResultArrays.COLORS: rng.integers(0, 256, (n, 3)).astype(np.uint8),
              ResultArrays.LABELS: labels, ResultArrays.THRESHOLDS: np.asarray(thresholds, np.float32)}
    return JobResult(arrays=arrays, meta={"hierarchy": hier, "distance": "1 - cosine", "max_segments": 200})


def test_doctests():
    assert doctest.testmod(rf).failed == 0


def test_property_names_are_the_thresholds_and_unique():
    assert rf.label_properties([0.05, 0.1, 0.2, 1.5]) == ["seg_t0_05", "seg_t0_1", "seg_t0_2", "seg_t1_5"]
    assert rf.label_properties(np.float32([0.3, 0.3])) == ["seg_t0_3", "seg_t0_3_2"]
    for t in (0.05, 0.125, 0.4, 2.0):
        assert rf.threshold_of_property(rf.label_property(t)) == pytest.approx(t)


def test_outputs_ply_properties_comments_and_coloured_copy(tmp_path):
    res = nested_result()
    files = rf.write_outputs(res, tmp_path)
    assert [f.name for f in files] == ["result.npz", "hierarchy.json", "points.ply", "points_segments.ply"]
    xyz, props = rf.read_ply(tmp_path / "points.ply")
    np.testing.assert_array_equal(xyz, res.arrays["points"])
    assert list(props)[3:6] == ["red", "green", "blue"]
    labels = rf.ply_labels(props)
    assert [t for t, _ in labels] == pytest.approx([0.05, 0.2, 0.4])
    for (_, lab), want in zip(labels, res.arrays["labels"]):
        np.testing.assert_array_equal(lab, want)
    comments = rf.read_ply_comments(tmp_path / "points.ply")
    assert any("seg_t<T>: segment id at threshold T" in c for c in comments)

    # the coloured copy: the middle cut (0.2), one colour per segment, distinct between segments
    xyz2, p2 = rf.read_ply(tmp_path / "points_segments.ply")
    np.testing.assert_array_equal(xyz2, xyz)
    assert set(p2) == {"x", "y", "z", "red", "green", "blue", "seg_t0_2"}
    rgb = np.stack([p2["red"], p2["green"], p2["blue"]], 1)
    mid = res.arrays["labels"][1]
    per_seg = {s: {tuple(c) for c in rgb[mid == s]} for s in np.unique(mid)}
    assert all(len(v) == 1 for v in per_seg.values()) and len({next(iter(v)) for v in per_seg.values()}) == 2
    assert not list(tmp_path.glob(".*tmp")), "atomic writes leave no temporary file"


def test_old_label_names_still_read(tmp_path):
    rf.write_ply(tmp_path / "old.ply", np.zeros((4, 3), np.float32), None, [np.arange(4), -np.ones(4)])
    _, props = rf.read_ply(tmp_path / "old.ply")
    assert [t for t, _ in rf.ply_labels(props)] == [None, None]
    assert rf.ply_labels(props)[1][1].tolist() == [-1] * 4


def test_a_standard_reader_opens_the_coloured_ply(tmp_path):
    o3d = pytest.importorskip("open3d")
    res = nested_result()
    rf.write_outputs(res, tmp_path)
    pcd = o3d.io.read_point_cloud(str(tmp_path / "points_segments.ply"))
    assert len(pcd.points) == 60 and pcd.has_colors()
    colours = np.unique(np.round(np.asarray(pcd.colors), 4), axis=0)
    assert len(colours) == 2  # two segments at the middle cut
    assert len(o3d.io.read_point_cloud(str(tmp_path / "points.ply")).points) == 60


def test_hierarchy_json_describes_itself_and_links_to_labels(tmp_path):
    res = nested_result()
    rf.write_outputs(res, tmp_path)
    h = json.loads((tmp_path / "hierarchy.json").read_text())
    for key in ("about", "fields", "distance", "units", "files", "thresholds", "levels"):
        assert key in h, key
    assert "1 - cos" in h["distance"] and "world units" in h["units"]["points"]
    assert "next coarser threshold" in h["fields"]["levels[].segments[].parent"]
    assert h["files"]["coloured_threshold"] == pytest.approx(0.2)
    _, props = rf.read_ply(tmp_path / "points.ply")
    for i, level in enumerate(h["levels"]):
        assert level["labels_row"] == i
        lab = props[level["label_property"]]
        for s in level["segments"]:  # a segment's points: the vertices whose label property is its id
            assert int((lab == s["id"]).sum()) == s["size"]
            assert s["colour"].startswith("#") and len(s["colour"]) == 7
    # colours stable across cuts: the merged segment keeps the colour of the child with the first point
    fine, mid = res.arrays["labels"][0], res.arrays["labels"][1]
    f_col = {s["id"]: s["colour"] for s in h["levels"][0]["segments"]}
    m_col = {s["id"]: s["colour"] for s in h["levels"][1]["segments"]}
    for s in np.unique(mid):
        first = int(np.flatnonzero(mid == s)[0])
        assert m_col[int(s)] == f_col[int(fine[first])]


def test_colour_table_follows_first_points():
    fine = np.array([2, 0, 0, 1, 1, 1, -1])
    coarse = np.array([0, 0, 0, 0, 0, 0, -1])
    t_f, t_c = tc.colour_table(fine), tc.colour_table(coarse)
    assert t_f.shape == (4, 3) and t_c.shape == (2, 3)
    np.testing.assert_array_equal(t_f[-1], np.float32(tc.GREY))
    np.testing.assert_array_equal(t_c[0], t_f[2])  # the coarse segment's first point (0) was in fine segment 2
    assert len({tuple(c) for c in t_f[:3]}) == 3


def test_result_without_hierarchy_is_written_as_is(tmp_path):
    res = JobResult(arrays={ResultArrays.POINTS: np.zeros((3, 3), np.float32)}, meta={"note": "x"})
    files = rf.write_outputs(res, tmp_path)
    assert [f.name for f in files] == ["result.npz", "hierarchy.json", "points.ply"]
    assert json.loads((tmp_path / "hierarchy.json").read_text()) == {"note": "x"}
