"""scripts/build_addon.py: the zip is self-contained, passes Blender's validator, and installs with Blender's
own extension installer and runs Segment Scene headless on two Blenders, the newest and the oldest supported:
this environment's bpy (5.3, Python 3.13) and the other one in ``.venv-other-blender`` (4.2 LTS, Python 3.11).
Each Blender opens the example scene that `dataset-tools example` made under it (a .blend from 5.3 does not
open in 4.2). The source folder passes Blender's own ``blender_ext.py validate`` and ``build``."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import other_blender_python

REPO = Path(__file__).resolve().parents[2]

INSTALL_SCRIPT = r"""
import importlib, os, sys, time
import bpy
zip_path, address, blend = sys.argv[-3:]
# the scene first (`dataset-tools example` made it with this Blender): the extension is installed into it
bpy.ops.wm.open_mainfile(filepath=blend)
assert tuple(bpy.data.version[:2]) == tuple(bpy.app.version[:2]), (bpy.data.version, bpy.app.version)
assert len(bpy.context.scene.objects) > 5, list(bpy.context.scene.objects)
r = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
mod = "bl_ext.user_default.ultrametric_segmentation"
assert r == {"FINISHED"}, r
assert mod in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
prefs = bpy.context.preferences.addons[mod].preferences
assert prefs.server_address == "tcp://127.0.0.1:5557"
assert bpy.context.scene.ultrametric_seg.phase == "idle"
assert bpy.ops.useg.segment_scene.poll()
m = importlib.import_module(mod)
folder = os.path.dirname(m.__file__)
assert not any(os.path.islink(os.path.join(folder, n)) for n in os.listdir(folder))
site = os.path.join(os.environ["BLENDER_USER_RESOURCES"], "extensions", ".local", "lib",
                    f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
import backend.wire.protocol, dataset_tools.render, zmq
# the add-on's runtime comes from the bundled wheel, not from the repository; the pyzmq wheel for this
# Python is installed beside it (a Python that has its own pyzmq, like the project's, imports that one)
for module in (backend.wire.protocol, dataset_tools.render):
    assert module.__file__.startswith(site), module.__file__
assert os.path.isfile(os.path.join(site, "zmq", "__init__.py")), os.listdir(site)
print("INSTALL_OK", bpy.app.version_string, "Python %d.%d" % sys.version_info[:2], "pyzmq", zmq.__version__)

# Segment Scene end to end against the real server (headless: execute renders at once; pump the timer)
prefs.server_address = address
prefs.views, prefs.resolution, prefs.engine, prefs.samples, prefs.timeout_s = 4, 40, "workbench", 1, 20.0
t0 = time.monotonic()
assert bpy.ops.useg.segment_scene() == {"FINISHED"}
runtime = importlib.import_module(mod + ".runtime")
while runtime.pump() is not None:
    assert time.monotonic() - t0 < 120, runtime.SESSION.state
    time.sleep(0.02)
seconds = time.monotonic() - t0
props = bpy.context.scene.ultrametric_seg
assert props.phase == "done", (props.phase, props.error)
obj = props.result_object
# a point cloud (not a mesh) in the Segmentation collection, with the segment attributes
assert obj is not None and obj.type == "POINTCLOUD", (obj, obj and obj.type)
assert obj.users_collection[0].name == "Segmentation"
n = len(obj.data.points)
assert n > 100, n
kinds = {a.name: a.data_type for a in obj.data.attributes}
for name, kind in [("segment", "INT"), ("segment_level_0", "INT"), ("segment_colour", "FLOAT_COLOR"),
                   ("rgb", "FLOAT_COLOR"), ("radius", "FLOAT")]:
    assert kinds.get(name) == kind, (name, kinds)
before = props.segments
props.granularity = 0.9  # recolours from the returned tree
assert props.segments < before, (before, props.segments)
props.granularity = 0.3
assert bpy.ops.useg.separate_segments(max_objects=3, min_points=1) == {"FINISHED"}  # more point clouds
parts = list(bpy.data.collections[obj.name + " segments"].objects)
assert len(parts) >= 2 and all(p.type == "POINTCLOUD" for p in parts), [(p.name, p.type) for p in parts]
assert sum(len(p.data.points) for p in parts) == n
print("SEGMENT_OK", n, "points", before, "segments", "%.1f s" % seconds, "separated into", len(parts))
"""

def blender_pythons() -> list:
    """This environment's Blender and the other one (:func:`.conftest.other_blender_python`)."""
    other = other_blender_python()
    return [pytest.param(sys.executable, id="this-blender"),
            pytest.param(str(other), id="other-blender", marks=pytest.mark.skipif(
                not other.is_file(), reason=f"no {other} (bash scripts/setup.sh --other-blender)"))]


def _load_build():
    spec = importlib.util.spec_from_file_location("build_addon", REPO / "scripts" / "build_addon.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    # all four platforms, as released: the same zip is installed by every Blender below
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "build_addon.py"), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return out / "ultrametric_segmentation-0.1.0.zip", res.stdout


def test_zip_contents(built_zip):
    path, log = built_zip
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        manifest = z.read("blender_manifest.toml").decode()
        runtime = [n for n in names if n.startswith("wheels/ultrametric_seg_runtime-")]
        assert len(runtime) == 1, names
        with zipfile.ZipFile(io.BytesIO(z.read(runtime[0]))) as w:
            protocol = w.read("backend/wire/protocol.py")
            packed = set(w.namelist())
    assert "__init__.py" in names and "operators/segment_scene.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert protocol == (REPO / "backend" / "wire" / "protocol.py").read_bytes()  # one source of truth
    assert {"dataset_tools/render.py", "backend/core/geometry.py", "backend/wire/tree_cut.py"} <= packed
    assert not any(n.startswith("backend/method") or n.startswith("backend/service") for n in packed)
    for key in ('schema_version = "1.0.0"', 'type = "add-on"', 'blender_version_min = "4.2.0"', "[permissions]",
                "network =", "files ="):
        assert key in manifest
    wheels = re.findall(r'"\./(wheels/[^"]+\.whl)"', manifest)
    if "WITHOUT wheels" in log:
        pytest.skip("no local pyzmq wheel: built without wheels")
    assert wheels and all(w in names for w in wheels) and any("pyzmq" in w for w in wheels)
    assert 'platforms = ["linux-x64", "macos-arm64", "macos-x64", "windows-x64"]' in manifest, log
    # every claimed platform has a pyzmq wheel for every Blender Python (4.2-5.0: 3.11; 5.1+: 3.13)
    b = _load_build()
    assert b.python_versions("4.2.0") == ["3.11", "3.13"]
    pyzmq = [w for w in wheels if "pyzmq" in w]
    assert b.coverage_gaps(pyzmq, list(b.PLATFORM_TAGS), ["3.11", "3.13"]) == []
    assert 'license = ["SPDX:GPL-3.0-or-later"]' in manifest and "maintainer =" in manifest


def test_blender_validator_accepts_the_zip(built_zip):
    cli = _blender_ext_cli()
    res = subprocess.run([sys.executable, str(cli), "validate", str(built_zip[0])], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("python", blender_pythons())
def test_zip_installs_and_segments_the_scene(built_zip, server_address, tmp_path, python):
    """Blender's own installer takes the zip (the right pyzmq wheel for its Python), the add-on is enabled,
    and Segment Scene runs end to end against a real `backend serve`, headless, on each Blender."""
    if "WITHOUT wheels" in built_zip[1]:
        pytest.skip("no pyzmq wheel could be bundled")
    script = tmp_path / "install.py"
    script.write_text(INSTALL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDER_USER", "PYTHONPATH", "VIRTUAL_ENV"))}
    # `dataset-tools example` under this Blender (the repository on its path: the other Blender's venv has
    # only bpy), so the scene it opens is one its own version wrote
    blend = tmp_path / "table_set.blend"
    res = subprocess.run([python, "-m", "dataset_tools", "example", "table_set", str(blend)], cwd=tmp_path,
                         env=dict(env, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and blend.is_file(), res.stdout[-2000:] + res.stderr[-2000:]
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "user")
    res = subprocess.run([python, str(script), str(built_zip[0]), server_address, str(blend)], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert "SEGMENT_OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    assert "INSTALL_OK" in res.stdout
    print("\n" + next(line for line in res.stdout.splitlines() if line.startswith("INSTALL_OK")),
          next(line for line in res.stdout.splitlines() if line.startswith("SEGMENT_OK")))


def test_source_folder_validates_and_builds_with_blenders_tool(tmp_path):
    """extensions.blender.org's rules: Blender's own `blender_ext.py validate` and `build` accept the source
    folder as it is (no stale wheel entries, GPL licence), not only the zip of scripts/build_addon.py."""
    cli = _blender_ext_cli()
    src = tmp_path / "src"
    shutil.copytree(REPO / "blender_addon", src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    res = subprocess.run([sys.executable, str(cli), "validate", str(src)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    (tmp_path / "out").mkdir()
    res = subprocess.run([sys.executable, str(cli), "build", "--source-dir", str(src), "--output-dir",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    [built] = list((tmp_path / "out").glob("*.zip"))
    with zipfile.ZipFile(built) as z:
        assert "operators/segment_scene.py" in z.namelist()


def _blender_ext_cli() -> Path:
    import bpy

    cli = Path(bpy.utils.system_resource("SCRIPTS")) / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    if not cli.is_file():
        pytest.skip("Blender's extension CLI is not in this bpy")
    return cli


def test_wheel_platforms_and_no_wheel_build(tmp_path):
    b = _load_build()
    assert b.wheel_platforms("pyzmq-27.3.0-cp311-cp311-macosx_10_15_universal2.whl") == {"macos-x64", "macos-arm64"}
    assert b.wheel_platforms("pyzmq-27.3.0-cp311-cp311-win_amd64.whl") == {"windows-x64"}
    assert b.wheel_platforms("x-1-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl") == {"linux-x64"}
    abi3 = "pyzmq-27.3.0-cp312-abi3-win_amd64.whl"
    assert [b.wheel_serves_python(abi3, v) for v in ("3.11", "3.12", "3.13", "3.14")] == [False, True, True, True]
    assert b.wheel_serves_python("pyzmq-27.3.0-cp311-cp311-win_amd64.whl", "3.13") is False
    assert b.wheel_serves_python("x-1-py3-none-any.whl", "3.13") is True
    assert b.python_versions("5.1.0") == ["3.13"]
    assert b.coverage_gaps([abi3], ["windows-x64"], ["3.11", "3.13"]) == [("windows-x64", "3.11")]
    # Blender's own rule (measured on 5.3): cp311 + cp312-abi3 reads as "3.11 only", so 3.13 is refused
    cp311, cp313 = "pyzmq-26.4.0-cp311-cp311-win_amd64.whl", "pyzmq-26.4.0-cp313-cp313-win_amd64.whl"
    assert b.blender_refuses([cp311, abi3], "3.13") and not b.blender_refuses([abi3], "3.13")
    assert not b.blender_refuses([cp311, cp313], "3.13") and not b.blender_refuses([cp311, cp313], "3.11")
    path = b.build(tmp_path, with_wheels=False, log=lambda *_: None)
    with zipfile.ZipFile(path) as z:
        manifest = "\n".join(line for line in z.read("blender_manifest.toml").decode().splitlines()
                             if not line.startswith("#"))
    assert "platforms =" not in manifest and "pyzmq" not in manifest and "ultrametric_seg_runtime" in manifest
    with pytest.raises(b.BuildError, match="unknown platforms"):
        b.build(tmp_path, platforms=["amiga"])
