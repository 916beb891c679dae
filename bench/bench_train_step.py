"""Benchmark (issue #24): cpu-preset training steps per second on the demo data, and one step split by stage,
against a reference checkout in the same run.

Data: the demo's (``backend demo``: the bundled table set, 32 train views at 128 px, classical masks), rendered
once into ``--cache`` (or ``--data FOLDER``); the masks are computed once by this checkout and given to both sides,
so both train on the same inputs.

Two worker processes, one per code base: this checkout and ``--repo`` (a checkout of the code before the change,
e.g. ``git worktree add /tmp/main_ref <commit>`` or ``git archive <commit> | tar -x -C /tmp/main_ref``). Each
builds a cpu-preset :class:`~backend.method.trainer.Trainer` (depth geometry, as the demo) and runs what it is asked,
ALTERNATELY (reference, new, reference, new, ...), so the load of a shared machine falls on both alike:

- ``--rounds`` rounds of ``--steps`` steps of ``Trainer.fit`` (the real training loop with each side's own thread
  settings and prefetch): wall time and process CPU time (all threads) per step; the ratio is of the medians.
- ``--profile-steps`` steps split by stage (one step = host work, field forward (+ norm loss), ultrametric term,
  Euclidean term, backward, optimiser), as thread CPU time of the training thread (the host work separately as
  the CPU time of ``prepare_step``, wherever it runs in ``fit``). The new code reports its stages through
  ``Trainer.stage_hook``; the reference (which has none) is split by :func:`_reference_staged_step`, a copy of its
  depth-geometry ``_run_step`` with marks between the stages.

``--reference-one-thread`` runs the reference with one torch and one BLAS thread (the new step's settings), so the
ratio shows what the code gives beyond the thread settings; ``--new-without-prefetch`` adds the new code without
its prefetch thread as a third side.

Run: ``python bench/bench_train_step.py --repo /tmp/main_ref [--rounds 5 --steps 40 --profile-steps 30]``
(a few minutes on 2 idle cores; on a loaded machine the reference at its default threads is far slower). Prints
the machine load (``os.getloadavg``) before and after: on a shared machine say it with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# Worker (runs inside one code base)
# ----------------------------------------------------------------------------------------------------------------
def _reference_staged_step(tr, batch, mark) -> None:
    """The depth-geometry ``Trainer._run_step`` of the code before issue #24, with ``mark(stage)`` between stages."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from backend.core.geometry import unproject
    from backend.method.losses import LossTerms, feature_losses, norm_loss

    cfg, scene = tr.cfg, tr.scene
    tr.optimizer.zero_grad(set_to_none=True)
    d = scene.depth[batch.view, batch.rows, batch.cols].astype(np.float64)
    fg = d > 0
    feats = tr.field.unit_background()[None, :].expand(len(batch.uv), -1)
    terms = LossTerms()
    if fg.any():
        pts = unproject(batch.uv[fg], d[fg], scene.K[batch.view], scene.c2w[batch.view])
        raw = tr.field.raw_features(torch.as_tensor(pts, dtype=torch.float32))
        feats = feats.index_put((torch.as_tensor(np.flatnonzero(fg)),), F.normalize(raw.float(), dim=-1))
        terms.norm = norm_loss(raw.float())
    mark("field forward + norm")
    if len(batch.pairs):
        import dataclasses

        only_u = dataclasses.replace(cfg.loss, use_euclidean=False)
        only_e = dataclasses.replace(cfg.loss, use_ultrametric=False)
        terms.ultrametric = feature_losses(feats, batch.uv, batch.pairs, only_u, batch.sampled_masks, graph=batch.graph,
                                           prior=batch.prior, groups=batch.groups).get("ultrametric")
        mark("loss: ultrametric")
        terms.euclidean = feature_losses(feats, batch.uv, batch.pairs, only_e, batch.sampled_masks,
                                         groups=batch.groups).get("euclidean")
        mark("loss: euclidean")
    total = terms.weighted_total(cfg.loss_weights())
    total.backward()
    mark("backward")
    tr.optimizer.step()
    tr.scheduler.step()
    mark("optimiser")


