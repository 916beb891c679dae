"""Issue #27: the admission estimate against the real job's measured peak memory per stage, and cancel / SIGTERM in
the real job's segmentation stage. A real ``backend serve`` (default job, ``process`` executor) on loopback, a
full-frame scene (every pixel on a surface: the most points per pixel) at a size CI can afford."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backend.method.job import estimate_peak_bytes
from backend.service.client import JobClient, JobError
from backend.service.server import JobSize
from backend.wire import protocol as P
from tests.backend.service.folders import job_folder
from tests.backend.service_jobs import make_scene

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(400)
TOKEN = "job-memory-token-0123456789"
PEAKS = re.compile(r"job-(\S+) peak memory by stage: (.*)")


def full_frame_scene(views: int, size: int, seed: int = 0):
    scene = make_scene(n_views=views, h=size, w=size, seed=seed)
    return dataclasses.replace(scene, depth=np.full_like(scene.depth, 1.5))


def serve(workdir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-B", "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu",
         "--workdir", str(workdir), "--log-level", "INFO"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[-1]


def test_measured_peak_per_stage_is_within_the_estimate_and_at_most_1_5x_below_it(tmp_path):
    proc, address = serve(tmp_path / "jobs")
    views, size = 2, 96
    opts = P.JobOptions(iterations=5, thresholds=(0.05, 0.2))
    try:
        with JobClient(address, timeout_s=60, client_token=TOKEN) as c:
            result = c.wait(c.submit(full_frame_scene(views, size), opts))
            assert len(result.arrays["points"]) > 100
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    m = PEAKS.search(err)
    assert m, err[-3000:]
    measured = {k: float(v) * 2**30 for k, v in re.findall(r"(\w+) ([\d.]+) GiB", m.group(2))}
    estimate = estimate_peak_bytes(JobSize(views=views, height=size, width=size, depth=True), opts)
    assert {"masks", "training", "segmentation"} <= set(measured), measured
    for stage in ("masks", "training", "segmentation"):
        ratio = measured[stage] / estimate[stage]
        assert 1 / 1.5 <= ratio <= 1.0, (stage, measured[stage] / 2**30, estimate[stage] / 2**30)


def test_real_job_cancelled_in_segmentation_within_2s_then_sigterm_in_segmentation_exits_0(tmp_path):
    proc, address = serve(tmp_path / "jobs")
    opts = P.JobOptions(iterations=3, thresholds=(0.05,))
    try:
        with JobClient(address, timeout_s=60, client_token=TOKEN) as c:
            job = c.submit(full_frame_scene(4, 128, seed=1), opts)
            for p in c.progress(job):
                if p.stage == "segmentation":
                    break
            t0 = time.monotonic()
            c.cancel(job)
            with pytest.raises(JobError) as e:
                c.wait(job)
            assert e.value.code == "cancelled" and time.monotonic() - t0 < 2.0
            job = c.submit(full_frame_scene(4, 128, seed=2), opts)
            for p in c.progress(job):
                if p.stage == "segmentation":
                    break
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            took = time.monotonic() - t0
        err = proc.stderr.read()
        assert code == 0 and took < 5.0 and "Traceback" not in err and "terminate called" not in err, (code, took)
        st = json.loads((job_folder(tmp_path / "jobs", job) / "state.json").read_text())
        assert st["state"] == "failed" and st["stage"] == "segmentation", st
    finally:
        proc.kill()
        proc.wait()
