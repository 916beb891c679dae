"""Benchmark the dataset renderer on the bundled example scene (table_set), Cycles CPU, default samples.

For each resolution it renders a real Blender-HS folder with ``render_dataset`` (one multilayer render per
view giving colour, depth and ids, plus all file writing and the visibility masks) and, in the same run and
on the same views, a reference: a plain RGB-only Cycles render of each view written by Blender as an RGBA
PNG (same samples, seed, film and colour settings; no extra passes, no ground truth). The ratio is the
overhead of producing exact ground truth.

- 200x200: the default dataset, 100 train + 10 val views (+ the 4 x 10 rotated val views and masks);
  goal < 300 s on 2 cores.
- 400x400: 10 train + 2 val views (+ 4 x 2 rotated).

    python bench/bench_render.py                 # both resolutions (~5-8 min on 2 shared cores)
    python bench/bench_render.py --quick         # 200x200 with 20 + 2 views, 400x400 with 4 + 1

Timings depend on machine load: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def all_poses(folder: Path) -> list[np.ndarray]:
    """Every camera of the rendered folder (train, val, test, rotated val), from its transforms files."""
    poses = []
    for tf in sorted(folder.glob("transforms_*.json")):
        poses += [np.array(f["transform_matrix"]) for f in json.loads(tf.read_text())["frames"]]
    return poses


def reference_rgb_only(blend: Path, config, poses: list[np.ndarray], workdir: Path) -> float:
    """Seconds to render ``poses`` as plain RGBA PNGs (colour only), same engine settings as the dataset."""
    import bpy

    from dataset_tools.dataset import open_blend
    from dataset_tools.render import _set_camera, prepared_scene, quiet_output

    scene = open_blend(blend)
    with prepared_scene(scene, config) as prep:
        view_layer = prep.renderer.view_layer
        view_layer.use_pass_z = False
        view_layer.use_pass_object_index = False
        ims = scene.render.image_settings
        ims.media_type = "IMAGE"
        ims.file_format = "PNG"
        ims.color_mode = "RGBA"
        ims.color_depth = "8"
        t = time.perf_counter()
        for k, c2w in enumerate(poses):
            _set_camera(prep.renderer.camera_obj, c2w, config)
            scene.render.filepath = str(workdir / f"ref_{k}.png")
            with quiet_output(bpy.app.background):
                bpy.ops.render.render(write_still=True, scene=scene.name, layer=view_layer.name)
        seconds = time.perf_counter() - t
    if not (workdir / "ref_0.png").is_file():
        raise RuntimeError("the reference render wrote no image")
    return seconds


def run(blend: Path, config, tmp: Path, label: str) -> dict:
    from dataset_tools.dataset import render_dataset

    out = tmp / f"ds_{config.width}"
    t = time.perf_counter()
    result = render_dataset(blend, out, config)
    ours = time.perf_counter() - t
    poses = all_poses(out)
    ref_dir = tmp / f"ref_{config.width}"
    ref_dir.mkdir()
    ref = reference_rgb_only(blend, config, poses, ref_dir)
    n = result.rendered
    print(f"{label}: ours {ours:.1f} s total, {ours / n:.3f} s/view ({n} views: colour + depth + ids in one "
          f"render, all files and visibility masks) | reference RGB-only {ref:.1f} s, {ref / len(poses):.3f} s/view "
          f"| ratio {ours / ref:.2f}x", flush=True)
    return dict(total=ours, per_view=ours / n, ref_per_view=ref / len(poses), views=n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer views (smoke run)")
    args = parser.parse_args()

    from dataset_tools.config import RenderConfig
    from dataset_tools.examples import DEFAULT_EXAMPLE, write_example

    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    blend = write_example(DEFAULT_EXAMPLE, tmp / f"{DEFAULT_EXAMPLE}.blend")
    base = RenderConfig()
    print(f"scene {DEFAULT_EXAMPLE}, engine {base.engine}, samples {base.samples}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    n200 = (20, 2) if args.quick else (base.n_train, base.n_val)
    n400 = (4, 1) if args.quick else (10, 2)
    r200 = run(blend, replace(base, n_train=n200[0], n_val=n200[1]), tmp,
               f"200x200, {n200[0]} train + {n200[1]} val (+ rotations)")
    run(blend, replace(base, width=400, height=400, n_train=n400[0], n_val=n400[1]), tmp,
        f"400x400, {n400[0]} train + {n400[1]} val (+ rotations)")
    if not args.quick:
        verdict = "OK" if r200["total"] < 300 else "MISSED"
        print(f"goal: default dataset at 200x200 in < 300 s: {r200['total']:.1f} s -> {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f} (machine shared with other engineers)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
