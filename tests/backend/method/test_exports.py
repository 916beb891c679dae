"""Pictures of a segmentation (backend.method.exports) and the files `backend segment` writes, from a real
(tiny) run trained with `backend train --max-views` and segmented with `backend segment` (max_views reused)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from backend.method import exports
from backend.wire import tree_cut as tc
from backend.wire.result_files import ply_labels, read_ply


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def segmented(tiny_dataset, tmp_path_factory):
    """`backend train DATA RUN --max-views 5` (a few steps), then `backend segment RUN` with mixed separators."""
    run = tmp_path_factory.mktemp("exports") / "run"
    res = run_cli("train", str(tiny_dataset), str(run), "--max-views", "5", "--iterations", "3", "--quiet")
    assert res.returncode == 0, res.stderr
    res = run_cli("segment", str(run), "--thresholds", "0.05,0.1", "0.2 0.3", "--quiet")
    assert res.returncode == 0, res.stderr
    return run, run / "segmentation"


def test_max_views_is_stored_and_reused(segmented):
    run, out = segmented
    info = json.loads((run / "run.json").read_text())
    assert info["max_views"] == 5
    from backend.method.pipeline import load_trained

    _, scene, _, _, _ = load_trained(run)
    assert scene.num_views == 5  # not the dataset's 8: the checkpoint's scene


def test_segment_files_and_thresholds_from_mixed_separators(segmented):
    _, out = segmented
    names = {p.name for p in out.iterdir()}
    assert {"points.ply", "points_segments.ply", "hierarchy.json", "result.npz", "tree.npz", "views",
            "sweep.gif", "sweep.png"} <= names
    _, props = read_ply(out / "points.ply")
    assert [t for t, _ in ply_labels(props)] == pytest.approx([0.05, 0.1, 0.2, 0.3])
    views = sorted((out / "views").iterdir())
    sheets = [p for p in views if p.name.endswith("_sheet.png")]
    assert len(sheets) == 4 and len([p for p in views if p.suffix == ".npz"]) == 4
    assert not [p for p in views if "_pca" in p.name or "_labels_" in p.name], "no loose files any more"
    with Image.open(sheets[0]) as im:
        assert im.size[0] >= 3 * exports.MIN_TILE and im.size[1] >= 2 * exports.MIN_TILE
    with Image.open(out / "sweep.gif") as gif:
        assert gif.n_frames >= 3 and gif.info.get("loop") == 0


def test_overlay_keeps_background_and_colours_segments():
    rgb = np.full((4, 6, 3), 200, np.uint8)
    lab = np.array([[-1, -1, 0, 0, 1, 1]] * 4)
    table = np.array([[255, 0, 0], [0, 0, 255], [128, 128, 128]], np.uint8)
    out = exports.overlay(rgb, lab, table, opacity=0.5, scale=2)
    assert out.shape == (8, 12, 3)
    assert (out[:, :3] == 200).all()  # no segment: the image as it is
    assert out[0, 5, 0] > out[0, 5, 2]  # segment 0 is reddish (away from the outline)
    assert out[0, 11, 2] > out[0, 11, 0]  # segment 1 bluish
    assert out[0, 7].max() < 100 and out[0, 8].max() > 100  # a dark outline where the labels change


def test_colours_are_stable_across_cuts():
    fine = np.array([[0, 0, 1, 1, 2, 2]])
    coarse = np.array([[0, 0, 0, 0, 1, 1]])  # 0 and 1 merged; the merged one keeps 0's first point
    t_fine, t_coarse = exports.colour_tables(np.stack([fine[0], coarse[0]]))
    np.testing.assert_array_equal(t_coarse[0], t_fine[0])
    np.testing.assert_array_equal(t_coarse[1], t_fine[2])
    np.testing.assert_array_equal(t_fine[-1], tc.srgb8(np.float32(tc.GREY)))


def test_sheet_and_sweep_pictures(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (48, 48, 3)).astype(np.uint8)
    maps = np.stack([np.arange(48 * 48).reshape(48, 48) // (48 * 48 // k) for k in (8, 4, 2, 1)])
    cloud = maps.reshape(4, -1)
    tables = exports.colour_tables(cloud)
    sheet = exports.view_sheet(rgb, rgb, maps, [0.05, 0.1, 0.2, 0.4], tables, "title")
    assert sheet.size[0] > 3 * 224 and sheet.size[1] > 2 * 224
    files = exports.write_sweep(rgb, maps, [0.05, 0.1, 0.2, 0.4], tables, tmp_path, "sweep")
    assert [p.name for p in files] == ["sweep.gif", "sweep.png"] and all(p.stat().st_size > 0 for p in files)
    assert exports.cut_caption(0.05, maps[1]) == "t = 0.05 \u00b7 4 segments"
