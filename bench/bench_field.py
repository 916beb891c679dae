"""Hash-grid encoder throughput: the vectorised pure-torch grid (and tcnn when on CUDA) vs a naive reference.

The reference loops over levels and corners in Python (one gather per level and corner), i.e. the
straightforward implementation; both compute the same encoding (checked before timing). Times a forward +
backward of ``rays x samples`` points and prints points/s and the speed-up ratio.

    python3 bench/bench_field.py --device cpu --rays 4096 --samples 8

``--train PRESET`` instead times training steps of a preset on a synthetic depth scene (boxes seen by
``--views`` cameras at ``--size``^2 pixels, ~60 multi-granular masks per view) and prints seconds per step and
the projected time of the whole preset:

    python3 bench/bench_field.py --train cpu --views 20 --size 128 --steps 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import torch
from torch import Tensor, nn

from backend.method.field.encoding import HASH_PRIMES, HashGridConfig, TorchHashGrid, grid_layout, make_encoder, select_backend


class NaiveHashGrid(nn.Module):
    """Per-level, per-corner Python loops over the same table layout as :class:`TorchHashGrid`."""

    def __init__(self, grid: TorchHashGrid):
        super().__init__()
        self.cfg = grid.cfg
        self.table = grid.table
        self.res, self.size, self.dense = grid_layout(grid.cfg)
        self.offsets = [int(o) for o in grid.offset.tolist()]

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().clamp(0, 1)
        outs = []
        for lvl in range(self.cfg.num_levels):
            n = int(self.res[lvl])
            pos = x * n
            base = pos.floor().long().clamp(0, n - 1)
            frac = pos - base.float()
            acc = 0.0
            for c in range(8):
                o = [(c >> a) & 1 for a in range(3)]
                ix, iy, iz = (base[:, a] + o[a] for a in range(3))
                if self.dense[lvl]:
                    idx = ix + iy * (n + 1) + iz * (n + 1) ** 2
                else:
                    idx = ((ix * HASH_PRIMES[0]) ^ (iy * HASH_PRIMES[1]) ^ (iz * HASH_PRIMES[2])) \
                        & ((1 << self.cfg.log2_hashmap_size) - 1)
                w = torch.ones_like(frac[:, 0])
                for a in range(3):
                    w = w * (frac[:, a] if o[a] else 1 - frac[:, a])
                acc = acc + self.table[idx + self.offsets[lvl]] * w[:, None]
            outs.append(acc)
        return torch.cat(outs, dim=1)


def time_fwd_bwd(enc: nn.Module, x: Tensor, repeat: int) -> float:
    """Best-of-``repeat`` seconds for one forward + backward."""
    best = float("inf")
    for _ in range(repeat + 1):  # first call warms up
        for p in enc.parameters():
            p.grad = None
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        enc(x).square().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def synthetic_scene(n_views: int, size: int, masks_per_view: int = 60, seed: int = 0):
    """Boxes on a grid, exact planar depth; masks: boxes, visible faces, box groups, everything, random crops."""
    from backend.core.geometry import pixel_centers, unproject
    from backend.core.scene import Scene

    rng = np.random.default_rng(seed)
    boxes = []
    for i in range(3):
        for j in range(2):
            c = np.array([-0.3 + 0.3 * i, -0.18 + 0.36 * j, -0.25 + 0.1 * rng.random()])
            half = np.array([0.1, 0.12, 0.12 + 0.1 * rng.random()])
            boxes.append((c - half, c + half))
    fx = 0.5 * size / np.tan(np.radians(25))
    K = np.array([[fx, 0, size / 2], [0, fx, size / 2], [0, 0, 1]])
    uv = pixel_centers(size, size).reshape(-1, 2)
    rgb = np.zeros((n_views, size, size, 3), np.uint8)
    depth = np.zeros((n_views, size, size), np.float32)
    c2ws, masks = [], []
    for v in range(n_views):
        ang = 2 * np.pi * v / n_views
        eye = np.array([1.4 * np.cos(ang), 1.4 * np.sin(ang), 0.55])
        z = eye / np.linalg.norm(eye)
        x = np.cross([0, 0, 1.0], z)
        x /= np.linalg.norm(x)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, eye
        dirs = unproject(uv, np.ones(len(uv)), K, c2w) - eye
        best = np.full(len(uv), np.inf)
        ids = np.full(len(uv), -1)
        for b, (lo, hi) in enumerate(boxes):
            with np.errstate(divide="ignore", invalid="ignore"):
                t0, t1 = (lo - eye) / dirs, (hi - eye) / dirs
            near, far = np.nanmax(np.minimum(t0, t1), 1), np.nanmin(np.maximum(t0, t1), 1)
            hit = (far >= near) & (near > 0) & (near < best)
            best[hit], ids[hit] = near[hit], b
        pts = eye + best[:, None] * dirs
        face = np.full(len(uv), -1)
        for b, (lo, hi) in enumerate(boxes):
            sel = ids == b
            rel = (pts[sel] - (lo + hi) / 2) / ((hi - lo) / 2)
            face[sel] = b * 6 + np.abs(rel).argmax(1) * 2 + (rel[np.arange(sel.sum()), np.abs(rel).argmax(1)] > 0)
        ids, face = ids.reshape(size, size), face.reshape(size, size)
        depth[v] = np.where(ids >= 0, best.reshape(size, size), 0)
        rgb[v] = (rng.random((len(boxes) + 1, 3)) * 255).astype(np.uint8)[ids]
        c2ws.append(c2w)
        m = [ids == b for b in range(len(boxes))] + [face == f for f in np.unique(face[face >= 0])]
        m += [(ids >= 0) & (ids < 3), ids >= 3, ids >= 0]
        while len(m) < masks_per_view:
            r0, c0 = rng.integers(0, size - 8, 2)
            crop = np.zeros((size, size), bool)
            crop[r0:r0 + rng.integers(8, size // 2), c0:c0 + rng.integers(8, size // 2)] = True
            m.append(crop & (ids == rng.integers(len(boxes))))
        masks.append(np.stack([mm for mm in m]))
    scene = Scene(rgb=rgb, c2w=np.array(c2ws, np.float32), K=np.repeat(K[None], n_views, 0).astype(np.float32),
                  depth=depth)
    return scene, masks


def bench_train(args: argparse.Namespace) -> None:
    """Seconds per training step of a preset on :func:`synthetic_scene`."""
    from dataclasses import replace

    from backend.method.config import PRESETS
    from backend.method.trainer import Trainer

    scene, masks = synthetic_scene(args.views, args.size, args.masks)
    cfg = replace(PRESETS[args.train], device=args.device, geometry=args.geometry)
    tr = Trainer(scene, masks, replace(cfg, iterations=args.steps + 3))
    for _ in range(3):  # warm-up (also fills caches)
        tr.train_step()
        tr.step += 1
    t = time.perf_counter()
    losses = {}
    for _ in range(args.steps):
        losses = tr.train_step()
        tr.step += 1
    per = (time.perf_counter() - t) / args.steps
    print(f"preset={args.train} geometry={tr.geometry} device={tr.device} views={args.views} size={args.size} "
          f"masks/view~{np.mean([len(m) for m in masks]):.0f} rays/step={cfg.rays_per_step}")
    print(f"{per:.4f} s/step -> {cfg.iterations} steps ~ {per * cfg.iterations / 60:.1f} min; last losses "
          + ", ".join(f"{k}={v:.3f}" for k, v in losses.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rays", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=8, help="points per ray")
    ap.add_argument("--levels", type=int, default=17)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--log2-table", type=int, default=18)
    ap.add_argument("--max-res", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--train", default=None, help="time training steps of this preset instead (e.g. cpu)")
    ap.add_argument("--geometry", default="auto")
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--masks", type=int, default=60, help="masks per view of the synthetic scene")
    args = ap.parse_args()
    if args.train:
        bench_train(args)
        return
    dev = torch.device(args.device)
    cfg = HashGridConfig(num_levels=args.levels, features_per_level=args.features,
                         log2_hashmap_size=args.log2_table, max_resolution=args.max_res, backend="torch")
    torch.manual_seed(0)
    grid = TorchHashGrid(cfg, dev)
    naive = NaiveHashGrid(grid)
    x = torch.rand(args.rays * args.samples, 3, device=dev)
    with torch.no_grad():
        err = (grid(x[:4096]) - naive(x[:4096])).abs().max().item()
    assert err < 1e-6, f"vectorised and naive encodings differ by {err}"
    n = x.shape[0]
    t_vec = time_fwd_bwd(grid, x, args.repeat)
    t_naive = time_fwd_bwd(naive, x, args.repeat)
    print(f"device={dev} points={n} levels={cfg.num_levels} F={cfg.features_per_level} T=2^{cfg.log2_hashmap_size}")
    print(f"torch vectorised : {t_vec * 1e3:9.1f} ms  ({n / t_vec / 1e6:7.2f} M points/s fwd+bwd)")
    print(f"naive loop ref.  : {t_naive * 1e3:9.1f} ms  ({n / t_naive / 1e6:7.2f} M points/s fwd+bwd)")
    print(f"ratio naive/vectorised = {t_naive / t_vec:.2f}x")
    if dev.type == "cuda" and select_backend(HashGridConfig(**{**cfg.__dict__, "backend": "auto"}), dev) == "tcnn":
        tc = make_encoder(HashGridConfig(**{**cfg.__dict__, "backend": "tcnn"}), dev)
        t_tc = time_fwd_bwd(tc, x, args.repeat)
        print(f"tcnn             : {t_tc * 1e3:9.1f} ms  ({n / t_tc / 1e6:7.2f} M points/s fwd+bwd); "
              f"ratio torch/tcnn = {t_vec / t_tc:.2f}x")
    else:
        print("tcnn: not available on this device")


if __name__ == "__main__":
    main()