def _worker(args: argparse.Namespace) -> None:
    """Serve ``{"cmd": "fit"|"profile", "steps": N}`` lines on stdin with one JSON line each on stdout."""
    sys.path.insert(0, str(Path(args.worker_repo).resolve()))
    import dataclasses
    import pickle

    import backend
    from backend.method.config import PipelineConfig, train_config
    from backend.method.data import load_scene
    from backend.method.trainer import Trainer

    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    scene = load_scene(Path(args.data), "train")
    masks = pickle.loads(Path(args.masks).read_bytes())
    tc = train_config(PipelineConfig(preset="cpu", geometry="auto", device="cpu"))
    tc = dataclasses.replace(tc, iterations=10 ** 6, progress_every=10 ** 9, checkpoint_every=0)
    tr = Trainer(scene, masks, tc)
    if args.worker_prefetch is not None:
        tr.prefetch_workers = args.worker_prefetch
    is_new = hasattr(tr, "stage_hook")
    print(json.dumps({"ready": True, "backend": backend.__file__, "geometry": tr.geometry, "staged_hook": is_new}),
          file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        n = int(req["steps"])
        if req["cmd"] == "fit":
            tr.cfg = dataclasses.replace(tr.cfg, iterations=tr.step + n)
            w0, c0 = time.perf_counter(), time.process_time()
            tr.fit()
            res = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "steps": n}
        else:
            stages: dict[str, list[float]] = {}
            t = [0.0]

            def mark(name: str) -> None:
                now = time.thread_time()
                stages.setdefault(name, []).append(now - t[0])
                t[0] = now

            ctx = tr.training_threads() if hasattr(tr, "training_threads") else _nullcontext()
            with ctx:
                for _ in range(n):
                    t0 = time.thread_time()
                    batch = tr.prepare_step(tr.step)
                    stages.setdefault("host work (prepare_step)", []).append(time.thread_time() - t0)
                    for k, v in batch.timings.items():
                        stages.setdefault(f"  host: {k} (wall)", []).append(v)
                    t[0] = time.thread_time()
                    if is_new:
                        tr.stage_hook = mark
                        tr._pending_losses = tr._run_step(batch)
                        tr.stage_hook = None
                    else:
                        _reference_staged_step(tr, batch, mark)
                    tr.step += 1
            res = {"stages": {k: statistics.median(v) for k, v in stages.items()}, "steps": n}
        print(json.dumps(res), file=out, flush=True)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------------------------
def demo_data(cache: Path) -> Path:
    """The demo's data (as ``backend demo`` renders it: table set, 32 views at 128 px), rendered once."""
    data = cache / "data"
    if (data / "transforms_val.json").is_file():
        return data
    blend = cache / "table_set.blend"
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "dataset_tools", "example", "table_set", str(blend)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "dataset_tools", "render", str(blend), str(data), "--train", "32", "--val",
                    "4", "--res", "128", "--samples", "16", "--rotations", "10,45", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return data


def demo_masks(data: Path, cache: Path) -> Path:
    """Classical masks of the train views (computed once by this checkout, pickled for both workers)."""
    import pickle

    import hashlib

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"masks_{hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]}.pkl"
    if not path.is_file():
        sys.path.insert(0, str(HERE))
        from backend.method.config import PipelineConfig
        from backend.method.data import load_scene
        from backend.method.pipeline import make_view_masks

        scene = load_scene(data, "train")
        path.write_bytes(pickle.dumps(make_view_masks(scene, PipelineConfig(), data_dir=data)))
    return path


