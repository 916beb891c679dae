"""Pictures for docs/addon.md from a real run: the add-on in headless bpy runs Segment Scene on the bundled table
set against a real `backend serve` (the real method, CPU), then renders (Cycles) the imported point cloud in its
segment colours as it arrives, and the scene's meshes joined into one, labelled with Segments to Meshes and split
with Separate Mesh by Segment (the parts pulled apart a little).

    .venv/bin/python scripts/render_addon_figures.py --out docs/images
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--granularity", type=float, default=0.55)
    a = ap.parse_args(argv)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", address, "--device", "cpu",
                                   "--workdir", work, "--log-level", "WARNING"], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "listening" in server.stdout.readline()
            figures(a, address)
        finally:
            server.terminate()
            server.wait(20)
    return 0


def figures(a, address: str) -> None:
    import bpy  # noqa: I001 - before bmesh, which the bpy module provides
    import bmesh
    import numpy as np
    from mathutils import Vector

    import blender_addon
    from blender_addon import importer, preferences, runtime
    from dataset_tools.examples import build_example

    scene = build_example("table_set")
    blender_addon.register()
    preferences.FALLBACK = preferences.DefaultPreferences(server_address=address, timeout_s=60.0, views=a.views,
                                                          resolution=a.resolution, engine="workbench", samples=16)
    assert bpy.ops.useg.segment_scene(iterations=a.iterations) == {"FINISHED"}
    while runtime.pump() is not None:
        time.sleep(0.05)
    props = scene.ultrametric_seg
    assert props.phase == "done", props.error
    props.granularity = a.granularity
    cloud = props.result_object
    pts = importer.read_attribute(cloud, "position")
    lo, hi = pts.min(0), pts.max(0)
    centre, diag = Vector(((lo + hi) / 2).tolist()), float(np.linalg.norm(hi - lo))
    cam = bpy.data.objects.new("figure camera", bpy.data.cameras.new("figure camera"))
    scene.collection.objects.link(cam)
    cam.location = centre + Vector((0.35 * diag, -1.0 * diag, 0.75 * diag))
    cam.rotation_euler = (centre - cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 16
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y = 480, 320
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    world = scene.world or bpy.data.worlds.new("figure world")
    scene.world = world
    world.color = (0.8, 0.8, 0.8)
    if world.node_tree is not None and "Background" in world.node_tree.nodes:
        world.node_tree.nodes["Background"].inputs[0].default_value = (0.8, 0.8, 0.8, 1)

    def render(name: str, visible) -> None:
        for o in scene.objects:
            o.hide_render = o not in visible and o is not cam
        scene.render.filepath = str(a.out / name)
        bpy.ops.render.render(write_still=True)
        print("wrote", scene.render.filepath)

    a.out.mkdir(parents=True, exist_ok=True)
    render("addon_result_cloud.png", {cloud})

    layer = scene.view_layers[0]
    layer.update()
    bm = bmesh.new()
    for inst in layer.depsgraph.object_instances:
        if inst.object.type == "MESH" and inst.object is not cloud:
            part = bmesh.new()
            part.from_mesh(inst.object.data)
            part.transform(inst.matrix_world)
            tmp = bpy.data.meshes.new("tmp")
            part.to_mesh(tmp)
            part.free()
            bm.from_mesh(tmp)
            bpy.data.meshes.remove(tmp)
    mesh = bpy.data.meshes.new("Joined")
    bm.to_mesh(mesh)
    bm.free()
    joined = bpy.data.objects.new("Joined", mesh)
    scene.collection.objects.link(joined)
    for o in list(scene.objects):
        if o.type in ("MESH", "EMPTY") and o is not joined:
            o.hide_viewport = True
    for o in bpy.context.selected_objects:
        o.select_set(False)
    joined.select_set(True)
    bpy.context.view_layer.objects.active = joined
    assert bpy.ops.useg.transfer_segments() == {"FINISHED"}
    assert bpy.ops.useg.separate_mesh(min_faces=10) == {"FINISHED"}
    parts = [o for o in scene.objects if o.name.startswith("Joined.")]
    material = bpy.data.materials[importer.MATERIAL_NAME]  # reads segment_colour (a face attribute here)
    for p in parts:
        p.data.materials.clear()
        p.data.materials.append(material)
        c = np.array([v.co for v in p.data.vertices]).mean(0) if len(p.data.vertices) else np.zeros(3)
        p.location = Vector(((c - np.array(centre)) * np.array([0.25, 0.25, 0.0])).tolist())  # pulled apart
    render("addon_mesh_split.png", set(parts))
    print("parts", len(parts), "segments", props.segments, runtime.SESSION.reports[-2:])


if __name__ == "__main__":
    raise SystemExit(main())
