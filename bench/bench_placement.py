"""Benchmark camera placement: what planning the cameras adds to the render time of a 100-view dataset.

For each example scene it renders the same Blender-HS folder twice in this process, with the default
``--placement auto`` (ray-cast scoring: ``inside`` for the closed room, ``orbit-scored`` for the scene with
surroundings) and with ``--placement orbit`` (no scoring: placement off), and prints both times, their
ratio, and the seconds spent planning the cameras (timed inside the render) against the whole render.
The two runs render different views, so their ratio also carries the difference in what the views show;
the planning share is the placement's own cost.

    python bench/bench_placement.py                        # room and surroundings, 100 train + 10 val, 128 px, Cycles 16 samples
    python bench/bench_placement.py --res 200 --samples 64 # the default dataset settings (~4x longer)
    python bench/bench_placement.py --quick                # 20 train + 2 val views

Timings depend on machine load: the load average is printed before and after.
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
    p.add_argument("--scenes", default="room,surroundings")
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

    def timed_plan(*a, **k):
        t = time.perf_counter()
        try:
            return plan_cameras(*a, **k)
        finally:
            planned.append(time.perf_counter() - t)

    dataset.plan_cameras = timed_plan
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenes.split(","):
            times = {}
            for placement in ("auto", "orbit"):
                config = RenderConfig(n_train=args.train, n_val=args.val, width=args.res, height=args.res,
                                      samples=args.samples, engine=args.engine, placement=placement)
                scene = build_example(name)
                planned.clear()
                t = time.perf_counter()
                result = dataset.render_dataset_from_open_scene(Path(tmp) / f"{name}_{placement}", config, scene=scene,
                                                                source=name)
                times[placement] = (time.perf_counter() - t, sum(planned), result)
            on, plan_s, res = times["auto"]
            off, plan_off, _ = times["orbit"]
            views = res.rendered
            rows.append((name, views, on, off, plan_s, plan_off, res.coverage.placement))
            print(f"{name}: {views} views; placement {res.coverage.placement}: {on:.1f} s (planning {plan_s:.2f} s); "
                  f"placement off (orbit): {off:.1f} s (planning {plan_off:.2f} s); ratio {on / off:.3f}; "
                  f"planning share {plan_s / on:.3f}", flush=True)
            print("  " + res.coverage.summary_line())
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("\n| scene | placement | views | with placement | placement off | ratio | planning | planning share |")
    print("|---|---|---|---|---|---|---|---|")
    for name, views, on, off, plan_s, _, used in rows:
        print(f"| {name} | {used} | {views} | {on:.1f} s | {off:.1f} s | {on / off:.2f} | {plan_s:.2f} s | "
              f"{100 * plan_s / on:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
