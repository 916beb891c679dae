"""Benchmark camera placement: what planning the cameras adds to the render time of a 100-view dataset.

For each example scene it renders the same Blender-HS folder settings three times in this process:

1. ``--placement auto`` (the default: ray-cast scoring; ``inside`` for the closed room, ``orbit-scored``
   for the scene with surroundings), planning timed inside the render;
2. placement off, same views: the cameras of run 1 handed over without planning (``plan_cameras``
   replaced by one that returns run 1's result at once), so the two runs render identical views and
   their ratio is what placement adds;
3. ``--placement orbit``: today's hemisphere (also no planning), for reference: other views, so its time
   also reflects what they show (outside views of a closed room are mostly empty film, inside views are
   all geometry with indirect light).

    python bench/bench_placement.py                        # room, 100 train + 10 val, 128 px, Cycles 16 samples
    python bench/bench_placement.py --scenes room,surroundings --res 200 --samples 64   # default dataset settings
    python bench/bench_placement.py --quick                # 20 train + 2 val views

Timings depend on machine load: the load average is printed before and after, and the process's CPU time
(render threads included) is compared too, which other jobs on the machine disturb less than wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", default="room")
    p.add_argument("--train", type=int, default=100)
    p.add_argument("--val", type=int, default=10)
    p.add_argument("--res", type=int, default=128)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--engine", default="cycles", choices=["cycles", "workbench"])
    p.add_argument("--quick", action="store_true", help="20 train + 2 val views")
    args = p.parse_args()
    if args.quick:
        args.train, args.val = 20, 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dataset_tools import dataset
    from dataset_tools.config import RenderConfig
    from dataset_tools.examples import build_example

    planned: list[float] = []
    plan_cameras = dataset.plan_cameras
    cached: dict = {}

    def timed_plan(*a, **k):
        t = time.perf_counter()
        try:
            cached["placement"] = plan_cameras(*a, **k)
            return cached["placement"]
        finally:
            planned.append(time.perf_counter() - t)

    def replay(*a, **k):  # placement off: run 1's cameras, no planning
        return cached["placement"]

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenes.split(","):
            times = {}
            for run, placement, planner in (("on", "auto", timed_plan), ("off", "auto", replay),
                                            ("orbit", "orbit", plan_cameras)):
                config = RenderConfig(n_train=args.train, n_val=args.val, width=args.res, height=args.res,
                                      samples=args.samples, engine=args.engine, placement=placement)
                scene = build_example(name)
                planned.clear()
                dataset.plan_cameras = planner
                t, cpu = time.perf_counter(), time.process_time()
                result = dataset.render_dataset_from_open_scene(Path(tmp) / f"{name}_{run}", config, scene=scene,
                                                                source=name)
                times[run] = (time.perf_counter() - t, sum(planned), result, time.process_time() - cpu)
            dataset.plan_cameras = plan_cameras
            on, plan_s, res, cpu_on = times["on"]
            off, cpu_off = times["off"][0], times["off"][3]
            orbit = times["orbit"][0]
            rows.append((name, res.rendered, on, off, orbit, plan_s, res.coverage.placement, cpu_on, cpu_off))
            print(f"{name}: {res.rendered} views; placement {res.coverage.placement}: {on:.1f} s (planning "
                  f"{plan_s:.2f} s); placement off, same views: {off:.1f} s; ratio {on / off:.3f}; CPU time "
                  f"{cpu_on:.1f} s / {cpu_off:.1f} s = {cpu_on / cpu_off:.3f}; plain orbit (other views): "
                  f"{orbit:.1f} s", flush=True)
            print("  " + res.coverage.summary_line())
            print("  orbit: " + times["orbit"][2].coverage.summary_line(), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("\n| scene | placement | views | with placement | placement off (same views) | ratio | CPU-time ratio "
          "| planning | plain orbit (other views) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, views, on, off, orbit, plan_s, used, cpu_on, cpu_off in rows:
        print(f"| {name} | {used} | {views} | {on:.1f} s | {off:.1f} s | {on / off:.3f} | {cpu_on / cpu_off:.3f} | "
              f"{plan_s:.2f} s ({100 * plan_s / on:.1f} %) | {orbit:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
