"""Bad input through the real CLI: a non-zero exit and exactly one line on stderr, no traceback."""

from __future__ import annotations

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
                          "resolution")


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
