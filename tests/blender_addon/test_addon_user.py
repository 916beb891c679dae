"""Segment Scene as a user meets it (issue 23), in headless bpy against a real `backend serve` on a CPU: the
preset that fits the server, one honest progress bar, a result whose colours show in a render, Separate
Segments that skips dust, and a client token that keeps two Blender sessions' jobs apart."""

from __future__ import annotations

import time

import numpy as np
import pytest

from .conftest import pump_until_idle


def _record(runtime, limit_s: float = 60.0):
    """Pump until the job ends; every state the session went through (the state before pumping first), event by
    event: one pump applies every queued event, so a stage of a few milliseconds (the segmentation of a tiny
    scene) can start and end between two pumps, and sampling the state after each pump would miss it."""
    seen = [runtime.SESSION.state]
    apply_event = runtime.apply_event

    def recording(state, event):
        seen.append(apply_event(state, event))
        return seen[-1]

    runtime.apply_event = recording
    try:
        t0 = time.monotonic()
        while runtime.pump() is not None:
            seen.append(runtime.SESSION.state)
            assert time.monotonic() - t0 < limit_s, runtime.SESSION.state
            time.sleep(0.01)
    finally:
        runtime.apply_event = apply_event
    seen.append(runtime.SESSION.state)
    return seen


def test_cpu_server_gets_the_cpu_preset_an_estimate_and_one_monotone_bar(addon):
    from blender_addon import jobstate
    from blender_addon.client import CLIENT_TOKEN
    from backend.wire import job_progress

    scene, bpy, runtime = addon
    props = scene.ultrametric_seg
    assert props.preset == "PREFERENCES"  # nothing chosen: the preferences say "from the server"
    assert bpy.ops.useg.segment_scene(iterations=60) == {"FINISHED"}
    submit = runtime.SESSION.thread.submit
    assert submit.options.preset == "cpu"  # the server runs on a CPU
    assert submit.client_token == CLIENT_TOKEN
    assert props.estimate.startswith("about ") and "(cpu" in props.estimate and "preset cpu, 60 steps" in props.estimate
    seen = _record(runtime)
    final = seen[-1]
    assert final.phase == jobstate.Phase.DONE and final.progress == 1.0 and props.progress == pytest.approx(100)
    bars = [s.progress for s in seen]
    assert all(b >= a for a, b in zip(bars, bars[1:])), bars
    labels = [jobstate.stage_label(s) for s in seen if s.active]
    order = [x for i, x in enumerate(labels) if i == 0 or labels[i - 1] != x]
    assert order[0] == "render" and {"masks", "training", "segmentation"} <= set(order), order
    assert order == sorted(order, key=job_progress.STAGES.index)  # never back to an earlier stage
    assert len(final.tracker.actual) == len(job_progress.STAGES)  # import closed too
    # training moved the bar through its own share (it used to stop at 85 %)
    training = [s.progress for s in seen if s.active and jobstate.stage_label(s) == "training"]
    w = job_progress.weights(final.tracker.expected)
    assert training[-1] - training[0] > 0.5 * w[3]
    assert any("ETA" in jobstate.status_text(s) for s in seen if jobstate.stage_label(s) == "training")


def test_a_preset_the_user_chose_is_kept(addon):
    scene, bpy, runtime = addon
    scene.ultrametric_seg.preset = "fast"
    scene.ultrametric_seg.views = 3
    assert bpy.ops.useg.segment_scene(iterations=5) == {"FINISHED"}
    submit = runtime.SESSION.thread.submit
    assert submit.options.preset == "fast" and submit.rgb.shape[0] == 3
    pump_until_idle(runtime)
    assert scene.ultrametric_seg.phase == "done"


def test_two_blender_sessions_do_not_see_each_others_jobs(addon, server_address):
    """The add-on's job belongs to its token: another token (another Blender) neither sees nor cancels it;
    the add-on itself still can."""
    import zmq

    from backend.wire import protocol as P
    from blender_addon.client import CLIENT_TOKEN

    scene, bpy, runtime = addon
    assert bpy.ops.useg.segment_scene(iterations=3000) == {"FINISHED"}
    job = runtime.SESSION.thread.job
    t0 = time.monotonic()
    while runtime.SESSION.state.phase not in ("training", "segmenting") and time.monotonic() - t0 < 20:
        runtime.pump()
        time.sleep(0.02)

    def ask(msg):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(server_address)
        try:
            sock.send_multipart(P.encode(msg))
            assert sock.poll(5000), "no answer"
            return P.decode(sock.recv_multipart(), accept=P.SERVER_TYPES)
        finally:
            sock.close()

    other = "another-blender-session-token"
    assert ask(P.Status(job=job, client_token=other)).__class__ is P.Error
    assert job not in [j.job for j in ask(P.Status(client_token=other)).jobs]
    assert ask(P.Cancel(job=job, client_token=other)).__class__ is P.Error
    mine = ask(P.Status(job=job, client_token=CLIENT_TOKEN))
    assert isinstance(mine, P.StatusReply) and mine.jobs[0].job == job
    assert bpy.ops.useg.cancel_job() == {"FINISHED"}
    pump_until_idle(runtime, 15)
    assert scene.ultrametric_seg.phase == "cancelled"


