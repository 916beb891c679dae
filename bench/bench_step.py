"""Benchmark (issue #16): one training step's host work vs the field's device work, before and after the
per-image precomputation + step prefetch, in the same run.

Workload: a synthetic scene of ``--views`` 200x200 views with ~100 multi-granular masks each (nested boxes +
SAM-like extras, as ``bench_ultrametric.py``) and exact depth of a plane; the ``paper`` preset (4,096 rays, 64+64
pairs per mask, k = 10 graph) in ``depth`` geometry (``--geometry nerf`` for volume rendering; then the
depth-continuity stencils are on from step 0).

- BEFORE (the sequential path, as before #16): every step first does its host work inline -- pixel sampling, the
  mask tree + Algorithm 1 pairs, the kNN pixel graph (+ level groups), in nerf mode the stencils drawn from a
  full-image scan (``sample_depth_stencils``) -- then the device part. Host work = the sum of those parts.
- AFTER: ``Trainer.fit`` with per-image stencil runs (``core.precompute``) and the host work of the next steps
  made on worker threads (``method.prefetch``). Host work left on the critical path = the time the training loop
  blocks waiting for a batch (``Prefetcher.waited_s``), per step.

The device part (field forward/backward, the ultrametric tree on the step's features, the optimiser) is the same
code in both and is printed separately. On a shared 2-core CPU the worker threads compete with the field's own
threads, so the step wall time gains less than the host-work ratio; on a GPU the field runs on the device.

Run: ``python bench/bench_step.py [--steps 8] [--views 6] [--geometry depth|nerf] [--workers 2] [--threads 1]``
(about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ultrametric import H, W, make_masks  # noqa: E402

from backend.core.sampling import sample_depth_stencils  # noqa: E402
from backend.core.scene import Scene  # noqa: E402
from backend.method.config import PRESETS  # noqa: E402
from backend.method.trainer import Trainer  # noqa: E402


def synthetic_scene(views: int, seed: int = 0) -> tuple[Scene, list[np.ndarray]]:
    """``views`` cameras looking at a plane (depth 1.2 everywhere), random colours, ~100 masks per view."""
    rng = np.random.default_rng(seed)
    fx = 0.5 * W / np.tan(np.radians(25))
    K = np.array([[fx, 0, W / 2], [0, fx, H / 2], [0, 0, 1]], np.float32)
    c2w = np.repeat(np.eye(4, dtype=np.float32)[None], views, 0)
    c2w[:, :3, 3] = np.stack([np.linspace(-0.05, 0.05, views), np.zeros(views), np.full(views, 1.5)], 1)
    scene = Scene(rgb=rng.integers(0, 255, (views, H, W, 3), dtype=np.uint8), c2w=c2w,
                  K=np.repeat(K[None], views, 0), depth=np.full((views, H, W), 1.2, np.float32))
    masks = [make_masks(rng, 100).reshape(-1, H, W) for _ in range(views)]
    return scene, masks


def config(geometry: str):
    cfg = dataclasses.replace(PRESETS["paper"], geometry=geometry, device="cpu", checkpoint_every=0,
                              progress_every=10 ** 9, iterations=10 ** 6)
    if geometry == "nerf":  # stencils from step 0; occupancy updates out of the timed window
        cfg = dataclasses.replace(cfg, depth_continuity_start=0, occupancy_warmup=10 ** 6)
    return cfg


def before(scene, masks, cfg, steps: int) -> dict[str, float]:
    """Sequential path: per-step host parts (ms, median) and the device part."""
    tr = Trainer(scene, masks, cfg)
    tr.prefetch_workers = 0
    parts: dict[str, list[float]] = {"sample": [], "tree_pairs": [], "graph": [], "stencils": [], "device": []}
    for i in range(steps + 1):
        b = tr.prepare_step(tr.step)
        old_st = 0.0
        if b.stencils is not None:  # the pre-#16 stencil draw: full-image scan + global lexsort
            t = time.perf_counter()
            sample_depth_stencils(tr._leaf_labels_of(b.view), np.random.default_rng(i),
                                  per_mask=cfg.stencils_per_mask)
            old_st = time.perf_counter() - t
        t = time.perf_counter()
        tr._run_step(b)
        tr._flush_losses()
        dev = time.perf_counter() - t
        tr.step += 1
        if i == 0:
            continue  # warm-up (lazy caches: leaf labels, stencil runs)
        for k in ("sample", "tree_pairs", "graph"):
            parts[k].append(b.timings[k])
        parts["stencils"].append(old_st)
        parts["device"].append(dev)
    return {k: 1000 * statistics.median(v) for k, v in parts.items()}


def after(scene, masks, cfg, steps: int, workers: int) -> dict[str, float]:
    """fit() with precompute + prefetch: host work left on the loop's critical path and wall time per step."""
    tr = Trainer(scene, masks, dataclasses.replace(cfg, iterations=1))
    tr.prefetch_workers = 0
    tr.fit()  # warm-up step (caches)
    tr.cfg = dataclasses.replace(cfg, iterations=1 + steps)
    tr.prefetch_workers, tr.prefetch_depth = workers, 3
    produced = []
    orig = tr.prepare_step

    def timed(step):
        b = orig(step)
        produced.append(sum(b.timings.values()))
        return b

    tr.prepare_step = timed  # type: ignore[method-assign]
    t = time.perf_counter()
    tr.fit()
    wall = time.perf_counter() - t
    waits = tr.prefetch_waits[1:] or tr.prefetch_waits  # the first get fills the pipeline (once per fit)
    return {"blocked": 1000 * statistics.mean(waits), "first": 1000 * tr.prefetch_waits[0],
            "wall": 1000 * wall / steps,
            "producer": 1000 * statistics.median(produced)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--geometry", default="depth", choices=["depth", "nerf"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared 2-core box: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scene, masks = synthetic_scene(args.views)
    cfg = config(args.geometry)
    print(f"scene: {args.views} views {H}x{W}, {np.mean([len(m) for m in masks]):.0f} masks/view; preset paper, "
          f"geometry {args.geometry}, {cfg.rays_per_step} rays; {args.steps} timed steps; torch threads "
          f"{args.threads}")
    b = before(scene, masks, cfg, args.steps)
    host_before = b["sample"] + b["tree_pairs"] + b["graph"] + b["stencils"]
    a = after(scene, masks, cfg, args.steps, args.workers)
    print("\nBEFORE (sequential, host work inline; median ms per step)")
    print(f"  sampling {b['sample']:7.1f} | mask tree + pairs {b['tree_pairs']:7.1f} | kNN graph + groups "
          f"{b['graph']:7.1f} | stencils {b['stencils']:7.1f}  => host {host_before:7.1f} ms")
    print(f"  device part (field forward/backward, ultrametric tree on the step's features, optimiser): "
          f"{b['device']:7.1f} ms")
    print(f"  step wall: {host_before + b['device']:7.1f} ms")
    print(f"\nAFTER (precompute + prefetch, {args.workers} worker threads, depth 3)")
    print(f"  producer host work per batch (off the critical path): {a['producer']:7.1f} ms")
    print(f"  host work left on the critical path (loop blocked on the next batch): {a['blocked']:7.2f} ms/step "
          f"(mean over steps 2..; the first step waits {a['first']:.0f} ms once, filling the pipeline)")
    print(f"  step wall: {a['wall']:7.1f} ms")
    ratio = host_before / max(a["blocked"], 1e-3)
    print(f"\nhost work per step on the critical path: {host_before:.1f} -> {a['blocked']:.2f} ms  "
          f"({ratio:.0f}x smaller); producer cost {host_before:.1f} -> {a['producer']:.1f} ms "
          f"({host_before / max(a['producer'], 1e-3):.1f}x); step wall {host_before + b['device']:.0f} -> "
          f"{a['wall']:.0f} ms")


if __name__ == "__main__":
    main()
