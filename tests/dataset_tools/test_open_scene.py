"""The add-on entry points: rendering the open scene in memory leaves the scene untouched."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import make_config


@pytest.fixture
def open_table_set(table_set_blend):
    import bpy

    from dataset_tools.dataset import open_blend

    return open_blend(table_set_blend), bpy


def _snapshot(scene, bpy):
    return dict(
        objects=sorted(o.name for o in bpy.data.objects),
        cameras=len(bpy.data.cameras),
        instance_types={o.name: o.instance_type for o in scene.objects},
        pass_index={o.name: o.pass_index for o in scene.objects},
        engine=scene.render.engine, res=(scene.render.resolution_x, scene.render.resolution_y),
        camera=scene.camera.name if scene.camera else None, fmt=scene.render.image_settings.file_format,
        transparent=scene.render.film_transparent,
        matrices={o.name: tuple(map(tuple, o.matrix_world)) for o in scene.objects},
    )


def test_render_views_in_memory_and_scene_restored(open_table_set):
    from dataset_tools.render import render_views

    scene, bpy = open_table_set
    before = _snapshot(scene, bpy)
    cfg = make_config(n_train=2, width=32, height=24, samples=2)
    rv = render_views(scene, cfg)
    assert rv.rgba.shape == (2, 24, 32, 4) and rv.rgb.shape == (2, 24, 32, 3)
    assert rv.depth.shape == (2, 24, 32) and rv.depth.dtype == np.float32
    assert rv.ids.dtype == np.uint16 and rv.c2w.shape == (2, 4, 4) and rv.K.shape == (3, 3)
    assert set(np.unique(rv.ids).tolist()) - {0} <= set(rv.hierarchy.leaf_ids)
    assert (rv.ids > 0).any()
    np.testing.assert_array_equal(rv.depth > 0, rv.ids > 0)
    assert _snapshot(scene, bpy) == before
    # a second call gives the same ids (instances realised again after the clean-up)
    rv2 = render_views(scene, cfg)
    np.testing.assert_array_equal(rv2.ids, rv.ids)
    np.testing.assert_array_equal(rv2.rgba, rv.rgba)


def test_render_views_given_poses(open_table_set):
    from dataset_tools.cameras import look_at
    from dataset_tools.render import render_views

    scene, _ = open_table_set
    poses = np.stack([look_at((0, -4, 4), (0, 0, 0.6))])
    rv = render_views(scene, make_config(width=32, height=32, samples=2), poses=poses)
    np.testing.assert_allclose(rv.c2w[0], poses[0], atol=1e-6)
    # the top-down-ish view sees the table top in the middle of the image
    assert rv.ids[0, 16, 16] > 0


def test_workbench_fast_path_matches_cycles_ids(open_table_set):
    from dataset_tools.render import render_views

    scene, _ = open_table_set
    cyc = render_views(scene, make_config(n_train=2, width=48, height=48, samples=4))
    wb = render_views(scene, make_config(n_train=2, width=48, height=48, engine="workbench"))
    assert set(np.unique(wb.ids).tolist()) <= set(np.unique(cyc.ids).tolist()) | {0}
    assert (wb.ids == cyc.ids).mean() > 0.97  # edge pixels may differ (different pixel filters)
    both = (wb.depth > 0) & (cyc.depth > 0) & (wb.ids == cyc.ids)
    np.testing.assert_allclose(wb.depth[both], cyc.depth[both], rtol=0.02)


def test_too_many_nodes_is_a_clear_error(open_table_set, monkeypatch):
    from dataset_tools import hierarchy
    from dataset_tools.errors import DatasetError
    from dataset_tools.render import render_views

    scene, _ = open_table_set
    monkeypatch.setattr(hierarchy, "MAX_NODES", 10)
    with pytest.raises(DatasetError, match="hierarchy nodes"):
        render_views(scene, make_config(n_train=1, width=16, height=16, samples=1))


def test_render_dataset_from_open_scene(open_table_set, tmp_path):
    from dataset_tools.dataset import render_dataset_from_open_scene

    scene, bpy = open_table_set
    n_before = len(bpy.data.objects)
    res = render_dataset_from_open_scene(tmp_path / "ds", make_config(n_train=1, n_val=1, n_test=0, width=24,
                                                                    height=24, samples=1, rotations=(10.0,)))
    assert res.rendered == 3 and (tmp_path / "ds/val_visible/r_0_rotate.png").is_file()
    assert len(bpy.data.objects) == n_before


def test_step_by_step_render_equals_render_views_and_early_close_restores(open_table_set):
    """The add-on's modal operator renders one view per timer event through ``render_views_steps``."""
    from dataset_tools.render import render_views, render_views_steps

    scene, bpy = open_table_set
    before = _snapshot(scene, bpy)
    cfg = make_config(n_train=3, width=24, height=24, samples=2, engine="workbench")
    steps = render_views_steps(scene, cfg)
    seen = []
    while True:
        try:
            seen.append(next(steps))
            assert _snapshot(scene, bpy) != before  # prepared (temporary camera) between steps
        except StopIteration as stop:
            stepped = stop.value
            break
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert _snapshot(scene, bpy) == before
    whole = render_views(scene, cfg)
    np.testing.assert_array_equal(stepped.ids, whole.ids)
    np.testing.assert_array_equal(stepped.depth, whole.depth)
    # cancelled after one view (Esc / Cancel in the panel): the scene is restored at once
    steps = render_views_steps(scene, cfg)
    assert next(steps) == (1, 3)
    steps.close()
    assert _snapshot(scene, bpy) == before
