"""The job server with its default job, the real pipeline: a tiny rendered scene over loopback sockets,
real masks, a short real training, the real tree; the result must come back in Blender units."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.wire import protocol as P
from backend.service.client import JobClient
from backend.method.data import load_scene
from backend.method.job import run_job
from backend.service.server import JobServer, JobServerConfig

pytestmark = pytest.mark.timeout(300)


def test_real_pipeline_job_over_loopback(tiny_dataset, tmp_path):
    scene = load_scene(tiny_dataset, "train", normalised=False)  # what the add-on sends: world units
    server = JobServer(JobServerConfig(bind="tcp://127.0.0.1:*", device="cpu", workdir=tmp_path / "jobs"),
                       run_job).start()
    try:
        with JobClient(server.endpoint, timeout_s=30.0) as client:
            job = client.submit(scene, P.JobOptions(preset="fast", iterations=12, thresholds=(0.1, 0.3)))
            stages = [e.stage for e in client.progress(job)]
            result = client.wait(job)
    finally:
        server.stop()
    assert {"masks", "training", "segmentation"} <= set(stages)
    a = result.arrays
    n = len(a["points"])
    assert n > 100 and a["parents"].shape == (2 * n - 1,) and a["labels"].shape == (2, n)
    lo, hi = np.asarray(json.loads((tiny_dataset / "meta.json").read_text())["scene_bounds"])
    assert (((a["points"] >= lo - 0.05) & (a["points"] <= hi + 0.05)).all(1)).mean() > 0.99
    assert result.meta["hierarchy"]["thresholds"] == pytest.approx([0.1, 0.3])
