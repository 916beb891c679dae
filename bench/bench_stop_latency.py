"""Issue #27: how fast cancel and SIGTERM end a job, in each stage, on a real ``backend serve`` (loopback).

    python bench/bench_stop_latency.py [--executor process]

The job is ``tests.backend.service.stage_jobs:run_job`` (masks, training, segmentation; real work with a
``should_stop`` check every 10 ms), either cooperative or *stubborn* in the stage (sitting in native numpy code in
two threads, as the real job does inside a view's masks or the 3D tree). Prints, per stage: seconds from
``cancel`` to the client's ``cancelled`` error, and from SIGTERM to the server's exit (with its exit status).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from backend.service.client import JobClient, JobError  # noqa: E402
from tests.backend.service_jobs import make_scene  # noqa: E402

TOKEN = "bench-stop-latency-token-0123"


def spawn(workdir: str, executor: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu", "--workdir",
         workdir, "--run-job", "tests.backend.service.stage_jobs:run_job", "--executor", executor,
         "--log-level", "WARNING"],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(HERE)})
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, line.split()[-1]


def to_stage(c: JobClient, stage: str, stubborn: bool) -> str:
    job = c.submit(make_scene(names=[f"stubborn-{stage}" if stubborn else "cooperative", "b", "c"]))
    for p in c.progress(job):
        if p.stage == stage:
            time.sleep(0.3)
            return job
    raise RuntimeError(f"no stage {stage}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executor", default="process", choices=["process", "local"])
    args = ap.parse_args()
    print("| stage | job | cancel -> cancelled (s) | SIGTERM -> exit (s) | exit status |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("masks", "training", "segmentation"):
            for stubborn in (False, True):
                proc, address = spawn(os.path.join(tmp, f"{stage}-{stubborn}"), args.executor)
                try:
                    with JobClient(address, timeout_s=30, client_token=TOKEN) as c:
                        job = to_stage(c, stage, stubborn)
                        t0 = time.monotonic()
                        c.cancel(job)
                        try:
                            c.wait(job)
                        except JobError:
                            pass
                        cancel_s = time.monotonic() - t0
                        to_stage(c, stage, stubborn)
                        t0 = time.monotonic()
                        proc.send_signal(signal.SIGTERM)
                        code = proc.wait(60)
                        term_s = time.monotonic() - t0
                finally:
                    proc.kill()
                    proc.wait()
                print(f"| {stage} | {'stubborn (native code)' if stubborn else 'cooperative'} | {cancel_s:.2f} | "
                      f"{term_s:.2f} | {code} |", flush=True)


if __name__ == "__main__":
    main()
