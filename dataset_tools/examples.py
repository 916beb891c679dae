"""Small procedural example scenes with a real hierarchy, for demos and tests.

Each builder fills an empty Blender scene with nested collections, parented objects, collection
instances and textured materials (procedural textures so images carry texture), plus lights and a world.
:func:`build_example` resets Blender to an empty factory file first; :func:`write_example` also saves it.

Scenes (``EXAMPLES``):

- ``table_set`` (the bundled demo and test fixture: 26 rendered objects, 12 object-level and
  3 collection-level segments): Table (top with parented legs
  that are linked duplicates of one mesh), Tableware → {Plates, FruitBowl → {Bowl, a curve rim,
  Fruit}}, two instances of a Chair collection (excluded source collection), plus a render-hidden
  helper object and a render-hidden collection that must never show up in the ground truth.
- ``bookshelf``: Shelf frame, Books → {Top shelf, Bottom shelf}, Decor → Vase set.
- ``vehicle``: Body → {Chassis, Cabin}, Wheels (tyres with parented hubs), Lights, a text plate.

:func:`render_example` builds an example in memory and renders it straight to a Blender-HS folder
(the backend demo's entry point); it resumes like :func:`dataset_tools.dataset.render_dataset`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import bpy  # noqa: I001  (bpy first: it makes bmesh importable)
import bmesh

from .config import DEFAULT_ROTATIONS, ENGINES, RenderConfig
from .errors import DatasetError

# ---------------------------------------------------------------------------------------------- helpers


def _collection(name: str, parent: bpy.types.Collection) -> bpy.types.Collection:
    coll = bpy.data.collections.new(name)
    parent.children.link(coll)
    return coll


def _material(name: str, base, accent, pattern: str = "noise", scale: float = 6.0, roughness: float = 0.5,
              metallic: float = 0.0) -> bpy.types.Material:
    """Principled material whose base colour blends ``base`` and ``accent`` by a procedural texture."""
    mat = bpy.data.materials.new(name)
    mat.diffuse_color = (*base, 1.0)  # what the workbench engine shows
    if hasattr(mat, "use_nodes") and not mat.use_nodes:
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    coord = nodes.new("ShaderNodeTexCoord")
    tex_type = {"noise": "ShaderNodeTexNoise", "checker": "ShaderNodeTexChecker", "wave": "ShaderNodeTexWave",
                "brick": "ShaderNodeTexBrick", "voronoi": "ShaderNodeTexVoronoi"}[pattern]
    tex = nodes.new(tex_type)
    tex.inputs["Scale"].default_value = scale
    links.new(coord.outputs["Object"], tex.inputs["Vector"])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*base, 1.0)
    ramp.color_ramp.elements[1].color = (*accent, 1.0)
    fac = tex.outputs["Fac"] if "Fac" in tex.outputs else tex.outputs["Distance"]
    links.new(fac, ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _mesh_object(name: str, coll: bpy.types.Collection, build: Callable[[bmesh.types.BMesh], None],
                 material: bpy.types.Material | None = None, location=(0, 0, 0), scale=(1, 1, 1),
                 rotation=(0, 0, 0), parent: bpy.types.Object | None = None, smooth: bool = False) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    build(bm)
    if smooth:
        for f in bm.faces:
            f.smooth = True
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    coll.objects.link(obj)
    if material is not None:
        mesh.materials.append(material)
    obj.location, obj.scale, obj.rotation_euler = location, scale, rotation
    if parent is not None:
        obj.parent = parent
    return obj


def _linked_duplicate(src: bpy.types.Object, name: str, coll: bpy.types.Collection, location) -> bpy.types.Object:
    """A new object sharing ``src``'s mesh data (Blender's Alt+D), placed at ``location``."""
    obj = bpy.data.objects.new(name, src.data)
    coll.objects.link(obj)
    obj.location, obj.scale, obj.rotation_euler = location, src.scale, src.rotation_euler
    return obj


def _curve_ring(name: str, coll: bpy.types.Collection, material: bpy.types.Material, location, radius: float,
                thickness: float, points: int = 32) -> bpy.types.Object:
    """A closed poly curve of ``radius`` in the XY plane, bevelled to a tube of ``thickness`` (a curve object)."""
    curve = bpy.data.curves.new(name, "CURVE")
    curve.dimensions = "3D"
    curve.bevel_depth = thickness
    curve.bevel_resolution = 3
    spline = curve.splines.new("POLY")
    spline.points.add(points - 1)
    for k, p in enumerate(spline.points):
        a = 2 * math.pi * k / points
        p.co = (radius * math.cos(a), radius * math.sin(a), 0.0, 1.0)
    spline.use_cyclic_u = True
    curve.materials.append(material)
    obj = bpy.data.objects.new(name, curve)
    obj.location = location
    coll.objects.link(obj)
    return obj


def _cube(bm):
    bmesh.ops.create_cube(bm, size=1.0)


def _cylinder(segments: int = 24):
    def build(bm):
        bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=segments, radius1=0.5, radius2=0.5,
                              depth=1.0)
    return build


def _cone(r1: float, r2: float, segments: int = 24):
    def build(bm):
        bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=segments, radius1=r1, radius2=r2,
                              depth=1.0)
    return build


def _sphere(bm):
    bmesh.ops.create_uvsphere(bm, u_segments=24, v_segments=12, radius=0.5)


def _torus(major: float = 0.4, minor: float = 0.12, n_major: int = 24, n_minor: int = 10):
    def build(bm):
        rings = []
        for i in range(n_major):
            a = 2 * math.pi * i / n_major
            ring = []
            for j in range(n_minor):
                b = 2 * math.pi * j / n_minor
                r = major + minor * math.cos(b)
                ring.append(bm.verts.new((r * math.cos(a), r * math.sin(a), minor * math.sin(b))))
            rings.append(ring)
        for i in range(n_major):
            for j in range(n_minor):
                a, b = rings[i], rings[(i + 1) % n_major]
                bm.faces.new((a[j], b[j], b[(j + 1) % n_minor], a[(j + 1) % n_minor]))
    return build


def _lights_and_world(scene: bpy.types.Scene, strength: float = 3.0) -> None:
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy = strength
    sun.data.angle = math.radians(10)
    sun.rotation_euler = (math.radians(40), math.radians(15), math.radians(30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    if hasattr(world, "use_nodes") and not world.use_nodes:
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    bg.inputs["Color"].default_value = (0.55, 0.6, 0.7, 1.0)
    bg.inputs["Strength"].default_value = 0.8
    scene.world = world


def _exclude(scene: bpy.types.Scene, coll: bpy.types.Collection) -> None:
    """Exclude ``coll`` from every view layer (an instance source that must not render by itself)."""
    def find(lc):
        if lc.collection == coll:
            return lc
        for ch in lc.children:
            hit = find(ch)
            if hit is not None:
                return hit
        return None
    for vl in scene.view_layers:
        lc = find(vl.layer_collection)
        if lc is not None:
            lc.exclude = True


# ---------------------------------------------------------------------------------------------- scenes


def table_set(scene: bpy.types.Scene) -> None:
    """A table with tableware and a fruit bowl, and two instanced chairs."""
    root = scene.collection
    wood = _material("Wood", (0.35, 0.18, 0.07), (0.55, 0.32, 0.14), "wave", 4.0, 0.6)
    ceramic = _material("Ceramic", (0.9, 0.9, 0.85), (0.2, 0.35, 0.8), "checker", 8.0, 0.2)
    cup_mat = _material("CupGlaze", (0.8, 0.15, 0.1), (0.95, 0.7, 0.2), "noise", 12.0, 0.25)
    apple = _material("Apple", (0.7, 0.05, 0.05), (0.3, 0.6, 0.1), "noise", 5.0, 0.4)
    orange = _material("Orange", (0.95, 0.45, 0.05), (0.85, 0.3, 0.02), "voronoi", 20.0, 0.5)
    bowl_mat = _material("BowlMetal", (0.75, 0.75, 0.8), (0.5, 0.5, 0.55), "noise", 3.0, 0.25, 1.0)
    fabric = _material("Fabric", (0.1, 0.4, 0.35), (0.05, 0.25, 0.2), "brick", 6.0, 0.9)

    table = _collection("Table", root)
    top = _mesh_object("TableTop", table, _cube, wood, (0, 0, 0.75), (1.6, 1.0, 0.08))
    leg0 = None
    for k, (x, y) in enumerate([(0.7, 0.4), (-0.7, 0.4), (0.7, -0.4), (-0.7, -0.4)]):
        if leg0 is None:
            leg = leg0 = _mesh_object(f"TableLeg{k}", table, _cylinder(12), wood, (x, y, 0.35), (0.08, 0.08, 0.7))
        else:  # linked duplicates (Alt+D): one mesh shared by four objects, each its own segment
            leg = _linked_duplicate(leg0, f"TableLeg{k}", table, (x, y, 0.35))
        leg.parent = top
        leg.matrix_parent_inverse = top.matrix_basis.inverted()
    # a render-hidden helper that would float above the table and a hidden-from-render collection:
    # neither may appear in the ids, the hierarchy or the scene bounds
    _mesh_object("HelperBox", table, _cube, wood, (0.0, 0.0, 2.5), (0.3, 0.3, 0.3)).hide_render = True
    helpers = _collection("Helpers", root)
    helpers.hide_render = True
    _mesh_object("GuideSphere", helpers, _sphere, wood, (0.0, 0.0, 3.0), (0.4, 0.4, 0.4))

    ware = _collection("Tableware", root)
    plates = _collection("Plates", ware)
    for k, (x, y) in enumerate([(0.45, 0.2), (-0.45, -0.2)]):
        _mesh_object(f"Plate{k}", plates, _cylinder(32), ceramic, (x, y, 0.8), (0.36, 0.36, 0.025))
        _mesh_object(f"Cup{k}", plates, _cone(0.5, 0.38), cup_mat, (x + 0.05, y - 0.28, 0.86), (0.14, 0.14, 0.14))
    bowl = _collection("FruitBowl", ware)
    _mesh_object("Bowl", bowl, _cone(0.5, 0.3), bowl_mat, (0.0, 0.15, 0.84), (0.42, 0.42, 0.1))
    # a curve object (bevelled ring on the bowl's rim): non-mesh geometry is a segment like any other
    _curve_ring("BowlRim", bowl, bowl_mat, (0.0, 0.15, 0.89), radius=0.215, thickness=0.018)
    fruit = _collection("Fruit", bowl)
    _mesh_object("Apple0", fruit, _sphere, apple, (-0.07, 0.12, 0.95), (0.14, 0.14, 0.14), smooth=True)
    _mesh_object("Apple1", fruit, _sphere, apple, (0.09, 0.2, 0.95), (0.13, 0.13, 0.13), smooth=True)
    _mesh_object("Orange", fruit, _sphere, orange, (0.03, 0.02, 0.96), (0.15, 0.15, 0.15), smooth=True)

    chair_src = _collection("ChairSource", root)
    seat = _mesh_object("Seat", chair_src, _cube, fabric, (0, 0, 0.45), (0.45, 0.45, 0.06))
    _mesh_object("Back", chair_src, _cube, wood, (0, -0.2, 0.8), (0.45, 0.05, 0.6), parent=None)
    chair_leg = None
    for k, (x, y) in enumerate([(0.18, 0.18), (-0.18, 0.18), (0.18, -0.18), (-0.18, -0.18)]):
        if chair_leg is None:
            chair_leg = _mesh_object(f"ChairLeg{k}", chair_src, _cylinder(8), wood, (x, y, 0.21), (0.05, 0.05, 0.42))
        else:
            _linked_duplicate(chair_leg, f"ChairLeg{k}", chair_src, (x, y, 0.21))
    del seat
    _exclude(scene, chair_src)
    chairs = _collection("Chairs", root)
    for k, (pos, rot) in enumerate([((0.0, -0.85, 0.0), 0.0), ((0.0, 0.85, 0.0), math.pi)]):
        inst = bpy.data.objects.new(f"Chair{k}", None)
        inst.instance_type = "COLLECTION"
        inst.instance_collection = chair_src
        inst.location = pos
        inst.rotation_euler = (0, 0, rot)
        chairs.objects.link(inst)
    _lights_and_world(scene)


def bookshelf(scene: bpy.types.Scene) -> None:
    """A shelf with two rows of books and a vase set."""
    root = scene.collection
    wood = _material("ShelfWood", (0.45, 0.3, 0.15), (0.3, 0.18, 0.08), "wave", 3.0, 0.7)
    frame = _collection("Shelf", root)
    _mesh_object("SideL", frame, _cube, wood, (-0.8, 0, 0.9), (0.05, 0.35, 1.8))
    _mesh_object("SideR", frame, _cube, wood, (0.8, 0, 0.9), (0.05, 0.35, 1.8))
    for k, z in enumerate([0.05, 0.9, 1.75]):
        _mesh_object(f"Board{k}", frame, _cube, wood, (0, 0, z), (1.6, 0.35, 0.05))
    books = _collection("Books", root)
    palette = [(0.7, 0.1, 0.1), (0.1, 0.3, 0.7), (0.1, 0.55, 0.2), (0.8, 0.65, 0.1), (0.45, 0.1, 0.5)]
    for row, (label, z) in enumerate([("TopShelf", 0.925), ("BottomShelf", 0.075)]):
        shelf = _collection(label, books)
        x = -0.7
        for k in range(6):
            w = 0.08 + 0.03 * ((k * 7 + row) % 3)
            hgt = 0.5 + 0.08 * ((k * 5 + row) % 4)
            c = palette[(k + row) % len(palette)]
            mat = _material(f"Cover{row}{k}", c, tuple(min(1.0, v + 0.25) for v in c), "brick", 10.0, 0.6)
            _mesh_object(f"Book{row}{k}", shelf, _cube, mat, (x + w / 2, 0, z + hgt / 2), (w, 0.26, hgt))
            x += w + 0.02
    decor = _collection("Decor", root)
    vases = _collection("VaseSet", decor)
    glaze = _material("Glaze", (0.1, 0.45, 0.5), (0.85, 0.85, 0.8), "noise", 8.0, 0.2)
    _mesh_object("Vase", vases, _cone(0.5, 0.25, 24), glaze, (0.45, 0, 0.3), (0.25, 0.25, 0.5), smooth=True)
    _mesh_object("Ball", vases, _sphere, glaze, (0.45, 0, 1.05), (0.22, 0.22, 0.22), smooth=True)
    _mesh_object("Ring", decor, _torus(), _material("Brass", (0.8, 0.6, 0.2), (0.6, 0.45, 0.1), "noise", 4.0,
                                                       0.3, 1.0), (-0.35, 0, 1.85), (0.5, 0.5, 0.5))
    _lights_and_world(scene)


def vehicle(scene: bpy.types.Scene) -> None:
    """A toy car: body, wheels with parented hubs, lights and a text number plate."""
    root = scene.collection
    paint = _material("Paint", (0.75, 0.1, 0.08), (0.6, 0.05, 0.05), "noise", 6.0, 0.3, 0.3)
    glass = _material("Glass", (0.15, 0.25, 0.35), (0.3, 0.45, 0.6), "wave", 5.0, 0.1)
    rubber = _material("Rubber", (0.05, 0.05, 0.05), (0.15, 0.15, 0.15), "voronoi", 30.0, 0.9)
    chrome = _material("Chrome", (0.8, 0.8, 0.85), (0.6, 0.6, 0.65), "noise", 10.0, 0.15, 1.0)
    lamp = _material("Lamp", (1.0, 0.95, 0.6), (1.0, 0.8, 0.3), "noise", 10.0, 0.2)
    body = _collection("Body", root)
    chassis = _collection("Chassis", body)
    _mesh_object("Hull", chassis, _cube, paint, (0, 0, 0.45), (2.0, 0.9, 0.4))
    _mesh_object("Bumper", chassis, _cube, chrome, (1.02, 0, 0.35), (0.06, 0.95, 0.12))
    cabin = _collection("Cabin", body)
    _mesh_object("Roof", cabin, _cube, paint, (-0.15, 0, 0.95), (1.0, 0.8, 0.08))
    _mesh_object("Windows", cabin, _cube, glass, (-0.15, 0, 0.8), (0.95, 0.78, 0.28))
    wheels = _collection("Wheels", root)
    for k, (x, y) in enumerate([(0.65, 0.5), (-0.65, 0.5), (0.65, -0.5), (-0.65, -0.5)]):
        tyre = _mesh_object(f"Tyre{k}", wheels, _torus(0.22, 0.1, 24, 8), rubber, (x, y, 0.3),
                            rotation=(math.pi / 2, 0, 0))
        hub = _mesh_object(f"Hub{k}", wheels, _cylinder(16), chrome, (0, 0, 0), (0.26, 0.26, 0.12))
        hub.parent = tyre
    lights = _collection("Lights", root)
    for k, y in enumerate([0.3, -0.3]):
        _mesh_object(f"Headlight{k}", lights, _sphere, lamp, (1.0, y, 0.5), (0.12, 0.12, 0.12), smooth=True)
    curve = bpy.data.curves.new("PlateText", "FONT")
    curve.body = "HS 42"
    curve.size = 0.22
    curve.extrude = 0.01
    curve.align_x, curve.align_y = "CENTER", "CENTER"
    plate = bpy.data.objects.new("PlateText", curve)
    plate.location = (-1.01, 0, 0.45)
    plate.rotation_euler = (math.pi / 2, 0, -math.pi / 2)
    plate.data.materials.append(chrome)
    body.objects.link(plate)
    _lights_and_world(scene)


EXAMPLES: dict[str, Callable[[bpy.types.Scene], None]] = {
    "table_set": table_set,
    "bookshelf": bookshelf,
    "vehicle": vehicle,
}

#: The bundled demo / test fixture.
DEFAULT_EXAMPLE = "table_set"


def build_example(name: str) -> bpy.types.Scene:
    """Reset Blender to an empty file and build example ``name`` into its scene; returns the scene."""
    if name not in EXAMPLES:
        raise DatasetError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    EXAMPLES[name](scene)
    return scene


def write_example(name: str, path: str | Path) -> Path:
    """Build example ``name`` and save it as a .blend at ``path`` (parent folders are created)."""
    path = Path(path).resolve()
    build_example(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        from .render import quiet_output

        with quiet_output(bpy.app.background):  # Blender's "Info: Saved as ..." line
            bpy.ops.wm.save_as_mainfile(filepath=str(path), check_existing=False, compress=False)
    except (OSError, RuntimeError) as exc:
        raise DatasetError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from None
    return path


def example_fingerprint(name: str) -> str:
    """SHA-256 standing in for a .blend hash: the example's name and this generator's source.

    Saved .blend files differ byte-wise from save to save, so a folder rendered from an in-memory example
    is identified by the code that built it; editing the generator makes an old folder refuse to resume.
    """
    h = hashlib.sha256(name.encode("utf-8") + b"\0")
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def engine_key(engine: str) -> str:
    """Config engine name (``cycles`` / ``workbench``) for a CLI or Blender identifier, any case."""
    e = str(engine).strip().lower()
    e = {"blender_workbench": "workbench"}.get(e, e)
    if e not in ENGINES:
        raise DatasetError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)} (any case)")
    return e


def render_example(name: str, out_dir: str | Path, n_train: int = 100, n_val: int = 10, res: int = 200,
                   samples: int = 64, engine: str = "CYCLES", progress=None, *, n_test: int = 0, seed: int = 0,
                   rotations: tuple[float, ...] = DEFAULT_ROTATIONS) -> Path:
    """Build example ``name`` in this Blender session and render it to the Blender-HS folder ``out_dir``.

    Replaces the open Blender file (like :func:`build_example`). ``engine`` is ``"CYCLES"`` or
    ``"WORKBENCH"`` (any case, Blender identifiers accepted); ``progress(done, total, message)`` is called
    after every view. Resumable: a rerun with the same arguments skips finished views and yields the same
    files; other settings are refused with :class:`DatasetError`. Returns ``out_dir`` (resolved).
    """
    config = RenderConfig(n_train=n_train, n_val=n_val, n_test=n_test, width=res, height=res, samples=samples,
                          engine=engine_key(engine), seed=seed, rotations=tuple(float(r) for r in rotations))
    config = replace(config, extra={"example": name})
    config.validate()
    scene = build_example(name)
    from .dataset import render_dataset_from_open_scene

    result = render_dataset_from_open_scene(out_dir, config, scene=scene, progress=progress,
                                            source=f"example:{name}", source_sha256=example_fingerprint(name))
    return result.out_dir
