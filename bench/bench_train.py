"""Benchmark: trainer iterations per second in ``depth`` and ``nerf`` geometry (Sec. 5.4 of the paper).

Setup: a small Blender-HS folder (rendered with ``dataset_tools`` unless ``--data`` is given: the table set,
20 train views at 128x128, 16 Cycles samples), the ``classical`` masks, and the trainer (one image and
``rays_per_step`` rays per step, hierarchical pairs, ultrametric + Euclidean contrastive losses). For each
preset (``cpu``; ``paper`` too on CUDA) and geometry mode it times ``--iterations`` steps after one untimed
warm-up step:

- ``depth``: features queried at the unprojected given depth (no volume rendering);
- ``nerf`` (early): volume rendering from step 0, i.e. before the depth continuity loss starts (and before the
  occupancy grid prunes anything: the worst case of the first phase);
- ``nerf`` (late): the same after ``depth_continuity_start`` (Eq. 5 stencils rendered too).

It prints a table, the ratio depth/nerf, and on CUDA the projected wall time of the paper's configuration
(20,000 ``nerf`` iterations: ``depth_continuity_start`` early steps, the rest late) against the paper's
~70 minutes on a Titan RTX. Timings of ``nerf`` mode are upper bounds on a trained run, where the occupancy
grid skips empty space.

Run: ``python3 bench/bench_train.py [--device cpu|cuda] [--iterations N] [--nerf-iterations N] [--data FOLDER]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: The paper's reported training time (Sec. 5.4 of the paper: ~70 min on a Titan RTX for 20,000 iterations).
PAPER_MINUTES = 70.0


def render_dataset(out: Path, train: int = 20, val: int = 2, res: int = 128, samples: int = 16,
                   scene: str = "table_set") -> Path:
    """Render an example scene into ``out/data`` with the dataset tools (child processes); returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blend, data = out / f"{scene}.blend", out / "data"
    subprocess.run([sys.executable, "-m", "dataset_tools", "example", scene, str(blend)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "dataset_tools", "render", str(blend), str(data), "--train", str(train),
                    "--val", str(val), "--res", str(res), "--samples", str(samples), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return data


@dataclass
class Timing:
    """Iterations per second of one (preset, geometry, phase)."""

    preset: str
    geometry: str
    phase: str
    iterations: int
    seconds: float

    @property
    def its(self) -> float:
        return self.iterations / max(self.seconds, 1e-12)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(scene, masks, tc, phase: str, iterations: int, warmup: int = 1) -> float:
    """Seconds for ``iterations`` train steps of a fresh trainer (after ``warmup`` untimed steps).

    ``phase`` ``late`` starts the step counter at ``depth_continuity_start`` so Eq. 5 stencils are rendered.
    """
    from backend.method.trainer import Trainer

    tr = Trainer(scene, masks, tc)
    if phase == "late":
        tr.step = tc.depth_continuity_start
    for _ in range(warmup):
        tr.train_step()
        tr.step += 1
    _sync(str(tr.device))
    t0 = time.perf_counter()
    for _ in range(iterations):
        tr.train_step()
        tr.step += 1
    _sync(str(tr.device))
    return time.perf_counter() - t0


def run(data: Path, device: str, iterations: int, nerf_iterations: int, presets: list[str]) -> list[Timing]:
    from backend.method.data import load_scene
    from backend.method.config import PipelineConfig, train_config
    from backend.method.pipeline import make_view_masks

    scene = load_scene(data, "train")
    t0 = time.perf_counter()
    masks = make_view_masks(scene, PipelineConfig(), data_dir=data)
    print(f"scene: {data} ({scene.num_views} views, {scene.height}x{scene.width}); "
          f"classical masks {time.perf_counter() - t0:.1f} s, {sum(len(m) for m in masks) / len(masks):.0f} per view")
    out = []
    for name in presets:
        for geometry, phase, n in (("depth", "-", iterations), ("nerf", "early", nerf_iterations),
                                   ("nerf", "late", nerf_iterations)):
            cfg = PipelineConfig(preset=name, geometry=geometry, device=device)
            tc = train_config(cfg)
            secs = time_steps(scene, masks, tc, phase, n)
            out.append(Timing(name, geometry, phase, n, secs))
            print(f"  {name:6s} {geometry:5s} {phase:5s} {n:4d} it in {secs:7.2f} s", flush=True)
    return out


def report(timings: list[Timing], device: str) -> None:
    from backend.method.config import PRESETS

    print("\n| preset | geometry | phase | iterations | s | it/s | ms/it |")
    print("|---|---|---|---|---|---|---|")
    for t in timings:
        print(f"| {t.preset} | {t.geometry} | {t.phase} | {t.iterations} | {t.seconds:.2f} | {t.its:.3f} | "
              f"{1000 / t.its:.0f} |")
    by = {(t.preset, t.geometry, t.phase): t for t in timings}
    for name in dict.fromkeys(t.preset for t in timings):
        d, ne, nl = by[(name, "depth", "-")], by[(name, "nerf", "early")], by[(name, "nerf", "late")]
        print(f"\n[{name}] ratio depth/nerf (it/s): {d.its / ne.its:.1f}x vs nerf early, {d.its / nl.its:.1f}x "
              f"vs nerf late")
        tc = PRESETS[name]
        early = tc.depth_continuity_start
        late = tc.iterations - early
        nerf_s = early / ne.its + late / nl.its
        depth_s = tc.iterations / d.its
        print(f"[{name}] projected {tc.iterations} iterations on {device}: nerf {nerf_s / 60:.1f} min, "
              f"depth {depth_s / 60:.1f} min")
        if name == "paper" and device.startswith("cuda"):
            print(f"[paper] vs the paper's {PAPER_MINUTES:.0f} min (Titan RTX): nerf {nerf_s / 60 / PAPER_MINUTES:.2f}x "
                  f"the time, depth {depth_s / 60 / PAPER_MINUTES:.2f}x the time")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default cpu)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="timed depth-mode steps (default 30 on CPU, 200 on CUDA)")
    ap.add_argument("--nerf-iterations", type=int, default=None,
                    help="timed nerf-mode steps per phase (default 3 on CPU, 100 on CUDA)")
    ap.add_argument("--data", type=Path, default=None, help="a Blender-HS folder (default: render one)")
    ap.add_argument("--presets", default=None, help="comma-separated presets (default cpu; cpu,paper on CUDA)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: torch finds no CUDA device on this machine")
    iterations = args.iterations or (200 if cuda else 30)
    nerf_iterations = args.nerf_iterations or (100 if cuda else 3)
    presets = args.presets.split(",") if args.presets else (["cpu", "paper"] if cuda else ["cpu"])
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        data = args.data
        if data is None:
            t = time.perf_counter()
            data = render_dataset(Path(tmp))
            print(f"rendered the table set (20 train views, 128 px) in {time.perf_counter() - t:.1f} s")
        timings = run(data, args.device, iterations, nerf_iterations, presets)
    report(timings, args.device)
    print(f"\ntotal benchmark wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
