"""Benchmark: one single-linkage tree + 50 cuts vs 50 separate scipy connected-component runs.

Setup (Sec. 4.2 of the paper, 3D): 200,000 random points in the unit cube, kNN graph k = 16, edge length
``1 - cos`` of features that are piecewise smooth (300 Voronoi "objects" with their own feature, plus a smooth
sinusoidal field and a little noise), so the segments are non-trivial across the 50 thresholds 0.01-0.50.
Both sides share the graph (not timed) and apply the same max-segment rule (200 largest, ties by smallest
point index), so their label arrays must be identical.

Run: ``python3 bench/bench_cuts.py [--points N] [--seed S]``. Goal: >= 4x faster in total and < 20 ms per
extra threshold.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from backend.core import graphs, linkage_tree


def make_cloud(n: int, rng: np.random.Generator, dim: int = 16, cells: int = 300):
    """Random points with piecewise-smooth features (see module docstring)."""
    pts = rng.random((n, 3))
    freq = rng.normal(size=(3, dim)) * 20.0
    phase = rng.random(dim) * 2 * np.pi
    cell = cKDTree(rng.random((cells, 3))).query(pts)[1]
    cell_feat = rng.normal(size=(cells, dim))
    feats = np.sin(pts @ freq + phase) + 0.7 * cell_feat[cell] + 0.1 * rng.normal(size=(n, dim))
    return pts, feats


def brute_force(n: int, src, dst, w, thresholds, max_segments: int) -> np.ndarray:
    """One scipy connected-components run per threshold on the edges with weight < t."""
    out = np.empty((len(thresholds), n), np.int64)
    for i, t in enumerate(thresholds):
        m = w < t
        graph = coo_matrix((np.ones(int(m.sum()), np.int8), (src[m], dst[m])), shape=(n, n))
        _, lab = connected_components(graph, directed=False)
        out[i] = linkage_tree.relabel_by_size(lab, max_segments)
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label arrays define the same partition (a bijection between labels; -1 must match)."""
    if not np.array_equal(a < 0, b < 0):
        return False
    ok = a >= 0
    pairs = np.unique(np.stack([a[ok], b[ok]], 1), axis=0)
    return len(pairs) == len(np.unique(a[ok])) == len(np.unique(b[ok]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-segments", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    thresholds = np.round(np.linspace(0.01, 0.50, 50), 4)

    t0 = time.perf_counter()
    pts, feats = make_cloud(args.points, rng)
    src, dst = graphs.knn_graph(pts, k=args.k)
    w = graphs.feature_distances(feats, src, dst)
    t_graph = time.perf_counter() - t0
    print(f"graph: {args.points} points, {src.size} edges (k={args.k}), built in {t_graph:.2f} s (not timed below)")

    t0 = time.perf_counter()
    tree = linkage_tree.single_linkage_tree(args.points, src, dst, w)
    t1 = time.perf_counter()
    first = linkage_tree.cut_many(tree, thresholds[:1], args.max_segments)  # includes the once-per-tree preprocessing
    t2 = time.perf_counter()
    rest = linkage_tree.cut_many(tree, thresholds[1:], args.max_segments)
    t3 = time.perf_counter()
    labels_tree = np.concatenate([first, rest])
    t_tree = t3 - t0
    per_extra_ms = (t3 - t2) / (len(thresholds) - 1) * 1e3
    print(f"tree: build {t1 - t0:.3f} s, first cut (+preprocessing) {(t2 - t1) * 1e3:.1f} ms, "
          f"{len(thresholds) - 1} more cuts {(t3 - t2) * 1e3:.1f} ms -> {per_extra_ms:.2f} ms per extra threshold")

    t0 = time.perf_counter()
    labels_bf = brute_force(args.points, src, dst, w, thresholds, args.max_segments)
    t_bf = time.perf_counter() - t0
    print(f"scipy connected components x{len(thresholds)}: {t_bf:.3f} s ({t_bf / len(thresholds) * 1e3:.1f} ms each)")

    identical = np.array_equal(labels_tree, labels_bf)
    partitions = all(same_partition(a, b) for a, b in zip(labels_tree, labels_bf))
    counts = [int(labels_tree[i].max() + 1) for i in (0, 9, 19, 29, 39, 49)]
    print(f"kept segments at t=0.01,0.10,0.20,0.30,0.40,0.50: {counts}")
    print(f"tree total {t_tree:.3f} s vs scipy total {t_bf:.3f} s: {t_bf / t_tree:.1f}x faster")
    assert partitions, "tree cuts and scipy components disagree"
    assert identical, "labels differ although partitions agree (max-segment rule mismatch)"
    ok = t_bf / t_tree >= 4.0 and per_extra_ms < 20.0
    print(f"SUMMARY bench_cuts: {args.points} pts, 50 thresholds, tree {t_tree:.2f} s vs scipy {t_bf:.2f} s "
          f"({t_bf / t_tree:.1f}x), {per_extra_ms:.1f} ms/extra threshold, partitions identical, "
          f"goal {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
