"""dataset_tools.exr: the NumPy EXR reader (Blenders without OpenImageIO's Python module, e.g. 4.2) returns
the stored float32 values exactly, agrees with OpenImageIO where Blender ships it, and names what it cannot
read."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import make_config


def _save_exr(bpy, path, pixels: np.ndarray, codec: str = "NONE") -> None:
    """Write float RGBA ``pixels`` [H, W, 4] (top row first) with Blender's own EXR writer."""
    h, w = pixels.shape[:2]
    img = bpy.data.images.new("exr_test", w, h, alpha=True, float_buffer=True)
    try:
        img.pixels.foreach_set(np.ascontiguousarray(pixels[::-1], np.float32).ravel())  # Blender: bottom row first
        ims = bpy.context.scene.render.image_settings
        if hasattr(ims, "media_type"):
            ims.media_type = "IMAGE"
        ims.file_format, ims.color_depth, ims.color_mode, ims.exr_codec = "OPEN_EXR", "32", "RGBA", codec
        img.save_render(str(path), scene=bpy.context.scene)
    finally:
        bpy.data.images.remove(img)


@pytest.fixture
def known_pixels():
    rng = np.random.default_rng(0)
    px = rng.uniform(0.0, 50.0, (7, 5, 4)).astype(np.float32)
    px[0, 0] = (np.float32(np.pi), 1e10, 1e-7, 0.0)  # depth-like values that half floats or 8 bits would lose
    px[..., 3] = 1.0
    return px


def test_numpy_reader_returns_blenders_float32_values_exactly(tmp_path, known_pixels):
    import bpy

    from dataset_tools.exr import read_exr_numpy

    path = tmp_path / "known.exr"
    _save_exr(bpy, path, known_pixels)
    chans = read_exr_numpy(str(path))
    assert sorted(chans) == ["A", "B", "G", "R"]
    got = np.stack([chans[c] for c in "RGBA"], axis=-1)
    assert got.dtype == np.float32 and got.shape == known_pixels.shape
    assert np.array_equal(got, known_pixels)  # bit for bit, including 1e10 and pi


def test_numpy_reader_names_what_it_cannot_read(tmp_path, known_pixels):
    import bpy

    from dataset_tools.errors import DatasetError
    from dataset_tools.exr import UnreadableExr, read_exr_numpy

    zipped = tmp_path / "zip.exr"
    _save_exr(bpy, zipped, known_pixels, codec="ZIP")
    with pytest.raises(UnreadableExr, match="compression ZIP"):
        read_exr_numpy(str(zipped))
    plain = tmp_path / "plain.exr"
    _save_exr(bpy, plain, known_pixels)
    data = plain.read_bytes()
    (tmp_path / "cut.exr").write_bytes(data[: len(data) - 40])
    with pytest.raises(UnreadableExr, match="truncated"):
        read_exr_numpy(str(tmp_path / "cut.exr"))
    (tmp_path / "not.exr").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DatasetError, match="not an EXR"):
        read_exr_numpy(str(tmp_path / "not.exr"))
    with pytest.raises(DatasetError, match="cannot read"):
        read_exr_numpy(str(tmp_path / "missing.exr"))


@pytest.mark.parametrize("engine", ["cycles", "workbench"])
def test_render_without_openimageio_gives_the_same_views(table_set_blend, monkeypatch, engine):
    """A render read by NumPy (as on Blender 4.2) equals the one read by OpenImageIO (Blender 5.0+), and the
    multilayer (5.0+: multi-part) files the renderer writes agree channel for channel between the readers."""
    from dataset_tools import exr
    from dataset_tools.dataset import open_blend
    from dataset_tools.render import render_views

    scene = open_blend(table_set_blend)
    cfg = make_config(n_train=1, width=24, height=16, samples=2, engine=engine)
    oiio = exr.import_oiio()
    compared = []
    read_numpy = exr.read_exr_numpy

    def numpy_checked_against_oiio(path):
        chans = read_numpy(path)
        if oiio is not None:
            ref = exr.read_exr_oiio(path, oiio)
            assert sorted(ref) == sorted(chans)
            assert all(np.array_equal(ref[k], chans[k], equal_nan=True) for k in ref)
            compared.append(path)
        return chans

    monkeypatch.setattr(exr, "import_oiio", lambda: None)
    monkeypatch.setattr(exr, "read_exr_numpy", numpy_checked_against_oiio)
    without = render_views(scene, cfg)
    monkeypatch.undo()
    assert (without.ids > 0).any() and (without.depth > 0).any()
    if oiio is None:
        pytest.skip("this Blender has no OpenImageIO module to compare with")
    assert compared
    with_oiio = render_views(scene, cfg)
    assert np.array_equal(without.depth, with_oiio.depth)
    assert np.array_equal(without.ids, with_oiio.ids)
    if engine == "workbench":  # Cycles samples differ between renders only by noise; Workbench is deterministic
        assert np.array_equal(without.rgba, with_oiio.rgba)
