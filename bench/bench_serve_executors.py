#!/usr/bin/env python3
"""Benchmark: `backend serve --executor ray` against the local executor on the same tiny job.

Prints (1) the overhead per job: submit -> result wall time of one small job on each executor (the Ray
instance's start-up is paid once at server start, not per job, and is printed apart), and (2) two jobs
submitted together: their total wall time on the ray executor (2 at once) against the local one (one after
the other), as a ratio in the same run. Needs Ray (`pip install 'ultrametric-seg[ray]'`); loopback only.

    python3 bench/bench_serve_executors.py [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.service.client import JobClient  # noqa: E402
from backend.wire import protocol as P  # noqa: E402
from tests.backend.service_jobs import make_scene  # noqa: E402

TOKEN = "bench-serve-executors-0123456789"


def serve(workdir: Path, *extra: str) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device",
                             "cpu", "--workdir", str(workdir), "--run-job", "tests.backend.service_jobs:run_job",
                             "--log-level", "WARNING", *extra], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1], time.perf_counter() - t0


def run_jobs(address: str, n: int, steps: int) -> float:
    with JobClient(address, timeout_s=300, client_token=TOKEN) as client:
        t0 = time.perf_counter()
        jobs = [client.submit(make_scene(seed=i), P.JobOptions(iterations=steps)) for i in range(n)]
        for j in jobs:
            client.wait(j, timeout_s=300)
        return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="steps of the tiny job (10 ms each; default 300)")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("local", ()), ("ray", ("--executor", "ray", "--max-jobs", "2", "--cpus-per-job", "1"))):
            proc, address, startup = serve(Path(tmp) / name, *extra)
            try:
                run_jobs(address, 1, 10)  # warm-up (imports in the worker)
                one = min(run_jobs(address, 1, args.steps) for _ in range(3))
                two = run_jobs(address, 2, args.steps)
            finally:
                proc.terminate()
                proc.wait(60)
            out[name] = (startup, one, two)
            print(f"{name:6s} server start {startup:6.2f} s | one job {one:6.2f} s | two jobs together {two:6.2f} s")
    (ls, l1, l2), (rs, r1, r2) = out["local"], out["ray"]
    print(f"overhead per job (ray - local): {r1 - l1:+.2f} s ({r1 / l1:.2f}x); Ray start-up once: {rs - ls:+.2f} s")
    print(f"two jobs: ray (2 at once) / local (sequential) = {r2 / l2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
