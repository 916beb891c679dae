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


def _attach(child: bpy.types.Object, parent: bpy.types.Object) -> bpy.types.Object:
    """Parent ``child`` to ``parent`` keeping its world placement (Ctrl+P, Object); ``parent``'s world matrix
    must be its ``matrix_basis`` (unparented, or itself attached with this function)."""
    child.parent = parent
    child.matrix_parent_inverse = parent.matrix_basis.inverted()
    return child


def _point_light(scene: bpy.types.Scene, name: str, location, energy: float, radius: float = 0.3) -> None:
    light = bpy.data.lights.new(name, "POINT")
    light.energy = energy
    light.shadow_soft_size = radius
    obj = bpy.data.objects.new(name, light)
    obj.location = location
    scene.collection.objects.link(obj)


def _dim_world(scene: bpy.types.Scene, strength: float) -> None:
    world = bpy.data.worlds.new("World")
    if hasattr(world, "use_nodes") and not world.use_nodes:
        world.use_nodes = True
    bg = next(n for n in world.node_tree.nodes if n.type == "BACKGROUND")
    bg.inputs["Color"].default_value = (0.55, 0.6, 0.7, 1.0)
    bg.inputs["Strength"].default_value = strength
    scene.world = world


def room(scene: bpy.types.Scene) -> None:
    """A closed room (floor, four walls, ceiling; 6 x 5 x 2.7 m) with furniture, lit from inside.

    Room → {Floor, Ceiling, Walls}; Dining → {table top with parented legs, TableItems → {plate, cup,
    bottle, Fruit → {bowl, apple, orange}}}; Shelf (sides, boards with parented books, a vase);
    Lounge → {sofa base with parented back and arms, Pillows, a rug, a floor lamp (shade parented to pole)}.
    """
    root = scene.collection
    plaster = _material("Plaster", (0.82, 0.8, 0.74), (0.7, 0.68, 0.62), "noise", 3.0, 0.9)
    parquet = _material("Parquet", (0.5, 0.33, 0.18), (0.38, 0.24, 0.12), "brick", 3.0, 0.6)
    wood = _material("RoomWood", (0.35, 0.2, 0.1), (0.5, 0.3, 0.15), "wave", 4.0, 0.6)
    pale = _material("PaleWood", (0.72, 0.6, 0.42), (0.6, 0.48, 0.32), "wave", 5.0, 0.6)
    ceramic = _material("RoomCeramic", (0.9, 0.9, 0.86), (0.3, 0.45, 0.8), "checker", 8.0, 0.2)
    red = _material("RoomGlaze", (0.75, 0.15, 0.1), (0.95, 0.6, 0.2), "noise", 10.0, 0.3)
    glass = _material("BottleGlass", (0.1, 0.45, 0.2), (0.2, 0.6, 0.3), "noise", 6.0, 0.1)
    fruit_a = _material("RoomApple", (0.7, 0.06, 0.05), (0.35, 0.6, 0.1), "noise", 5.0, 0.4)
    fruit_o = _material("RoomOrange", (0.95, 0.5, 0.05), (0.85, 0.3, 0.02), "voronoi", 20.0, 0.5)
    sofa_mat = _material("SofaFabric", (0.15, 0.3, 0.5), (0.1, 0.2, 0.38), "brick", 8.0, 0.9)
    rug_mat = _material("Rug", (0.6, 0.15, 0.2), (0.85, 0.7, 0.4), "checker", 6.0, 0.9)
    brass = _material("LampBrass", (0.8, 0.6, 0.25), (0.6, 0.45, 0.12), "noise", 4.0, 0.3, 1.0)
    shade = _material("LampShade", (0.95, 0.9, 0.75), (0.85, 0.8, 0.65), "noise", 6.0, 0.8)

    shell = _collection("Room", root)
    _mesh_object("Floor", shell, _cube, parquet, (0, 0, -0.05), (6.24, 5.24, 0.1))
    _mesh_object("Ceiling", shell, _cube, plaster, (0, 0, 2.75), (6.24, 5.24, 0.1))
    walls = _collection("Walls", shell)
    _mesh_object("WallNorth", walls, _cube, plaster, (0, 2.56, 1.35), (6.24, 0.12, 2.7))
    _mesh_object("WallSouth", walls, _cube, plaster, (0, -2.56, 1.35), (6.24, 0.12, 2.7))
    _mesh_object("WallEast", walls, _cube, plaster, (3.06, 0, 1.35), (0.12, 5.0, 2.7))
    _mesh_object("WallWest", walls, _cube, plaster, (-3.06, 0, 1.35), (0.12, 5.0, 2.7))

    dining = _collection("Dining", root)
    tx, ty = 1.0, -0.9
    top = _mesh_object("DiningTop", dining, _cube, wood, (tx, ty, 0.74), (1.4, 0.85, 0.05))
    for k, (dx, dy) in enumerate([(0.62, 0.36), (-0.62, 0.36), (0.62, -0.36), (-0.62, -0.36)]):
        _attach(_mesh_object(f"DiningLeg{k}", dining, _cube, wood, (tx + dx, ty + dy, 0.36), (0.06, 0.06, 0.72)), top)
    items = _collection("TableItems", dining)
    _mesh_object("Plate", items, _cylinder(32), ceramic, (tx - 0.35, ty - 0.1, 0.775), (0.28, 0.28, 0.02))
    _mesh_object("Cup", items, _cone(0.5, 0.4), red, (tx - 0.05, ty - 0.22, 0.82), (0.1, 0.1, 0.11))
    _mesh_object("Bottle", items, _cylinder(16), glass, (tx + 0.45, ty + 0.2, 0.92), (0.09, 0.09, 0.32))
    fruit = _collection("Fruit", items)
    _mesh_object("FruitBowl", fruit, _cone(0.5, 0.3), ceramic, (tx + 0.15, ty + 0.15, 0.81), (0.3, 0.3, 0.09))
    _mesh_object("RoomApple", fruit, _sphere, fruit_a, (tx + 0.1, ty + 0.12, 0.88), (0.1, 0.1, 0.1), smooth=True)
    _mesh_object("RoomOrange", fruit, _sphere, fruit_o, (tx + 0.21, ty + 0.18, 0.885), (0.11, 0.11, 0.11),
                 smooth=True)

    shelf = _collection("Shelf", root)
    sx, sy = -2.78, -0.9  # against the west wall, facing +x
    side = _mesh_object("ShelfSideL", shelf, _cube, pale, (sx, sy - 0.52, 0.9), (0.36, 0.04, 1.8))
    _attach(_mesh_object("ShelfSideR", shelf, _cube, pale, (sx, sy + 0.52, 0.9), (0.36, 0.04, 1.8)), side)
    boards = [_attach(_mesh_object(f"ShelfBoard{k}", shelf, _cube, pale, (sx, sy, z), (0.36, 1.0, 0.03)), side)
              for k, z in enumerate([0.15, 0.8, 1.45])]
    palette = [(0.7, 0.1, 0.1), (0.1, 0.3, 0.7), (0.1, 0.55, 0.2), (0.8, 0.65, 0.1), (0.45, 0.1, 0.5)]
    for row, board in enumerate(boards[:2]):
        y = sy - 0.42
        for k in range(3):
            w, hgt = 0.07 + 0.02 * ((k + row) % 2), 0.26 + 0.04 * ((k * 2 + row) % 3)
            c = palette[(k + 2 * row) % len(palette)]
            mat = _material(f"RoomBook{row}{k}", c, tuple(min(1.0, v + 0.25) for v in c), "brick", 10.0, 0.6)
            z = board.location[2] + 0.015 + hgt / 2
            _attach(_mesh_object(f"Book{row}{k}", shelf, _cube, mat, (sx + 0.02, y + w / 2, z), (0.24, w, hgt)), board)
            y += w + 0.03
    _mesh_object("ShelfVase", shelf, _cone(0.5, 0.3, 24), red, (sx, sy + 0.2, 1.6), (0.18, 0.18, 0.28), smooth=True)

    lounge = _collection("Lounge", root)
    fx, fy = -0.6, 2.02  # sofa against the north wall, facing -y
    base = _mesh_object("SofaBase", lounge, _cube, sofa_mat, (fx, fy, 0.22), (2.0, 0.8, 0.44))
    _attach(_mesh_object("SofaBack", lounge, _cube, sofa_mat, (fx, fy + 0.3, 0.7), (2.0, 0.2, 0.52)), base)
    for k, dx in enumerate([-1.08, 1.08]):
        _attach(_mesh_object(f"SofaArm{k}", lounge, _cube, sofa_mat, (fx + dx, fy, 0.36), (0.16, 0.8, 0.72)), base)
    pillows = _collection("Pillows", lounge)
    pillow_cols = [(0.85, 0.75, 0.2), (0.8, 0.35, 0.1), (0.3, 0.65, 0.5)]
    for k, dx in enumerate([-0.6, 0.0, 0.6]):
        mat = _material(f"Pillow{k}", pillow_cols[k], tuple(min(1.0, v + 0.2) for v in pillow_cols[k]), "checker",
                        6.0, 0.9)
        _mesh_object(f"Pillow{k}", pillows, _sphere, mat, (fx + dx, fy + 0.1, 0.64), (0.42, 0.16, 0.38), smooth=True)
    _mesh_object("Rug", lounge, _cube, rug_mat, (fx, 0.6, 0.01), (2.2, 1.4, 0.02))
    pole = _mesh_object("LampPole", lounge, _cylinder(12), brass, (2.5, 2.05, 0.8), (0.05, 0.05, 1.6))
    _attach(_mesh_object("LampShade", lounge, _cone(0.5, 0.3), shade, (2.5, 2.05, 1.62), (0.45, 0.45, 0.35)), pole)

    _point_light(scene, "CeilingLight", (0.0, 0.0, 2.45), 220.0, 0.5)
    _point_light(scene, "CornerLight", (-2.0, -1.8, 2.2), 90.0, 0.3)
    _point_light(scene, "LampLight", (2.5, 2.05, 1.5), 80.0, 0.1)
    _dim_world(scene, 0.2)


