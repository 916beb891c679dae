"""Job functions for the cancel / SIGTERM tests: the stages of the real job (``masks``, ``training``,
``segmentation``), each doing real work; the scene's first view name picks one stage to be *stubborn* in, where the
job stops looking at ``should_stop`` and sits in native code (numpy sorting in a native thread pool, the way
Open3D's and torch's kernels do), as the real segmentation does inside its tree.

``--run-job tests.backend.service.stage_jobs:run_job``; names ``stubborn-<stage>`` (e.g. ``stubborn-segmentation``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from backend.core.scene import Scene
from backend.wire.protocol import JobOptions, JobResult, ProgressEvent
from tests.backend.service_jobs import run_job as tiny_job

STAGES = ("masks", "training", "segmentation")


def _native_work(seconds: float) -> None:
    """Busy native code for about ``seconds``, in the calling thread and a second, non-daemon-like worker thread."""
    def churn() -> None:
        rng = np.random.default_rng(0)
        a = rng.random(200_000)
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            np.sort(a)

    helper = threading.Thread(target=churn, name="native-helper")
    helper.start()
    churn()
    helper.join()


def run_job(scene: Scene, options: JobOptions, progress: Callable[[ProgressEvent], None],
            should_stop: Callable[[], bool], workdir: Path) -> JobResult:
    stubborn = scene.names[0].removeprefix("stubborn-") if scene.names and scene.names[0].startswith("stubborn-") else ""
    for stage in STAGES:
        for step in range(1, 4):
            progress(ProgressEvent(stage, step, 3, f"{stage} {step}/3"))
            if stage == stubborn:
                _native_work(60.0)  # ignores should_stop: only the executor can end it
            else:
                for _ in range(20):
                    if should_stop():
                        raise InterruptedError(f"cancelled during {stage}")
                    time.sleep(0.01)
    return tiny_job(scene, options, lambda e: None, should_stop, workdir)
