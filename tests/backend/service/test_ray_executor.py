"""`backend serve --executor ray`: a real server subprocess on loopback running jobs as Ray tasks on a local Ray
instance (loopback only): two jobs at once, one cancelled mid-run, a client that disconnects and fetches later."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.service.client import JobClient
from backend.wire import protocol as P
from tests.backend.service_jobs import make_scene

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[3]
TOKEN = "ray-executor-test-token-0123456789"


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ray_jobs")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu",
         "--workdir", str(workdir), "--run-job", "tests.backend.service_jobs:run_job", "--executor", "ray",
         "--ray-address", "local", "--max-jobs", "2", "--cpus-per-job", "0.5", "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_two_jobs_run_at_once_and_a_cancel_stops_one(ray_server):
    with JobClient(ray_server, timeout_s=120, client_token=TOKEN) as client:
        slow = client.submit(make_scene(seed=1), P.JobOptions(iterations=4000))  # ~40 s of "training"
        quick = client.submit(make_scene(seed=2), P.JobOptions(iterations=300))
        deadline = time.monotonic() + 90
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {j.job: j.state for j in client.status().jobs}
            if states.get(slow) == "running" and states.get(quick) in ("running", "done"):
                break
            time.sleep(0.3)
        assert states.get(slow) == "running" and states.get(quick) in ("running", "done"), states
        result = client.wait(quick, timeout_s=120)  # finishes while the slow one still runs
        assert result.arrays["points"].shape[1] == 3
        assert {j.job: j.state for j in client.status().jobs}[slow] == "running"
        t0 = time.monotonic()
        client.cancel(slow)
        while time.monotonic() - t0 < 20:
            if {j.job: j.state for j in client.status().jobs}[slow] == "cancelled":
                break
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert {j.job: j.state for j in client.status().jobs}[slow] == "cancelled"
        assert took < 10, took


def test_a_client_that_disconnects_fetches_its_result_later(ray_server):
    with JobClient(ray_server, timeout_s=60, client_token=TOKEN) as client:
        job = client.submit(make_scene(seed=3), P.JobOptions(iterations=50))
    with JobClient(ray_server, timeout_s=120, client_token=TOKEN) as again:  # a new connection, same owner
        result = again.wait(job, timeout_s=120)
        assert len(result.arrays["points"]) > 0
