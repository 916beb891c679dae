"""Measure Segment Scene's progress line against the clock: the real add-on in headless bpy against a real
`backend serve` (the real job function, CPU). Prints one JSON line: the stages seen, whether the bar was
monotone, and the ETA's relative error at each tenth of training (actual time left measured at the end).

    .venv/bin/python scripts/measure_eta.py --views 8 --resolution 100 --iterations 300
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="table_set")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--engine", default="workbench")
    a = ap.parse_args(argv)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--bind", address, "--device", "cpu",
                                   "--workdir", work, "--log-level", "WARNING"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert "listening" in server.stdout.readline()
            rows = run(a, address)
        finally:
            server.terminate()
            server.wait(20)
    print(json.dumps(rows))
    return 0


def run(a, address: str) -> dict:
    import bpy

    import blender_addon
    from blender_addon import jobstate, preferences, runtime
    from dataset_tools.examples import build_example

    scene = build_example(a.example)
    blender_addon.register()
    preferences.FALLBACK = preferences.DefaultPreferences(server_address=address, timeout_s=60.0, views=a.views,
                                                          resolution=a.resolution, engine=a.engine, samples=16)
    t0 = time.monotonic()
    assert bpy.ops.useg.segment_scene(iterations=a.iterations) == {"FINISHED"}
    seen = [(time.monotonic(), runtime.SESSION.state)]
    while runtime.pump() is not None:
        seen.append((time.monotonic(), runtime.SESSION.state))
        time.sleep(0.05)
    end = time.monotonic()
    final = runtime.SESSION.state
    assert final.phase == jobstate.Phase.DONE, final
    bars = [st.progress for _, st in seen]
    errors = {}
    for t, st in seen:
        if st.active and jobstate.stage_label(st) == "training" and st.total and st.eta:
            tenth = int(10 * st.step / st.total)
            if 1 <= tenth <= 9 and tenth not in errors:
                left = end - t
                errors[tenth] = round((st.eta - left) / left, 3)
    stages = []
    for _, st in seen:
        label = jobstate.stage_label(st)
        if not stages or stages[-1] != label:
            stages.append(label)
    return {"views": a.views, "resolution": a.resolution, "iterations": a.iterations, "engine": a.engine,
            "total_s": round(end - t0, 1), "estimate": scene.ultrametric_seg.estimate, "stages": stages,
            "monotone": all(b >= x for x, b in zip(bars, bars[1:])),
            "stage_s": dict(zip(("render", "upload", "masks", "training", "segmentation", "import"),
                                (round(x, 2) for x in final.tracker.actual))),
            "eta_relative_error_by_training_tenth": errors,
            "load": round(os.getloadavg()[0], 1), "cores": os.cpu_count()}


if __name__ == "__main__":
    raise SystemExit(main())
