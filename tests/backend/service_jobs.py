"""A small, deterministic stand-in for ``backend.method.pipeline.run_job`` used by the service tests.

It does real work on the submitted scene: unprojects the depth maps into a coloured point cloud,
runs a short "training" loop (gradient descent of a plane fit, paced so cancellation is testable),
then builds the single-linkage tree of the points (scipy MST over a kNN graph, merged Higra-style
into ``parents``/``altitudes``) and cuts it at the thresholds. It honours ``should_stop`` and
reports progress. Importable by a server subprocess: ``--run-job tests.backend.service_jobs:run_job``.

Test hooks: a scene whose first view is named ``raise-oom`` raises an ``OutOfMemoryError``
(named like torch's), ``raise-value`` raises ``ValueError``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import cKDTree

from backend.wire.protocol import JobOptions, JobResult, ProgressEvent, ResultArrays
from backend.core.scene import Scene

DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2)
STEP_SLEEP_S = 0.01


class OutOfMemoryError(RuntimeError):
    """Same class name as ``torch.cuda.OutOfMemoryError``."""


def unproject(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """World points [P, 3] float32 and colours [P, 3] uint8 of all pixels with depth > 0."""
    pts, cols = [], []
    for v in range(scene.num_views):
        d = scene.depth[v]
        i, j = np.nonzero(d > 0)
        z = d[i, j].astype(np.float64)
        K = scene.K[v].astype(np.float64)
        x = (j + 0.5 - K[0, 2]) / K[0, 0] * z
        y = -(i + 0.5 - K[1, 2]) / K[1, 1] * z
        cam = np.stack([x, y, -z, np.ones_like(z)], 1)
        world = cam @ scene.c2w[v].astype(np.float64).T
        pts.append(world[:, :3] / scene.scale + scene.offset)
        cols.append(scene.rgb[v][i, j])
    return np.concatenate(pts).astype(np.float32), np.concatenate(cols).astype(np.uint8)


def single_linkage(points: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Single-linkage binary tree of ``points`` [N, 3]: ``parents`` int32 [2N-1] (leaves first, the
    root its own parent) and ``altitudes`` float32 [2N-1]; disconnected kNN components are joined
    last above the highest edge."""
    n = len(points)
    parents = np.arange(2 * n - 1, dtype=np.int32)
    altitudes = np.zeros(2 * n - 1, np.float32)
    if n < 2:
        return parents, altitudes
    dist, idx = cKDTree(points).query(points, k=min(k, n - 1) + 1)
    rows = np.repeat(np.arange(n), idx.shape[1] - 1)
    graph = coo_matrix((dist[:, 1:].ravel() + 1e-12, (rows, idx[:, 1:].ravel())), shape=(n, n))
    mst = minimum_spanning_tree(graph).tocoo()
    order = np.argsort(mst.data, kind="stable")
    edges = list(zip(mst.row[order], mst.col[order], mst.data[order]))
    top = float(mst.data.max()) if mst.nnz else 0.0
    uf = np.arange(2 * n - 1)

    def find(a: int) -> int:
        while uf[a] != a:
            uf[a] = uf[uf[a]]
            a = uf[a]
        return a

    nxt = n
    for a, b, w in edges + [(0, c, 2 * top + 1) for c in range(1, n)]:
        ra, rb = find(int(a)), find(int(b))
        if ra == rb:
            continue
        parents[ra] = parents[rb] = uf[ra] = uf[rb] = nxt
        altitudes[nxt] = w
        nxt += 1
        if nxt == 2 * n - 1:
            break
    return parents, altitudes


def cut(parents: np.ndarray, altitudes: np.ndarray, n: int, threshold: float) -> np.ndarray:
    """Labels [N] of the leaves when merges above ``threshold`` are undone (consecutive ids)."""
    label_of = np.arange(len(parents))
    for node in range(len(parents) - 1, -1, -1):  # parents before children (reverse topological)
        p = parents[node]
        if p != node and altitudes[p] <= threshold:
            label_of[node] = label_of[p]
    _, labels = np.unique(label_of[:n], return_inverse=True)
    return labels.astype(np.int32)


