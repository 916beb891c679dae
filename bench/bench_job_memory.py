"""Issue #27: the real job's peak memory per stage against the server's admission estimate.

    python bench/bench_job_memory.py --views 1,4,16 --sizes 64,128,320 --geometry depth --iterations 20
    python bench/bench_job_memory.py --views 1 --sizes 320 --geometry nerf --limit-gb 4

Each cell runs ``backend.method.job:run_job`` exactly as ``backend serve`` does (the ``process`` executor: one child
process per job) on the cameras of the service tests' scene (``tests.backend.service_jobs.make_scene``) with every pixel on a
surface (``--scene full``, the default: the most points a view can give) or their sphere (``--scene sphere``, ~15%
of the pixels); ``--geometry nerf`` drops the depth, and reads the child's peak RSS of each stage (``VmHWM``, reset at every
stage change). Beside it: :func:`backend.method.job.estimate_peak_bytes` of the same declared size, and the ratio
measured / estimate (the estimate must be >= the measurement, and should be at most 1.5x it). A child past
``--limit-gb`` is killed (the cell is reported as over the limit). Prints a Markdown table and, with ``--out``,
one JSON line per cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from backend.method.job import estimate_peak_bytes  # noqa: E402
from backend.service.job_process import process_run_job  # noqa: E402
from backend.service.server import JobSize  # noqa: E402
from backend.wire.protocol import JobOptions  # noqa: E402
from tests.backend.service_jobs import make_scene  # noqa: E402

STAGES = ("starting", "masks", "training", "segmentation")


def child_rss(ppid: int) -> dict[int, int]:
    """RSS bytes of this process's children."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != ppid:
                continue
            for line in (d / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[int(d.name)] = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return out


def measure(views: int, size: int, geometry: str, options: JobOptions, limit: int, full: bool = True) -> dict:
    scene = make_scene(n_views=views, h=size, w=size, seed=views * 1000 + size)
    if full:  # every pixel on a surface (a wall through the origin facing each camera): the most points per pixel
        scene = dataclasses.replace(scene, depth=np.full_like(scene.depth, 1.5))
    if geometry == "nerf":
        scene = dataclasses.replace(scene, depth=None)
    peaks: dict = {}
    run = process_run_job("backend.method.job:run_job", device="cpu", on_peaks=peaks.update)
    stop = threading.Event()
    over = []

    def watchdog() -> None:
        while not stop.is_set():
            for pid, rss in child_rss(os.getpid()).items():
                if rss > limit:
                    over.append(rss)
                    os.kill(pid, 9)
            time.sleep(0.05)

    threading.Thread(target=watchdog, daemon=True).start()
    error = None
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run(scene, options, lambda e: None, lambda: False, Path(tmp))
        except Exception as e:  # noqa: BLE001 - reported in the table
            error = f"{type(e).__name__}: {str(e)[:120]}"
    stop.set()
    size_ = JobSize(views=views, height=size, width=size, depth=scene.depth is not None)
    est = estimate_peak_bytes(size_, options)
    return {"views": views, "size": size, "geometry": geometry, "scene": "full" if full else "sphere", "seconds": round(time.monotonic() - t0, 1),
            "measured": peaks, "estimate": est, "error": "killed past --limit-gb" if over else error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", default="1,4")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--geometry", default="depth", choices=["depth", "nerf"])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--scene", default="full", choices=["full", "sphere"],
                    help="full: every pixel has depth (the worst case for the estimate); sphere: ~15%% of them")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--max-points", type=int, default=None)
    ap.add_argument("--limit-gb", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    opts = JobOptions(preset=args.preset, iterations=args.iterations)
    if args.max_points:
        opts = dataclasses.replace(opts, max_points=args.max_points)
    print("| views | px | geometry | stage | measured GiB | estimate GiB | measured / estimate | note |")
    print("|---|---|---|---|---|---|---|---|")
    for v in [int(x) for x in args.views.split(",")]:
        for s in [int(x) for x in args.sizes.split(",")]:
            r = measure(v, s, args.geometry, opts, int(args.limit_gb * 2**30), full=args.scene == "full")
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
            for stage in STAGES:
                m = r["measured"].get(stage)
                e = r["estimate"].get(stage, max(r["estimate"].values()))
                if m is None:
                    continue
                print(f"| {v} | {s} | {args.geometry} | {stage} | {m / 2**30:.2f} | {e / 2**30:.2f} | {m / e:.2f} | "
                      f"{r['error'] or ''} {r['seconds']} s |", flush=True)


if __name__ == "__main__":
    main()
