"""Dependency-free writers agree with Pillow / tifffile and write atomically."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from dataset_tools import writers


@pytest.mark.parametrize("shape,dtype", [((7, 5, 4), np.uint8), ((7, 5, 3), np.uint8), ((7, 5), np.uint8),
                                         ((9, 4), np.uint16)])
def test_png_round_trip_and_pillow(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    p = tmp_path / "x.png"
    writers.write_png(p, img)
    np.testing.assert_array_equal(writers.read_png(p), img)
    np.testing.assert_array_equal(np.array(Image.open(p)), img)


def test_png_reader_handles_pillow_filters(tmp_path):
    rng = np.random.default_rng(1)
    img = (rng.random((20, 17, 3)) * 40 + np.arange(17)[None, :, None] * 10).astype(np.uint8)
    p = tmp_path / "pil.png"
    Image.fromarray(img).save(p, optimize=True)
    np.testing.assert_array_equal(writers.read_png(p), img)


@pytest.mark.parametrize("shape,dtype", [((6, 5, 3), np.uint16), ((6, 5), np.uint16), ((4, 3, 3), np.uint32)])
def test_tiff_round_trip_and_tifffile(tmp_path, shape, dtype):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 60000, size=shape).astype(dtype)
    p = tmp_path / "x.tif"
    writers.write_tiff(p, img)
    np.testing.assert_array_equal(writers.read_tiff(p), img)
    np.testing.assert_array_equal(tifffile.imread(p), img)


def test_truncated_files_are_unreadable(tmp_path):
    p = tmp_path / "x.png"
    writers.write_png(p, np.zeros((8, 8), np.uint8))
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError):
        writers.read_png(p)
    t = tmp_path / "x.tif"
    writers.write_tiff(t, np.zeros((8, 8, 3), np.uint16))
    t.write_bytes(t.read_bytes()[:-10])
    with pytest.raises(ValueError):
        writers.read_tiff(t)


def test_atomic_write_leaves_no_temporary(tmp_path):
    writers.write_json(tmp_path / "a" / "b.json", {"x": 1})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]
    assert writers.read_json(tmp_path / "a" / "b.json") == {"x": 1}


def test_depth_png8():
    d = np.array([[0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(writers.depth_to_png8(d, 1.0, 3.0), [[0, 255, 128, 1]])