class Worker:
    def __init__(self, name: str, repo: Path, data: Path, masks: Path, one_thread: bool = False,
                 prefetch: int | None = None):
        env = dict(os.environ, PYTHONPATH=str(repo))
        if one_thread:  # before torch and NumPy load: their pools start with one thread
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.name = name
        extra = [] if prefetch is None else ["--worker-prefetch", str(prefetch)]
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker-repo", str(repo), "--data", str(data),
                                      "--masks", str(masks), *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(repo))
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: str, steps: int) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, "steps": steps}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=False, help="reference checkout (the code before the change)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/bench_train_step"), help="rendered data + masks")
    ap.add_argument("--data", type=Path, default=None, help="a Blender-HS folder (default: the demo's, rendered)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="fit steps per round and side")
    ap.add_argument("--warmup", type=int, default=10, help="untimed fit steps per side first")
    ap.add_argument("--profile-steps", type=int, default=30)
    ap.add_argument("--reference-one-thread", action="store_true",
                    help="run the reference with one torch and one BLAS thread (OMP_NUM_THREADS=1 ...) as the new "
                         "code's step does: the ratio then shows what the code changes give beyond thread settings")
    ap.add_argument("--new-without-prefetch", action="store_true",
                    help="a third side: the new code with Trainer.prefetch_workers = 0 (what the prefetch thread gives)")
    ap.add_argument("--worker-prefetch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-repo", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--masks", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_repo:
        _worker(args)
        return
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    data = args.data or demo_data(args.cache)
    masks = demo_masks(data, args.cache)
    sides = [("new", HERE, None)] + ([("new, no prefetch", HERE, 0)] if args.new_without_prefetch else [])
    sides += [("reference", args.repo.resolve(), None)] if args.repo else []
    workers = {name: Worker(name, repo, data, masks, one_thread=args.reference_one_thread and name == "reference",
                            prefetch=prefetch) for name, repo, prefetch in sides}
    for w in workers.values():
        print(f"{w.name:9s}: {w.info['backend']} (geometry {w.info['geometry']})", flush=True)
    order = list(reversed(workers)) if args.repo else list(workers)  # reference first in each round
    for name in order:
        workers[name].ask("fit", args.warmup)
    wall: dict[str, list[float]] = {n: [] for n in workers}
    cpu: dict[str, list[float]] = {n: [] for n in workers}
    for r in range(args.rounds):
        for name in order:
            res = workers[name].ask("fit", args.steps)
            wall[name].append(res["wall"] / res["steps"])
            cpu[name].append(res["cpu"] / res["steps"])
        print(f"round {r + 1}: " + "  ".join(f"{n} {1 / wall[n][-1]:6.1f} steps/s (cpu {1000 * cpu[n][-1]:5.1f} "
                                             f"ms/step)" for n in order), flush=True)
    prof = {}
    if args.profile_steps:
        for name in order:
            if name != "new, no prefetch":  # the same step as "new"
                prof[name] = workers[name].ask("profile", args.profile_steps)["stages"]
    for w in workers.values():
        w.close()
    load1 = os.getloadavg()

    print(f"\ndata: {data}; cpu preset, depth geometry; {args.rounds} rounds x {args.steps} steps per side, "
          f"alternating; {os.cpu_count()} CPUs; load average {load0[0]:.1f} before, {load1[0]:.1f} after; "
          f"reference threads: {'one torch + one BLAS thread' if args.reference_one_thread else 'its defaults'}")
    print("\n| code | steps/s (median wall) | ms/step wall | CPU ms/step (all threads) |")
    print("|---|---|---|---|")
    for n in order:
        mw, mc = statistics.median(wall[n]), statistics.median(cpu[n])
        print(f"| {n} | {1 / mw:.1f} | {1000 * mw:.1f} | {1000 * mc:.1f} |")
    if args.repo:
        rw = statistics.median(wall["reference"]) / statistics.median(wall["new"])
        rc = statistics.median(cpu["reference"]) / statistics.median(cpu["new"])
        per_round = [a / b for a, b in zip(wall["reference"], wall["new"])]
        print(f"\nratio new/reference: {rw:.2f}x steps/s (wall; per round {', '.join(f'{x:.2f}' for x in per_round)}), "
              f"{rc:.2f}x less CPU per step")
        if "new, no prefetch" in wall:
            rn = statistics.median(wall["reference"]) / statistics.median(wall["new, no prefetch"])
            print(f"ratio new without prefetch/reference: {rn:.2f}x steps/s (wall)")
    if prof:
        names = list(dict.fromkeys(k for p in prof.values() for k in p))
        print(f"\nper-stage profile, median over {args.profile_steps} steps (ms; thread CPU time of the training "
              "thread, host sub-parts as wall time):")
        cols = [n for n in order if n in prof]
        print("| stage | " + " | ".join(cols) + " |")
        print("|---|" + "---|" * len(cols))
        for k in names:
            print(f"| {k} | " + " | ".join(f"{1000 * prof[n][k]:.2f}" if k in prof[n] else "-" for n in cols) + " |")
        for n in cols:
            total = sum(v for k, v in prof[n].items() if not k.startswith("  "))
            print(f"{n}: sum of stages {1000 * total:.1f} ms")
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
