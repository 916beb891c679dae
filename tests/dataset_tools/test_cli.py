"""Bad input through the real CLI: a non-zero exit and exactly one line on stderr, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "dataset_tools", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[2])


def assert_one_line_error(proc, needle):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and needle in lines[0]


def test_missing_file(tmp_path):
    assert_one_line_error(run_cli("render", tmp_path / "nope.blend", tmp_path / "out"), "no such file")


def test_not_a_blend_file(tmp_path):
    bad = tmp_path / "bad.blend"
    bad.write_text("hello")
    assert_one_line_error(run_cli("render", bad, tmp_path / "out"), "not a .blend file")


def test_output_not_writable(tmp_path, table_set_blend):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run_cli("render", table_set_blend, blocker / "out", "--train", "1", "--val", "0"),
                          "cannot create output folder")


def test_nothing_renderable(tmp_path):
    empty = tmp_path / "empty.blend"
    code = ("import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); "
            "bpy.data.objects.new('Lamp', bpy.data.lights.new('L', 'POINT'));"
            f"bpy.context.scene.collection.objects.link(bpy.data.objects['Lamp']); "
            f"bpy.ops.wm.save_as_mainfile(filepath={str(empty)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert_one_line_error(run_cli("render", empty, tmp_path / "out", "--train", "1", "--val", "0"),
                          "nothing renderable")


def test_bad_options(tmp_path):
    assert_one_line_error(run_cli("render", tmp_path / "x.blend", tmp_path / "o", "--engine", "cycles", "--res", "2"),
                          "--res")


def test_example_command_and_unknown_example(tmp_path):
    proc = run_cli("example", "vehicle", tmp_path / "v.blend")
    assert proc.returncode == 0 and (tmp_path / "v.blend").stat().st_size > 1000
    assert_one_line_error(run_cli("example", "spaceship", tmp_path / "s.blend"), "unknown example")


@pytest.mark.slow
def test_cli_renders_with_progress(tmp_path, table_set_blend):
    out = tmp_path / "ds"
    proc = run_cli("render", table_set_blend, out, "--train", "2", "--val", "1", "--res", "32", "--samples", "2",
                   "--rotations", "10")
    assert proc.returncode == 0, proc.stderr
    assert "views rendered" in proc.stderr
    assert (out / "val_visible/r_0_rotate.png").is_file() and not (out / "val_rotate_45").exists()
    again = run_cli("render", table_set_blend, out, "--train", "2", "--val", "1", "--res", "32", "--samples", "3",
                    "--rotations", "10")
    assert_one_line_error(again, "different settings")


def test_unreadable_blend(tmp_path, table_set_blend):
    """A file with the .blend magic that Blender cannot load (truncated) is one clear line, not a crash."""
    broken = tmp_path / "broken.blend"
    broken.write_bytes(table_set_blend.read_bytes()[:3000])
    assert_one_line_error(run_cli("render", broken, tmp_path / "out", "--train", "1", "--val", "0"), "cannot open")
    assert not (tmp_path / "out" / "meta.json").exists()


@pytest.mark.slow
def test_too_many_objects_for_the_id_format(tmp_path):
    """More renderable objects than Blender's object index holds (32767): refused before any rendering."""
    big = tmp_path / "big.blend"
    code = ("import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); "
            "me = bpy.data.meshes.new('m'); me.from_pydata([(0,0,0),(1,0,0),(0,1,0)], [], [(0,1,2)]); "
            "c = bpy.context.scene.collection\n"
            "for i in range(32800): c.objects.link(bpy.data.objects.new(f'o{i}', me))\n"
            f"bpy.ops.wm.save_as_mainfile(filepath={str(big)!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    proc = run_cli("render", big, tmp_path / "out", "--train", "1", "--val", "0", timeout=300)
    assert_one_line_error(proc, "32800 renderable objects")
    assert "32767" in proc.stderr


def test_example_then_render_with_progress_and_eta(tmp_path):
    """`dataset-tools example NAME OUT.blend` then `dataset-tools render` (the installed console script when
    present): a tqdm bar with elapsed<remaining time on stderr, then a summary line."""
    import re
    import shutil

    exe = shutil.which("dataset-tools")
    cmd = [exe] if exe else [sys.executable, "-m", "dataset_tools"]
    blend = tmp_path / "table.blend"
    made = subprocess.run([*cmd, "example", "table_set", str(blend)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "ds"
    proc = subprocess.run([*cmd, "render", str(blend), str(out), "--train", "3", "--val", "1", "--res", "24",
                           "--samples", "1", "--rotations", "10"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d+/6 \[\d\d:\d\d<\d\d:\d\d", proc.stderr), proc.stderr  # done/total [elapsed<ETA
    assert "6/6" in proc.stderr and "5 views rendered, 0 already done" in proc.stderr
    assert json.loads((out / "meta.json").read_text())["counts"] == {"train": 3, "val": 1, "val_rotate": 1}


def test_gpu_requested_without_one(tmp_path, table_set_blend):
    import bpy

    prefs = bpy.context.preferences.addons["cycles"].preferences
    from dataset_tools.render import select_cycles_device

    if select_cycles_device("auto") != "CPU":
        prefs.compute_device_type = "NONE"
        pytest.skip("this machine has a GPU")
    assert_one_line_error(run_cli("render", table_set_blend, tmp_path / "out", "--train", "1", "--val", "0",
                                  "--device", "gpu"), "no GPU")


@pytest.mark.slow
def test_killed_cli_render_resumes_to_identical_files(tmp_path, table_set_blend, small_dataset):
    """SIGKILL the CLI in the middle of a render (no clean-up runs), rerun the same command: the folder is
    byte-identical to the uninterrupted in-process render of the same settings."""
    import os
    import signal
    import time

    from .conftest import SMALL

    out = tmp_path / "ds"
    args = [sys.executable, "-m", "dataset_tools", "render", str(table_set_blend), str(out), "--train",
            str(SMALL["n_train"]), "--val", str(SMALL["n_val"]), "--test", str(SMALL["n_test"]), "--res",
            str(SMALL["width"]), "--samples", str(SMALL["samples"]), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(out.rglob("*_ids.png"))) < 2:
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip("the render finished before it could be killed")
    partial = len(list(out.rglob("*_ids.png")))
    assert 2 <= partial < 15
    again = subprocess.run(args, capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr

    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(out) == files(small_dataset)