def surroundings(scene: bpy.types.Scene) -> None:
    """Content with surroundings: a picnic table set on an 80 m ground, with trees, rocks and a house
    15-30 m away. Picnic → {table top with parented legs, Benches, TableItems}; Surroundings → {Trees
    (crowns parented to trunks), Rocks, House (roof parented to the body)}."""
    root = scene.collection
    grass = _material("Grass", (0.2, 0.45, 0.12), (0.3, 0.55, 0.18), "noise", 0.5, 0.9)
    wood = _material("PicnicWood", (0.5, 0.3, 0.14), (0.35, 0.2, 0.08), "wave", 4.0, 0.7)
    bark = _material("Bark", (0.3, 0.2, 0.1), (0.2, 0.13, 0.07), "wave", 8.0, 0.9)
    leaves = _material("Leaves", (0.1, 0.4, 0.1), (0.2, 0.55, 0.15), "voronoi", 3.0, 0.8)
    stone = _material("Stone", (0.5, 0.5, 0.48), (0.35, 0.35, 0.33), "voronoi", 4.0, 0.8)
    brick = _material("HouseBrick", (0.7, 0.35, 0.25), (0.8, 0.75, 0.7), "brick", 2.0, 0.8)
    tiles = _material("RoofTiles", (0.45, 0.12, 0.08), (0.3, 0.08, 0.05), "brick", 3.0, 0.7)
    ceramic = _material("PicnicCeramic", (0.92, 0.92, 0.88), (0.2, 0.4, 0.8), "checker", 8.0, 0.2)
    red = _material("PicnicRed", (0.8, 0.1, 0.1), (0.95, 0.9, 0.9), "checker", 10.0, 0.6)
    glass = _material("PicnicGlass", (0.15, 0.35, 0.6), (0.3, 0.5, 0.7), "noise", 6.0, 0.1)

    ground = _collection("Ground", root)
    _mesh_object("Ground", ground, lambda bm: bmesh.ops.create_grid(bm, x_segments=1, y_segments=1, size=40.0),
                 grass, (0, 0, 0))
    picnic = _collection("Picnic", root)
    top = _mesh_object("PicnicTop", picnic, _cube, wood, (0, 0, 0.74), (1.8, 0.8, 0.05))
    for k, (dx, dy) in enumerate([(0.8, 0.32), (-0.8, 0.32), (0.8, -0.32), (-0.8, -0.32)]):
        _attach(_mesh_object(f"PicnicLeg{k}", picnic, _cube, wood, (dx, dy, 0.36), (0.07, 0.07, 0.72)), top)
    benches = _collection("Benches", picnic)
    for k, y in enumerate([0.75, -0.75]):
        seat = _mesh_object(f"BenchSeat{k}", benches, _cube, wood, (0, y, 0.45), (1.8, 0.32, 0.05))
        for j, dx in enumerate([0.75, -0.75]):
            _attach(_mesh_object(f"BenchLeg{k}{j}", benches, _cube, wood, (dx, y, 0.21), (0.06, 0.28, 0.42)), seat)
    items = _collection("PicnicItems", picnic)
    _mesh_object("Basket", items, _cylinder(20), red, (-0.5, 0.05, 0.89), (0.36, 0.26, 0.24))
    _mesh_object("Jug", items, _cylinder(16), glass, (0.35, 0.15, 0.9), (0.12, 0.12, 0.27))
    for k, (x, y) in enumerate([(0.05, -0.2), (0.55, -0.2)]):
        _mesh_object(f"PicnicPlate{k}", items, _cylinder(32), ceramic, (x, y, 0.775), (0.26, 0.26, 0.02))
    _mesh_object("Melon", items, _sphere, leaves, (0.05, -0.2, 0.86), (0.16, 0.16, 0.15), smooth=True)

    far = _collection("Surroundings", root)
    trees = _collection("Trees", far)
    for k, (x, y, s) in enumerate([(14.0, 6.0, 1.0), (-12.0, 10.0, 1.2), (4.0, -16.0, 0.9)]):
        trunk = _mesh_object(f"Trunk{k}", trees, _cylinder(12), bark, (x, y, 1.5 * s), (0.5 * s, 0.5 * s, 3.0 * s))
        _attach(_mesh_object(f"Crown{k}", trees, _sphere, leaves, (x, y, 4.2 * s), (3.2 * s, 3.2 * s, 3.4 * s),
                             smooth=True), trunk)
    rocks = _collection("Rocks", far)
    for k, (x, y, s) in enumerate([(-9.0, -8.0, 1.4), (18.0, -5.0, 2.0)]):
        _mesh_object(f"Rock{k}", rocks, _sphere, stone, (x, y, 0.3 * s), (s * 1.3, s, s * 0.8))
    house = _collection("House", far)
    body = _mesh_object("HouseBody", house, _cube, brick, (-6.0, 24.0, 2.0), (8.0, 6.0, 4.0))
    _attach(_mesh_object("HouseRoof", house, _cone(0.72, 0.0, 4), tiles, (-6.0, 24.0, 5.5),
                         (11.0, 8.5, 3.0), rotation=(0, 0, math.pi / 4)), body)
    _lights_and_world(scene)


EXAMPLES: dict[str, Callable[[bpy.types.Scene], None]] = {
    "table_set": table_set,
    "bookshelf": bookshelf,
    "vehicle": vehicle,
    "room": room,
    "surroundings": surroundings,
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
