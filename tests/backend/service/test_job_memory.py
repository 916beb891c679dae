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
    """Peak RSS per stage of a real job: never above the admission estimate; and its stage terms at most 1.5x
    above the measurement once the model's start is put on this process's measured start."""
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
    assert {"starting", "masks", "training", "segmentation"} <= set(measured), measured
    stages = ("masks", "training", "segmentation")
    gib = ({k: round(v / 2**30, 3) for k, v in measured.items()}, {k: round(v / 2**30, 3) for k, v in estimate.items()})
    # never below: a job the server admits must not take it past its budget
    ratios = {stage: round(measured[stage] / estimate[stage], 3) for stage in stages}
    assert all(r <= 1.0 for r in ratios.values()), (ratios, *gib)
    # at most 1.5x above, for the stage terms: the process's own import footprint (PROCESS_BYTES, calibrated at
    # 0.77-0.85 GiB) measures 0.57 GiB on a quiet machine, so the model's start is shifted onto the measured one
    lighter = max(estimate["starting"] - measured["starting"], 0.0)
    tight = {stage: round(measured[stage] / (estimate[stage] - lighter), 3) for stage in stages}
    assert all(r >= 1 / 1.5 for r in tight.values()), (tight, ratios, *gib)


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


# -- the segmentation stage's bounded pieces -----------------------------------------------------------------------
def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_feature_distances_in_bounded_memory_and_bit_identical():
    from backend.core.graphs import feature_distances

    rng = np.random.default_rng(0)
    f = rng.standard_normal((2000, 256)).astype(np.float32)
    src, dst = rng.integers(0, 2000, 300_000), rng.integers(0, 2000, 300_000)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _peak_rss_bytes()
    got = feature_distances(f, src, dst)
    grew = _peak_rss_bytes() - before
    assert grew < 400 * 2**20, grew / 2**20  # gathering every edge's rows at once: 1.2 GB here
    g = f.astype(np.float64)
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    np.testing.assert_array_equal(got, np.clip(1.0 - np.einsum("ed,ed->e", g[src], g[dst]), 0.0, 2.0))


def test_sampled_feature_points_are_the_subsampled_feature_points():
    from backend.method.job import pipeline_config_from_options
    from backend.method.pipeline import make_view_masks, normalise_scene, train_field

    cfg = pipeline_config_from_options(P.JobOptions(preset="cpu", iterations=2, geometry="depth"), "cpu")
    scene = normalise_scene(make_scene(n_views=2, h=24, w=32, seed=1))
    trainer = train_field(scene, make_view_masks(scene, cfg), cfg, None)
    for per_view in (10**9, 50):
        for v in range(2):
            p, f, c = trainer.feature_points([v])
            rng = np.random.default_rng(3)
            if len(p) > per_view:
                keep = np.sort(rng.choice(len(p), per_view, replace=False))
                p, f, c = p[keep], f[keep], c[keep]
            rng = np.random.default_rng(3)

            def sample(n: int, per_view=per_view, rng=rng):
                return np.sort(rng.choice(n, per_view, replace=False)) if n > per_view else None

            p2, f2, c2 = trainer.sampled_feature_points(v, sample, block=100)  # several blocks
            assert len(p) == len(p2) > 0
            np.testing.assert_array_equal(p, p2)
            np.testing.assert_array_equal(f, f2)
            np.testing.assert_array_equal(c, c2)
    stops = iter([False, True])
    with pytest.raises(InterruptedError):
        trainer.sampled_feature_points(0, None, should_stop=lambda: next(stops), block=100)
