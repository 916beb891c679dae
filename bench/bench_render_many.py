"""Benchmark ``dataset-tools render-many``: 6 small scenes with 2 worker processes against 1.

The 6 scenes are the three bundled examples (table_set, bookshelf, vehicle), each saved twice (a second
copy under another name, so 6 separate files and folders). Each configuration renders all 6 into a fresh
OUT_ROOT through the real CLI (one Blender process per file, the same path users run) and the wall time of
the whole command is compared; the per-file seconds come from each run's summary.json. By default the
renders are tiny (Workbench, 48 px, 4 train + 1 val + 1 rotated val views per file), so the per-process
start-up (Python, bpy, opening the file) is a visible part of each task, as for small scenes in practice.

    python bench/bench_render_many.py                      # 1 vs 2 local workers (~1 min on 2 cores)
    python bench/bench_render_many.py --ray                # also 2 workers as Ray tasks (a local instance)
    python bench/bench_render_many.py --engine cycles --res 64 --samples 8

Timings depend on machine load: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def make_scenes(folder: Path) -> list[Path]:
    for name in ("table_set", "bookshelf", "vehicle"):
        subprocess.run([sys.executable, "-m", "dataset_tools", "example", name, str(folder / f"{name}.blend")],
                       check=True, capture_output=True, cwd=ROOT)
        shutil.copy(folder / f"{name}.blend", folder / f"{name}_copy.blend")
    return sorted(folder.glob("*.blend"))


def run(scenes: Path, out: Path, options: list[str], extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "dataset_tools", "render-many", str(scenes / "*.blend"), str(out), *options,
           *extra, "--quiet"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"render-many failed ({' '.join(extra)}):\n{proc.stderr}")
    return wall, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="workbench")
    ap.add_argument("--res", type=int, default=48)
    ap.add_argument("--train", type=int, default=4)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--ray", action="store_true", help="also run 2 workers as Ray tasks (needs the ray extra)")
    args = ap.parse_args()
    options = ["--engine", args.engine, "--res", str(args.res), "--train", str(args.train), "--val", "1",
               "--rotations", "10", "--samples", str(args.samples)]
    configs = [("1 worker", ["--workers", "1"]), ("2 workers", ["--workers", "2"])]
    if args.ray:
        configs.append(("2 workers, Ray local", ["--ray", "local", "--workers", "2"]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "scenes").mkdir()
        scenes = make_scenes(tmp / "scenes")
        print(f"{len(scenes)} scenes, render options: {' '.join(options)}; cores: {os.cpu_count()}; "
              f"load average before: {load()}")
        walls, summaries = {}, {}
        for k, (label, extra) in enumerate(configs):
            walls[label], summaries[label] = run(tmp / "scenes", tmp / f"out{k}", options, extra)
        print(f"load average after: {load()}\n")
        labels = [label for label, _ in configs]
        print("file".ljust(24) + "".join(f"{label:>22}" for label in labels))
        for i, scene in enumerate(scenes):
            row = [summaries[label]["files"][i] for label in labels]
            print(scene.name.ljust(24) + "".join(f"{r['seconds']:>20.1f} s" for r in row))
        print("wall time".ljust(24) + "".join(f"{walls[label]:>20.1f} s" for label in labels))
        print("sum of file times".ljust(24)
              + "".join(f"{sum(r['seconds'] for r in summaries[label]['files']):>20.1f} s" for label in labels))
        base = walls["1 worker"]
        for label in labels[1:]:
            print(f"wall-time ratio {label} / 1 worker: {walls[label] / base:.2f} (speed-up {base / walls[label]:.2f}x)")
        if args.ray:
            print("(the Ray wall time includes starting and stopping the local Ray instance)")


if __name__ == "__main__":
    main()
