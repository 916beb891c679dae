"""Benchmark: one training step's ultrametric work on one image, ours vs the released code's approach.

Workload (Sec. 4.1 of the paper): P = 4,096 sampled pixels of a 200x200 image, k = 10 image-space
neighbours, about 100 masks -> ~6,400 positive and ~6,400 negative pairs (64 + 64 per mask, Algorithm 1), 256-d
unit features (random, or spatially smooth). Timed: graph + tree + distances for all pairs.

- OURS (backend.method.ultrametric): scipy KD-tree kNN, deduplicated undirected edges, ONE canonical BPT for positives and
  negatives together, vectorised LCA (Higra ``LCAFast``), gather of the bottleneck edge lengths.
- REFERENCE (the released code's approach, re-implemented here from its description): dense [P, P] pixel
  distances and ``torch.topk`` for the kNN, one tree for the positives and another for the negatives (graph rebuilt
  each time), and a Python loop of per-pair ``lowest_common_ancestor`` queries.

Distances must be identical (same edge lengths in float32; the minimax value is unique). Pixel positions carry a
sub-pixel jitter (as jittered rays do) so the k-nearest-neighbour sets are unique: on an exact integer grid, ties at
the k-th neighbour let two correct implementations pick different neighbours.

Also reported: the effect of the released code's mask-boundary prior (+10 on edges that cross a mask boundary when
building the tree): the fraction of positive / negative pairs whose bottleneck edge crosses a mask boundary.

Run: ``python3 bench/bench_ultrametric.py`` (about half a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import higra as hg
import numpy as np
import torch

from backend.core.mask_tree import mask_tree
from backend.core.sampling import sample_hierarchical_pairs
from backend.core.graphs import knn_pixel_graph, mask_boundary_crossings, mask_boundary_prior
from backend.method.ultrametric import ultrametric_distance_and_edges

H = W = 200


def make_masks(rng: np.random.Generator, num_masks: int) -> np.ndarray:
    """~``num_masks`` multi-granular masks over an HxW image: a nested quadtree of boxes plus random boxes."""
    masks = []
    boxes = [(0, H, 0, W)]
    while len(masks) < num_masks // 2 and boxes:  # hierarchical part: split boxes into 2-4 children
        r0, r1, c0, c1 = boxes.pop(0)
        if r1 - r0 < 12 or c1 - c0 < 12:
            continue
        rs = np.sort(rng.integers(r0 + 4, r1 - 4, 1))
        cs = np.sort(rng.integers(c0 + 4, c1 - 4, 1))
        for a, b in ((r0, rs[0]), (rs[0], r1)):
            for c, d in ((c0, cs[0]), (cs[0], c1)):
                if rng.random() < 0.85:
                    m = np.zeros((H, W), bool)
                    m[a:b, c:d] = True
                    masks.append(m)
                    boxes.append((a, b, c, d))
    while len(masks) < num_masks:  # SAM-like overlapping extras
        r0, c0 = rng.integers(0, H - 10, 2)
        m = np.zeros((H, W), bool)
        m[r0:r0 + rng.integers(6, 80), c0:c0 + rng.integers(6, 80)] = True
        masks.append(m)
    return np.stack(masks).reshape(len(masks), -1)


def make_features(rng: np.random.Generator, uv: np.ndarray, kind: str, dim: int = 256) -> torch.Tensor:
    """Unit features: i.i.d. Gaussian (``random``) or a smooth function of position (``smooth``)."""
    if kind == "random":
        f = rng.normal(size=(len(uv), dim))
    else:  # low-frequency random Fourier features of the pixel position
        freq = rng.normal(scale=1.5 / W, size=(2, dim))
        phase = rng.uniform(0, 2 * np.pi, dim)
        f = np.cos(uv @ freq * 2 * np.pi + phase) + 0.05 * rng.normal(size=(len(uv), dim))
    return torch.nn.functional.normalize(torch.tensor(f, dtype=torch.float32), dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Reference: the released code's approach
# ---------------------------------------------------------------------------------------------------------------
def reference_distances(feat: torch.Tensor, points: torch.Tensor, pairs: np.ndarray, k: int = 10,
                        masks: np.ndarray | None = None, stages: dict | None = None) -> torch.Tensor:
    """Released-code style: dense kNN, a fresh tree for this pair set, a Python loop of LCA queries."""
    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    n = feat.shape[0]
    dist2 = ((points[None, :, :] - points[:, None, :]) ** 2).sum(-1)  # [P, P]
    nn = torch.topk(dist2, k + 1, largest=False)[1][:, 1:]  # drop self
    srcs = np.repeat(np.arange(n), k)
    tgts = nn.reshape(-1).numpy()
    lengths = 1.0 - (feat[srcs] * feat[tgts]).sum(-1)
    tree_w = lengths.detach().clone()
    if masks is not None:
        tm = torch.as_tensor(masks)
        on_boundary = torch.any(tm[:, srcs] != tm[:, tgts], dim=0)
        tree_w[on_boundary] += 10
    t1 = time.perf_counter()
    tree, _ = hg.bpt_canonical((srcs, tgts, n), tree_w.numpy().astype(float))
    tree.lowest_common_ancestor_preprocess()
    t2 = time.perf_counter()
    node = np.zeros(len(pairs), dtype=np.int64)
    for i, (a, b) in enumerate(pairs):
        node[i] = tree.lowest_common_ancestor(int(a), int(b))
    t3 = time.perf_counter()
    for key, dt in (("graph+lengths", t1 - t0), ("tree", t2 - t1), ("LCA loop", t3 - t2)):
        stages[key] = stages.get(key, 0.0) + dt * 1e3
    same = node < n
    edge = np.asarray(tree.mst_edge_map)[np.maximum(node - n, 0)]
    out = lengths[torch.as_tensor(edge)]
    out[torch.as_tensor(same)] = 0.0
    return out


def ours(feat: torch.Tensor, uv: np.ndarray, pairs: np.ndarray, k: int = 10,
         masks: np.ndarray | None = None, stages: dict | None = None) -> tuple[torch.Tensor, np.ndarray, tuple]:
    """backend.method.ultrametric: KD-tree kNN graph, ONE tree for all pairs, vectorised LCA."""
    stages = {} if stages is None else stages
    t0 = time.perf_counter()
    src, dst = knn_pixel_graph(uv, k=k)
    prior = mask_boundary_prior(src, dst, masks) if masks is not None else None
    t1 = time.perf_counter()
    d, edges = ultrametric_distance_and_edges(feat, src, dst, pairs, boundary_prior=prior, assume_normalized=True)
    t2 = time.perf_counter()
    stages["graph"] = stages.get("graph", 0.0) + (t1 - t0) * 1e3
    stages["lengths+tree+LCA+gather"] = stages.get("lengths+tree+LCA+gather", 0.0) + (t2 - t1) * 1e3
    return d, edges, (src, dst)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--ref-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (default 1: on a small shared machine extra threads oversubscribe; "
                         "0 keeps torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    full_masks = make_masks(rng, args.masks)
    pix = rng.choice(H * W, size=args.pixels, replace=False)
    uv = np.stack([pix % W + 0.5, pix // W + 0.5], 1) + rng.uniform(-0.5, 0.5, (args.pixels, 2))
    masks = full_masks[:, pix]
    t0 = time.perf_counter()
    tree = mask_tree(masks, p_iou=0.9)
    ps = sample_hierarchical_pairs(tree, rng, n_pos=64, n_neg=64)
    t_sample = (time.perf_counter() - t0) * 1e3
    pos, neg = ps.pairs[ps.positive], ps.pairs[~ps.positive]
    all_pairs = ps.pairs
    print(f"image {H}x{W}, P={args.pixels}, k={args.k}, masks {len(masks)} -> {tree.root} kept, "
          f"max depth {tree.depth.max()}; pairs: {len(pos)} positive + {len(neg)} negative "
          f"(mask tree + sampling {t_sample:.1f} ms); torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    points = torch.tensor(uv, dtype=torch.float32)

    summary = []
    for kind in ("random", "smooth"):
        feat = make_features(rng, uv, kind)
        st_o: dict = {}
        st_r: dict = {}
        t_ours, (d_ours, edges, (src, dst)) = timed(lambda: ours(feat, uv, all_pairs, args.k, stages=st_o),
                                                    args.repeats)
        t_ref, d_ref = timed(lambda: torch.cat([reference_distances(feat, points, pos, args.k, stages=st_r),
                                                 reference_distances(feat, points, neg, args.k, stages=st_r)]),
                             args.ref_repeats)
        d_ours_ordered = torch.cat([d_ours[torch.as_tensor(ps.positive)], d_ours[torch.as_tensor(~ps.positive)]])
        identical = torch.equal(d_ours_ordered, d_ref)
        maxdiff = (d_ours_ordered - d_ref).abs().max().item()
        assert identical, f"distances differ (max abs diff {maxdiff:.3g})"
        print(f"[{kind:6s}] ours {t_ours:8.1f} ms   reference {t_ref:8.1f} ms   speed-up {t_ref / t_ours:6.1f}x   "
              f"identical distances: {identical} ({len(d_ref)} pairs, E={len(src)} undirected edges)")
        print("    ours stages (mean ms): " + ", ".join(f"{k} {v / args.repeats:.1f}" for k, v in st_o.items()))
        print("    reference stages (mean ms, both trees): "
              + ", ".join(f"{k} {v / args.ref_repeats:.1f}" for k, v in st_r.items()))
        summary.append((kind, t_ours, t_ref))

        # mask-boundary prior: which bottleneck edges cross a mask boundary, with and without the prior
        crossing = mask_boundary_crossings(src, dst, masks)
        _, edges_p, _ = ours(feat, uv, all_pairs, args.k, masks)
        d_ref_p = torch.cat([reference_distances(feat, points, pos, args.k, masks),
                             reference_distances(feat, points, neg, args.k, masks)])
        d_ours_p = ours(feat, uv, all_pairs, args.k, masks)[0]
        d_ours_p = torch.cat([d_ours_p[torch.as_tensor(ps.positive)], d_ours_p[torch.as_tensor(~ps.positive)]])
        agree = (d_ours_p == d_ref_p).float().mean().item()
        for name, e in (("no prior", edges), ("+10 prior", edges_p)):
            own = tree.masks[ps.node, src[e]] != tree.masks[ps.node, dst[e]]  # leaves the pair's own mask
            print(f"    {name:9s}: bottleneck crosses any mask boundary: {100 * crossing[e[ps.positive]].mean():5.1f}% "
                  f"of positives, {100 * crossing[e[~ps.positive]].mean():5.1f}% of negatives; crosses the pair's own "
                  f"mask: {100 * own[ps.positive].mean():5.1f}% / {100 * own[~ps.positive].mean():5.1f}%")
        print(f"    ({100 * crossing.mean():.1f}% of graph edges cross a boundary; with the prior, ours and the "
              f"reference agree on {100 * agree:.2f}% of distances; they may differ only where float32 rounding of "
              f"length + 10 in the reference breaks a near-tie)")

    kind, t_o, t_r = summary[0]
    print(f"ultrametric step: ours {t_o:.1f} ms, reference {t_r:.1f} ms, speed-up {t_r / t_o:.1f}x "
          f"({kind} features; smooth: {summary[1][2] / summary[1][1]:.1f}x)")


if __name__ == "__main__":
    main()