def run_job(scene: Scene, options: JobOptions, progress: Callable[[ProgressEvent], None],
            should_stop: Callable[[], bool], workdir: Path) -> JobResult:
    if scene.names and scene.names[0] == "raise-oom":
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    if scene.names and scene.names[0] == "raise-value":
        raise ValueError("bad things happened")
    t0 = time.perf_counter()
    progress(ProgressEvent("points", 0, scene.num_views, "unprojecting depth"))
    points, colors = unproject(scene)
    if len(points) > options.max_points:
        keep = np.sort(np.random.default_rng(options.seed).choice(len(points), options.max_points, replace=False))
        points, colors = points[keep], colors[keep]
    steps = options.iterations or 5
    plane = np.zeros(3)
    for step in range(1, steps + 1):  # "training": fit z = a x + b y + c by gradient descent
        if should_stop():
            return JobResult(arrays={}, meta={"stopped_at": step})
        a = np.c_[points[:, :2], np.ones(len(points))]
        resid = a @ plane - points[:, 2]
        plane -= 0.5 * a.T @ resid / max(len(points), 1)
        time.sleep(STEP_SLEEP_S)
        progress(ProgressEvent("training", step, steps, eta=(steps - step) * STEP_SLEEP_S,
                               losses={"plane": float(np.mean(resid**2))}))
    progress(ProgressEvent("segmentation", 0, 1, "single-linkage tree"))
    parents, altitudes = single_linkage(points)
    thresholds = np.asarray(options.thresholds or DEFAULT_THRESHOLDS, np.float32)
    labels = np.stack([cut(parents, altitudes, len(points), float(t)) for t in thresholds]) if len(points) else \
        np.zeros((len(thresholds), 0), np.int32)
    progress(ProgressEvent("segmentation", 1, 1, "done"))
    hierarchy = {
        "thresholds": thresholds.tolist(),
        "levels": [{"threshold": float(t), "segments": int(lab.max(initial=-1) + 1)} for t, lab in zip(thresholds, labels)],
    }
    return JobResult(
        arrays={ResultArrays.POINTS: points, ResultArrays.COLORS: colors, ResultArrays.PARENTS: parents,
                ResultArrays.ALTITUDES: altitudes, ResultArrays.LABELS: labels, ResultArrays.THRESHOLDS: thresholds},
        meta={"hierarchy": hierarchy, "seconds": time.perf_counter() - t0, "plane": plane.tolist()},
    )


def make_scene(n_views: int = 3, h: int = 12, w: int = 16, seed: int = 0, names: list[str] | None = None) -> Scene:
    """Cameras on a circle at radius 1.5 looking at the origin; depth of a sphere of radius 0.4
    (0 elsewhere); random colours."""
    rng = np.random.default_rng(seed)
    c2w = np.zeros((n_views, 4, 4), np.float32)
    depth = np.zeros((n_views, h, w), np.float32)
    f = 0.8 * w
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float32)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    dirs = np.stack([(jj - w / 2) / f, -(ii - h / 2) / f, -np.ones_like(jj)], -1)
    for v in range(n_views):
        ang = 2 * np.pi * v / n_views
        eye = np.array([1.5 * np.cos(ang), 1.5 * np.sin(ang), 0.3])
        back = eye / np.linalg.norm(eye)
        right = np.cross([0, 0, 1.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        c2w[v, :3, 0], c2w[v, :3, 1], c2w[v, :3, 2], c2w[v, :3, 3], c2w[v, 3, 3] = right, up, back, eye, 1
        rays = dirs @ np.stack([right, up, back], 0)  # world directions (unnormalised, cam z = -1)
        oc = eye
        a = (rays**2).sum(-1)
        b = 2 * rays @ oc
        c = oc @ oc - 0.4**2
        disc = b**2 - 4 * a * c
        t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0)
        depth[v] = np.where(disc > 0, t, 0)  # planar depth: t along a ray with cam z = -1
    rgb = rng.integers(0, 256, (n_views, h, w, 3), dtype=np.uint8)
    return Scene(rgb=rgb, c2w=c2w, K=np.repeat(K[None], n_views, 0), depth=depth,
                 names=names or [f"r_{v}" for v in range(n_views)])
