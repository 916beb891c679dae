"""Fixtures for the add-on tests in headless bpy: a real `backend serve` subprocess on loopback, the
registered add-on on the bundled example scene, and a loop that pumps the add-on's timer (timers
never fire in the bpy module)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


#: The other Blender the add-on is tested on, in the venv `bash scripts/setup.sh --other-blender` makes (CI
#: does): bpy 4.2 LTS on Python 3.11 (the oldest supported Blender; 4.2 to 5.0 embed 3.11) beside this
#: environment's 5.3, or 5.3.0 on 3.13 beside a 3.11 environment (5.0).
OTHER_BLENDER_VENV = REPO / ".venv-other-blender"


def other_blender_python() -> Path:
    """The other Blender's Python; ``UMSEG_OTHER_BLENDER=/path/to/python`` picks another one (how 4.5 LTS,
    5.0, 5.1 and 5.2 were checked by hand; docs/addon.md)."""
    default = OTHER_BLENDER_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    return Path(os.environ.get("UMSEG_OTHER_BLENDER") or default)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="session")
def server_address(tmp_path_factory):
    """A real `backend serve` subprocess on loopback running the test job function."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = ["backend", "serve"]  # `backend serve`
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--bind", address, "--device", "cpu",
         "--workdir", str(tmp_path_factory.mktemp("serve")), "--run-job", "tests.backend.service_jobs:run_job",
         "--log-level", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        pytest.fail(f"the job server did not start: {line}{proc.stdout.read()}")
    yield address
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def addon(server_address):
    """The example scene ``table_set`` with the add-on registered; preferences point at the server."""
    import bpy

    import blender_addon
    from blender_addon import preferences, runtime
    from dataset_tools.examples import build_example

    scene = build_example("table_set")
    blender_addon.register()
    old = preferences.FALLBACK
    preferences.FALLBACK = preferences.DefaultPreferences(server_address=server_address, timeout_s=5.0, views=4,
                                                          resolution=48, engine="workbench", samples=1)
    try:
        yield scene, bpy, runtime
    finally:
        preferences.FALLBACK = old
        blender_addon.unregister()


def pump_until_idle(runtime, limit_s: float = 30.0) -> float:
    """Call the timer callback until it stops (returns None); returns the seconds it took."""
    t0 = time.monotonic()
    while runtime.pump() is not None:
        if time.monotonic() - t0 > limit_s:
            raise AssertionError(f"the job did not end within {limit_s} s: {runtime.SESSION.state}")
        time.sleep(0.02)
    return time.monotonic() - t0