def _segment(bpy, runtime, scene, **kw):
    assert bpy.ops.useg.segment_scene(iterations=5, **kw) == {"FINISHED"}
    pump_until_idle(runtime)
    props = scene.ultrametric_seg
    assert props.phase == "done", props.error
    return props.result_object


def render_only(bpy, scene, obj, path, engine="CYCLES", size=48):
    """Render ``obj`` alone, framed from the front and above; returns the float RGB pixels [H*W, 3]."""
    import numpy as np
    from mathutils import Vector

    from blender_addon import importer

    pts = importer.read_attribute(obj, "position")
    lo, hi = pts.min(0), pts.max(0)
    centre, diag = Vector(((lo + hi) / 2).tolist()), float(np.linalg.norm(hi - lo))
    for o in scene.objects:
        o.hide_render = o is not obj
    cam = bpy.data.objects.new("result camera", bpy.data.cameras.new("result camera"))
    scene.collection.objects.link(cam)
    cam.location = centre + Vector((0.0, -1.2 * diag, 0.8 * diag))
    cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.samples = 4
        scene.cycles.device = "CPU"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(str(path))
    return np.array(img.pixels[:], np.float32).reshape(-1, 4)[:, :3]


def test_the_result_shows_its_segment_colours_in_a_render(addon, tmp_path):
    """The imported cloud's material reads ``segment_colour``: a render (Cycles; Workbench cannot colour point
    clouds by attribute) shows several distinct segment colours without any setting changed by hand."""
    from blender_addon import importer

    scene, bpy, runtime = addon
    obj = _segment(bpy, runtime, scene)
    scene.ultrametric_seg.granularity = 0.6
    mat = obj.data.materials[0]
    attr = next(n for n in mat.node_tree.nodes if n.type == "ATTRIBUTE")
    assert attr.attribute_name == importer.COLOUR_ATTR
    assert {link.to_socket.name for link in attr.outputs["Color"].links} >= {"Base Color"}
    assert importer.show_colours_in_viewports(bpy.context.window_manager) == 0  # none left in Solid shading
    px = render_only(bpy, scene, obj, tmp_path / "result.png")
    sat = px.max(1) - px.min(1)
    colourful = px[sat > 0.12]
    hues = np.unique(np.round(colourful / np.maximum(colourful.max(1, keepdims=True), 1e-6) * 3), axis=0)
    assert len(colourful) > 0.02 * len(px) and len(hues) >= 3, (len(colourful), hues)
    # the same render with the attribute unplugged is grey: the colours come from the segments
    for link in list(attr.outputs["Color"].links):
        mat.node_tree.links.remove(link)
    px = render_only(bpy, scene, obj, tmp_path / "grey.png")
    assert ((px.max(1) - px.min(1)) > 0.12).sum() < 0.2 * len(colourful)


def test_separate_segments_skips_small_segments_and_says_how_many(addon):
    from blender_addon import importer

    scene, bpy, runtime = addon
    obj = _segment(bpy, runtime, scene)
    props = scene.ultrametric_seg
    props.granularity = 0.35
    labels = importer.read_attribute(obj, "segment")
    sizes = np.bincount(labels)
    assert (sizes < 20).sum() >= 3 and (sizes >= 20).sum() >= 2, sizes  # dust and segments
    n_reports = len(runtime.SESSION.reports)
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.useg.separate_segments(max_objects=64, min_points=20) == {"FINISHED"}
    parts = list(bpy.data.collections[obj.name + " segments"].objects)
    own = [p for p in parts if not p.name.endswith(".rest")]
    assert len(own) == min(64, (sizes >= 20).sum()) and all(len(p.data.points) >= 20 for p in own)
    assert sum(len(p.data.points) for p in parts) == len(labels)
    text = " ".join(m for _, m in runtime.SESSION.reports[n_reports:])
    assert f"skipped {(sizes < 20).sum()} segments under 20 points" in text, text
    with pytest.raises(ValueError, match="min_points"):
        importer.separate_plan(sizes, 64, 0)


