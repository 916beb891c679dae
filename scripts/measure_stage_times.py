"""Measure the stage times of one Segment Scene job in this process (what the add-on's progress weights and the
preset descriptions are based on): render the bundled example in headless bpy, run the real job function
(``backend.method.job.run_job``) on it, import the result as the add-on does. Prints one JSON line:
seconds per stage, per view, per training step, and the load average it ran under.

    .venv/bin/python scripts/measure_stage_times.py --views 8 --resolution 100 --iterations 150 --preset cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="table_set")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=100)
    ap.add_argument("--engine", default="cycles")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--iterations", type=int, default=150)
    a = ap.parse_args(argv)

    from backend.method.job import run_job
    from backend.service.scene_transfer import scene_from_submit
    from backend.wire.protocol import JobOptions
    from blender_addon import importer
    from blender_addon.messages import build_submit, result_from_message
    from backend.wire import protocol as P
    from dataset_tools.config import RenderConfig
    from dataset_tools.examples import build_example
    from dataset_tools.render import render_views

    load0 = os.getloadavg()[0]
    scene = build_example(a.example)
    marks: dict[str, list[float]] = {}
    t0 = time.monotonic()
    views = render_views(scene, RenderConfig(n_train=a.views, n_val=0, n_test=0, width=a.resolution,
                                             height=a.resolution, samples=a.samples, engine=a.engine, rotations=()))
    marks["render"] = [t0, time.monotonic()]
    options = JobOptions(preset=a.preset, iterations=a.iterations)
    submit = build_submit(views.rgba, views.c2w, views.K, views.depth, options)
    steps: list[tuple[float, int]] = []

    def progress(event) -> None:
        now = time.monotonic()
        marks.setdefault(event.stage, [now, now])[1] = now
        if event.stage == "training" and event.step > 0:
            steps.append((now, event.step))

    with tempfile.TemporaryDirectory() as work:
        t1 = time.monotonic()
        job = run_job(scene_from_submit(submit), options, progress, lambda: False, Path(work))
        t_end = time.monotonic()
    marks["segmentation"][1] = t_end
    msg = P.Result(job=submit.job, arrays=job.arrays, meta=job.meta)
    t2 = time.monotonic()
    result = result_from_message(msg)
    importer.import_result(scene, result, result.default_threshold())
    marks["import"] = [t2, time.monotonic()]
    stage_s = {k: round(v[1] - v[0], 3) for k, v in marks.items()}
    # masks start when the job starts; training starts where the masks end
    if "masks" in marks:
        stage_s["masks"] = round(marks["masks"][1] - t1, 3)
        stage_s["training"] = round(marks["training"][1] - marks["masks"][1], 3)
        stage_s["segmentation"] = round(t_end - marks["training"][1], 3)
    step_s = ((steps[-1][0] - steps[0][0]) / (steps[-1][1] - steps[0][1])) if len(steps) > 1 else None
    print(json.dumps({"example": a.example, "views": a.views, "resolution": a.resolution, "engine": a.engine,
                      "samples": a.samples, "preset": a.preset, "iterations": a.iterations,
                      "points": result.n_points, "stage_s": stage_s,
                      "render_s_per_view": round(stage_s["render"] / a.views, 3),
                      "masks_s_per_view": round(stage_s.get("masks", 0) / a.views, 3),
                      "training_s_per_step": None if step_s is None else round(step_s, 4),
                      "cores": os.cpu_count(), "load_before": round(load0, 1),
                      "load_after": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
