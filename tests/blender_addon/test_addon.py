"""The add-on in headless bpy: Segment Scene end to end against a real server, the granularity slider,
Separate/Select, Cancel, server down, dataset render, and import speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .conftest import free_port, pump_until_idle


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_register_unregister_is_clean(addon):
    scene, bpy, _ = addon
    assert scene.ultrametric_seg.phase == "idle"
    assert bpy.ops.useg.segment_scene.poll()
    assert not bpy.ops.useg.cancel_job.poll()  # nothing to cancel
    assert not bpy.ops.useg.separate_segments.poll()  # no result yet


def test_segment_scene_end_to_end_and_granularity_slider(addon):
    from blender_addon import importer
    from backend.wire.tree_cut import GREY
    from tests.backend.service_jobs import cut as reference_cut

    scene, bpy, runtime = addon
    assert bpy.ops.useg.segment_scene() == {"FINISHED"}
    assert runtime.SESSION.state.active and runtime.SESSION.thread is not None  # rendered; the thread sends
    pump_until_idle(runtime)
    props = scene.ultrametric_seg
    assert props.phase == "done" and props.progress == pytest.approx(100.0) and not props.active, props.error
    obj = props.result_object
    assert obj is not None and obj.type == "POINTCLOUD"
    assert obj.users_collection[0].name == "Segmentation"
    names = {a.name for a in obj.data.attributes}
    assert {"segment_colour", "segment", "rgb", "segment_level_0", "radius"} <= names
    assert obj.data.attributes["segment"].data_type == "INT"
    assert any(level == "INFO" and "Imported" in msg for level, msg in runtime.SESSION.reports)

    loaded = runtime.loaded_result(obj)
    r = loaded.result
    assert len(obj.data.points) == r.n_points > 100
    # the server's own levels are stored unchanged
    np.testing.assert_array_equal(importer.read_attribute(obj, "segment_level_1"), r.labels[1])

    previous = prev_labels = None
    counts = []
    for g in (0.2, 0.5, 0.8, 0.95):
        props.granularity = g  # the update callback recolours at once
        labels = importer.read_attribute(obj, "segment")
        colours = importer.read_attribute(obj, "segment_colour")
        t = loaded.threshold(g)
        assert props.threshold == pytest.approx(t, rel=1e-6)
        ref = reference_cut(r.parents, r.altitudes, r.n_points, float(np.nextafter(t, -np.inf)))
        assert same_partition(labels, ref), g
        assert props.segments == len(np.unique(labels))
        for s in np.unique(labels):
            assert len(np.unique(colours[labels == s], axis=0)) == 1  # one colour per segment
        k = min(props.coloured_segments, props.segments)
        top = np.array([colours[labels == s][0] for s in range(k)])
        assert len(np.unique(top, axis=0)) == k  # distinct colours for the coloured segments
        assert not np.allclose(top[:, :3], GREY)
        if previous is not None:
            assert not np.array_equal(colours, previous)  # the colours changed with the slider
            for s in np.unique(prev_labels):  # coarser cuts merge whole finer segments
                assert len(np.unique(labels[prev_labels == s])) == 1
        previous, prev_labels = colours, labels
        counts.append(props.segments)
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]

    # Separate segments: one object per segment (plus the rest)
    props.granularity = 0.8
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.useg.separate_segments(max_objects=3, min_points=1) == {"FINISHED"}
    made = [o for o in bpy.data.objects if o.name.startswith(obj.name + ".")]
    sizes = sorted(len(o.data.points) for o in made)
    assert len(made) == min(4, props.segments) and sum(sizes) == r.n_points

    # Select segment: the point nearest the 3D cursor selects its whole segment
    pts = importer.read_attribute(obj, "position")
    labels = importer.read_attribute(obj, "segment")
    scene.cursor.location = tuple(pts[7])
    assert bpy.ops.useg.select_segment() == {"FINISHED"}
    sel = importer.read_attribute(obj, importer.SELECTION_ATTR)
    np.testing.assert_array_equal(sel, labels == labels[7])


def test_cancel_a_running_job(addon):
    scene, bpy, runtime = addon
    assert bpy.ops.useg.segment_scene(iterations=5000) == {"FINISHED"}
    t0 = time.monotonic()
    while runtime.SESSION.state.phase not in ("training", "segmenting") and time.monotonic() - t0 < 10:
        runtime.pump()
        time.sleep(0.02)
    assert bpy.ops.useg.cancel_job.poll()
    assert bpy.ops.useg.cancel_job() == {"FINISHED"}
    pump_until_idle(runtime, 15)
    assert scene.ultrametric_seg.phase == "cancelled"
    assert scene.ultrametric_seg.result_object is None
    assert ("WARNING", "Segmentation cancelled") in runtime.SESSION.reports


def test_server_down_is_reported_at_once_before_rendering(addon):
    from blender_addon import preferences

    scene, bpy, runtime = addon
    preferences.FALLBACK.server_address = f"tcp://127.0.0.1:{free_port()}"
    preferences.FALLBACK.timeout_s = 30.0  # the ping before rendering waits far less than the job timeout
    t0 = time.monotonic()
    # As the panel's button calls it (invoke); headless there is no window, so it runs at once. Background
    # bpy turns the operator's ERROR report into a RuntimeError.
    with pytest.raises(RuntimeError, match="no reply from the job server"):
        bpy.ops.useg.segment_scene("INVOKE_DEFAULT")
    assert time.monotonic() - t0 < 4
    props = scene.ultrametric_seg
    assert props.phase == "failed" and "no reply from the job server" in props.error
    assert "server_unavailable" in props.status
    assert runtime.SESSION.thread is None  # nothing was rendered or sent
    assert bpy.ops.useg.segment_scene.poll()  # ready for another try


def test_a_remote_server_needs_online_access(addon):
    from blender_addon import preferences

    scene, bpy, runtime = addon
    if bpy.app.online_access:
        pytest.skip("this Blender has online access on")
    preferences.FALLBACK.server_address = "tcp://192.0.2.1:5557"  # TEST-NET-1: never contacted
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.useg.segment_scene()
    assert scene.ultrametric_seg.phase == "failed" and runtime.SESSION.thread is None
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.useg.ping_server()


def test_bad_settings_are_reported(addon):
    scene, bpy, runtime = addon
    with pytest.raises(TypeError, match="not found"):  # the engine is an enum: no typo reaches a render
        bpy.ops.useg.segment_scene(engine="eevee-next")
    assert runtime.SESSION.state.phase == "idle"


def test_render_dataset_operator_writes_the_cli_layout(addon, tmp_path):
    from dataset_tools.writers import read_tiff

    scene, bpy, _ = addon
    out = tmp_path / "hs"
    assert bpy.ops.useg.render_dataset(directory=str(out), n_train=2, n_val=1, n_test=0, resolution=32,
                                       engine="workbench", rotations=False) == {"FINISHED"}
    for rel in ("transforms_train.json", "transforms_val.json", "train/r_0.png", "depth/train/r_1.npy",
                "gt_seg/val/r_0_seg_objects.tif", "gt_seg/val/r_0_ids.png", "hierarchy.json", "meta.json"):
        assert (out / rel).is_file(), rel
    assert read_tiff(out / "gt_seg/val/r_0_seg_objects.tif").max() > 0
    assert scene.ultrametric_seg.phase == "idle" and "Wrote the Blender-HS dataset" in scene.ultrametric_seg.message
    scene.ultrametric_seg.dataset_dir = "//relative"
    with pytest.raises(RuntimeError, match="Save the .blend first"):
        bpy.ops.useg.render_dataset(n_train=1, n_val=0)


def _chain_tree(n: int):
    """A valid binary tree over n leaves built level by level (pairs merge), altitude = level."""
    parents = np.arange(2 * n - 1, dtype=np.int32)
    altitudes = np.zeros(2 * n - 1, np.float32)
    level, nodes, nxt = 1, np.arange(n), n
    while len(nodes) > 1:
        m = len(nodes) // 2
        new = np.arange(nxt, nxt + m)
        parents[nodes[0:2 * m:2]] = new
        parents[nodes[1:2 * m:2]] = new
        altitudes[new] = level
        nxt += m
        nodes = np.concatenate([new, nodes[2 * m:]])
        level += 1
    return parents, altitudes


def test_import_500k_points_under_2_seconds(addon):
    from blender_addon import importer
    from blender_addon.messages import parse_result

    scene, bpy, runtime = addon
    n = 500_000
    rng = np.random.default_rng(0)
    parents, altitudes = _chain_tree(n)
    result = parse_result({"points": rng.random((n, 3), dtype=np.float32),
                           "colors": rng.integers(0, 255, (n, 3), dtype=np.uint8),
                           "parents": parents, "altitudes": altitudes})
    t0 = time.perf_counter()
    obj, c = importer.import_result(scene, result, threshold=8.5, n_coloured=64)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    importer.apply_cut(obj, importer.result_cut(result, 12.5), 64)
    recolour = time.perf_counter() - t1
    print(f"\nimport of {n} points: {seconds:.3f} s; recolour at a new granularity: {recolour:.3f} s")
    assert obj.type == "POINTCLOUD" and len(obj.data.points) == n
    assert c.n_segments == int(np.ceil(n / 256))
    assert seconds < 2.0
    assert recolour < 2.0


def test_import_result_file_operator(addon, tmp_path):
    from blender_addon import importer

    scene, bpy, runtime = addon
    parents, altitudes = _chain_tree(64)
    pts = np.random.default_rng(2).random((64, 3), dtype=np.float32)
    np.savez(tmp_path / "result.npz", points=pts, parents=parents, altitudes=altitudes,
             meta=np.array('{"job": "fromfile"}'))
    assert bpy.ops.useg.import_result(filepath=str(tmp_path / "result.npz")) == {"FINISHED"}
    obj = scene.ultrametric_seg.result_object
    assert len(obj.data.points) == 64
    np.testing.assert_allclose(importer.read_attribute(obj, "position"), pts)
    scene.ultrametric_seg.granularity = 1.0
    assert scene.ultrametric_seg.segments == 1
    with pytest.raises(RuntimeError, match="no result file"):
        bpy.ops.useg.import_result(filepath=str(tmp_path / "missing.npz"))


def test_dataset_render_steps_stop_early_and_resume(addon, tmp_path):
    """What the modal Render Blender-HS Dataset does: one view per step; closing the steps (Esc, Cancel)
    restores the scene and keeps the finished views, which a new render skips."""
    from dataset_tools.config import RenderConfig
    from dataset_tools.dataset import render_dataset_steps

    scene, bpy, _ = addon
    config = RenderConfig(n_train=3, n_val=1, n_test=0, width=24, height=24, engine="workbench", samples=1,
                          rotations=())
    before = (scene.camera, scene.render.resolution_x, len(bpy.data.objects))
    steps = render_dataset_steps(tmp_path / "hs", config, scene)
    assert next(steps)[:2] == (1, 4)
    steps.close()
    assert (scene.camera, scene.render.resolution_x, len(bpy.data.objects)) == before
    steps = render_dataset_steps(tmp_path / "hs", config, scene)
    seen = []
    while True:
        try:
            seen.append(next(steps)[0])
        except StopIteration as stop:
            result = stop.value
            break
    assert seen == [1, 2, 3, 4] and (result.rendered, result.skipped) == (3, 1)