def _joined_mesh(bpy, scene):
    """Every mesh the scene shows (collection instances too) joined into one object, world transforms applied;
    the originals hidden."""
    import bmesh

    layer = scene.view_layers[0]
    layer.update()
    bm = bmesh.new()
    for inst in layer.depsgraph.object_instances:
        if inst.object.type != "MESH":
            continue
        part = bmesh.new()
        part.from_mesh(inst.object.data)
        part.transform(inst.matrix_world)
        mesh = bpy.data.meshes.new("tmp")
        part.to_mesh(mesh)
        part.free()
        bm.from_mesh(mesh)
        bpy.data.meshes.remove(mesh)
    for o in scene.objects:
        o.hide_render = o.hide_viewport = o.type in ("MESH", "EMPTY")
    mesh = bpy.data.meshes.new("Joined")
    bm.to_mesh(mesh)
    bm.free()
    joined = bpy.data.objects.new("Joined", mesh)
    scene.collection.objects.link(joined)
    return joined


def test_segments_on_a_joined_mesh_and_separate_mesh_by_segment(addon):
    from blender_addon import importer, mesh_segments

    scene, bpy, runtime = addon
    _segment(bpy, runtime, scene)
    for g in np.linspace(0.8, 0.2, 13):  # a coarse level with a few segments
        scene.ultrametric_seg.granularity = float(g)
        if scene.ultrametric_seg.segments >= 8:
            break
    joined = _joined_mesh(bpy, scene)
    for o in bpy.context.selected_objects:
        o.select_set(False)
    joined.select_set(True)
    bpy.context.view_layer.objects.active = joined
    assert bpy.ops.useg.transfer_segments() == {"FINISHED"}
    seg = np.empty(len(joined.data.polygons), np.int32)
    joined.data.attributes["segment"].data.foreach_get("value", seg)
    assert joined.data.attributes["segment"].domain == "FACE"
    assert (seg >= 0).mean() > 0.3, (seg >= 0).mean()  # the faces the views saw
    ids, counts = np.unique(seg[seg >= 0], return_counts=True)
    significant = int((counts >= 10).sum())
    cloud = np.bincount(importer.read_attribute(scene.ultrametric_seg.result_object, "segment"))
    assert significant >= 2, (counts, scene.ultrametric_seg.segments, cloud[:10])
    assert bpy.ops.useg.separate_mesh(min_faces=10) == {"FINISHED"}
    parts = [o for o in scene.objects if o.name.startswith("Joined.")]
    own = [p for p in parts if not p.name.endswith(".rest")]
    assert len(own) == significant
    assert sum(len(p.data.polygons) for p in parts) == len(joined.data.polygons)
    with pytest.raises(ValueError, match="same"):
        mesh_segments.vote(np.zeros((2, 3)), np.zeros((2, 2)), 1.0)


def test_segment_selected_renders_and_frames_only_the_selection(addon):
    from blender_addon import importer

    scene, bpy, runtime = addon
    layer = bpy.context.view_layer
    chair = next(o for o in layer.objects if o.type == "MESH" and o.name.startswith("Table") and o.visible_get())
    others = [o for o in layer.objects if o is not chair and not o.hide_render]
    for o in bpy.context.selected_objects:
        o.select_set(False)
    chair.select_set(True)
    layer.objects.active = chair
    assert bpy.ops.useg.segment_scene(iterations=5, selected_only=True) == {"FINISHED"}
    assert all(not o.hide_render for o in others)  # restored after rendering
    pump_until_idle(runtime)
    obj = scene.ultrametric_seg.result_object
    pts = importer.read_attribute(obj, "position")
    kept = [o for o in (chair, *chair.children_recursive) if o.type == "MESH"]
    corners = np.array([o.matrix_world @ v.co for o in kept for v in o.data.vertices])
    lo, hi = corners.min(0), corners.max(0)
    pad = 0.05 * float(np.linalg.norm(hi - lo))
    inside = np.all((pts >= lo - pad) & (pts <= hi + pad), axis=1)
    assert inside.mean() > 0.98, (inside.mean(), [o.name for o in kept])  # only the selection was rendered
    for o in bpy.context.selected_objects:
        o.select_set(False)
    with pytest.raises(RuntimeError, match="nothing is selected"):
        bpy.ops.useg.segment_scene(iterations=5, selected_only=True)
    assert all(not o.hide_render for o in others)
