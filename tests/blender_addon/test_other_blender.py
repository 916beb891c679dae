"""The bpy-level tests of what differs between Blender releases, run again under the other Blender (CI: 4.2
LTS, which has neither OpenImageIO's Python module nor ``PointCloud.resize``): reading EXR passes with NumPy
and making point clouds through Geometry Nodes."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import REPO, other_blender_python

TESTS = ["tests/dataset_tools/test_exr.py", "tests/blender_addon/test_pointcloud.py"]


def test_release_dependent_tests_pass_on_the_other_blender():
    python = other_blender_python()
    if not python.is_file():
        pytest.skip(f"no {python} (bash scripts/setup.sh --other-blender)")
    if subprocess.run([str(python), "-c", "import pytest"], capture_output=True).returncode != 0:
        pytest.skip(f"no pytest in {python} (bash scripts/setup.sh --other-blender installs it)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout
    print("\n" + res.stdout.strip().splitlines()[-1])
