"""Export levels chosen from the tree itself, spread from parts to the whole scene.

Thresholding the ultrametric at any level gives nested segments (Sec. 4.2); which few levels to hand a user is
not fixed by the paper. Fixed numbers fail as soon as a scene's merge altitudes live on another scale (on a
furnished room nearly every merge lies below 1 - cos = 0.02, so most fixed cuts were one segment). This module
reads the levels off the tree:

- after each merge (in altitude order) the cut has an *effective number of segments*, the inverse Simpson index
  ``1 / sum_i p_i^2`` of the segments' shares of the points: a cut dominated by one segment of share ``s`` has
  about ``1 / s^2``, dust barely counts, and it only decreases as merges happen;
- the effective counts from ``finest`` (200, the paper's segment cap) down to ``coarsest`` (1.5: one segment
  beside a few large ones) are split into ``count`` bands, evenly in log count; each band spans one altitude
  range, and its level is the middle of that range in log altitude (scale-free: a range from 1e-4 to 1e-3 counts
  as much as one from 0.01 to 0.1), so a granularity the tree holds over a wide range of distances gets a cut
  in the middle of that range.

Measured against two other rules (docs/quality.md): the fixed released-code cuts, and the widest plateaus of the
count of segments over a minimum size (which landed every level on the coarse end of a room, or on transients).
Everything is a pure function of the tree's parents and altitudes (Higra layout, :class:`SingleLinkageTree`).
"""

from __future__ import annotations

import numpy as np

from backend.core.linkage_tree import SingleLinkageTree, attribute_area

FINEST = 200.0
"""Effective segment count of the finest band's top (the paper keeps the 200 largest segments, Sec. 4.2)."""
COARSEST = 1.5
"""Effective segment count of the coarsest band's bottom."""


def merge_order(tree: SingleLinkageTree) -> np.ndarray:
    """Internal nodes sorted by altitude (ties in index order, which is topological). int64 [N-1]."""
    n = tree.num_leaves
    internal = np.arange(n, tree.num_nodes)
    return internal[np.argsort(tree.altitudes[n:], kind="stable")]


def effective_counts(tree: SingleLinkageTree) -> tuple[np.ndarray, np.ndarray]:
    """Merge altitudes in order and the effective number of segments after each merge (inverse Simpson index of
    the segments' shares of the points). Complexity O(N log N).

    >>> t = SingleLinkageTree(np.array([4, 4, 5, 5, 6, 6, 6]), np.array([0, 0, 0, 0, 0.1, 0.2, 0.9]), 4)
    >>> effective_counts(t)[1].round(2).tolist()   # 4 points: {01}{2}{3}, {01}{23}, {0123}
    [2.67, 2.0, 1.0]
    """
    n = tree.num_leaves
    if n < 2:
        return np.zeros(0), np.zeros(0)
    area = attribute_area(tree).astype(np.float64)
    kids = np.argsort(tree.parents[:-1], kind="stable").reshape(-1, 2)  # the two children of node n + i
    order = merge_order(tree)
    grow = 2.0 * area[kids[:, 0]] * area[kids[:, 1]]  # sum of squared sizes grows by 2ab when a and b merge
    simpson = (n + np.cumsum(grow[order - n])) / float(n) ** 2
    return tree.altitudes[order], 1.0 / simpson


def persistent_levels(tree: SingleLinkageTree, count: int = 5, finest: float = FINEST,
                      coarsest: float = COARSEST) -> np.ndarray:
    """``count`` cut thresholds, fine to coarse, one per band of effective segment count (see the module
    docstring); fewer when bands are empty (a tree that never holds more than ``coarsest`` segments gives none).

    >>> t = SingleLinkageTree(np.array([4, 4, 5, 5, 6, 6, 6]), np.array([0, 0, 0, 0, 0.1, 0.2, 0.9]), 4)
    >>> persistent_levels(t, 2).round(3).tolist()
    [0.141, 0.425]
    """
    alt, eff = effective_counts(tree)
    finite = np.isfinite(alt)
    alt, eff = alt[finite], eff[finite]
    if len(alt) < 2 or count < 1:
        return np.zeros(0)
    eps = max(1e-3 * float(alt.max()), 1e-12)
    top = min(float(finest), float(eff.max()))
    if top <= coarsest:
        return np.zeros(0)
    eff = np.round(eff, 9)  # exact shares: 2.0000000001 is 2 segments
    edges = np.round(np.geomspace(top, coarsest, int(count) + 1), 9)
    edges[0] += 1e-9
    logs = np.log(alt + eps)
    out = []
    # a threshold in (alt[i], alt[i + 1]] cuts with eff[i] segments; each band is one range of i
    for hi, lo in zip(edges[:-1], edges[1:]):
        idx = np.flatnonzero((eff[:-1] <= hi) & (eff[:-1] > lo))
        if not len(idx):
            continue
        a, b = idx[0], idx[-1] + 1
        mid = float(np.exp(0.5 * (logs[a] + logs[b])) - eps)
        out.append(min(max(mid, float(np.nextafter(alt[a], np.inf))), float(alt[b])))
    return np.unique(np.asarray(out, np.float64))
