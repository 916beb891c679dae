"""Benchmark the dataset renderer on the bundled example scene (table_set).

Prints seconds per view at 200x200 and 400x400 (Cycles, default samples), the same against a
reference in the same run (colour, depth and ids as three separate renders per view, as pipelines
that use one render per pass do), and the wall time of the full default dataset: 100 train + 10 val
views at 200x200 with every val rotation (10, 45, 90, 135) and the visibility masks. Goal: < 5 min on
2 cores.

    python bench/bench_render.py            # everything (~3 min on 2 cores)
    python bench/bench_render.py --quick    # per-view timings only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def per_view_seconds(renderer, poses, repeats: int = 1) -> float:
    renderer.render(poses[0])  # warm-up (scene sync, BVH, kernels)
    t = time.perf_counter()
    for c2w in poses[1:]:
        for _ in range(repeats):
            renderer.render(c2w)
    return (time.perf_counter() - t) / (len(poses) - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the full 100+10 view dataset")
    parser.add_argument("--views", type=int, default=6, help="views per timing (first is warm-up)")
    args = parser.parse_args()

    from dataset_tools.cameras import fit_distance, orbit_poses
    from dataset_tools.config import RenderConfig
    from dataset_tools.dataset import open_blend, render_dataset
    from dataset_tools.examples import DEFAULT_EXAMPLE, write_example
    from dataset_tools.render import prepared_scene

    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    blend = write_example(DEFAULT_EXAMPLE, tmp / f"{DEFAULT_EXAMPLE}.blend")
    base = RenderConfig()
    print(f"scene {DEFAULT_EXAMPLE}, engine {base.engine}, samples {base.samples}", flush=True)
    for res in (200, 400):
        config = replace(base, width=res, height=res)
        scene = open_blend(blend)
        with prepared_scene(scene, config) as prep:
            d = fit_distance(prep.radius, config.camera_angle_x, res, res, config.margin)
            poses = orbit_poses(args.views, prep.centre, d, 0, 0)
            one = per_view_seconds(prep.renderer, poses)
            sep = per_view_seconds(prep.renderer, poses, repeats=3)
        print(f"{res}x{res}: {one:.3f} s/view (one multilayer render per view); reference "
              f"{sep:.3f} s/view (colour, depth, ids as 3 separate renders); ratio {sep / one:.2f}x", flush=True)
    if not args.quick:
        out = tmp / "dataset"
        t = time.perf_counter()
        result = render_dataset(blend, out, base)
        total = time.perf_counter() - t
        n = result.rendered
        print(f"full dataset 100 train + 10 val + 4x10 rotated at 200x200: {total:.1f} s "
              f"({n} renders, {total / max(n, 1):.3f} s/view incl. writing and visibility; goal < 300 s: "
              f"{'OK' if total < 300 else 'MISSED'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
