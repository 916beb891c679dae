"""Cuts of a single-linkage tree and segment colours, in NumPy only (no bpy; tested with plain pytest).

The tree comes as the backend sends it (Higra's representation): ``parents`` int [M] and ``altitudes``
float [M] over M nodes, the N leaves (points) first, every internal node after its children
(``parents[i] > i`` unless ``i`` is a root, whose parent is itself), altitudes non-decreasing towards
the root. A binary tree over N points has M = 2N - 1 nodes; a forest has fewer.

Definition: the segments at threshold ``t`` are the connected components of the merges whose altitude
is strictly below ``t`` (``altitude < t``), i.e. each leaf belongs to its highest ancestor ``a`` with
``altitudes[a] < t`` (itself when none). Cuts at growing thresholds are nested.

>>> parents = np.array([5, 5, 6, 7, 7, 6, 8, 8, 8])     # leaves 0..4; 5={0,1}, 6={0,1,2}, 7={3,4}, 8=root
>>> altitudes = np.array([0, 0, 0, 0, 0, 0.1, 0.3, 0.2, 0.5])
>>> cut(parents, altitudes, 5, 0.25).labels.tolist()   # {0,1} and {3,4} (size 2) before {2}
[0, 0, 2, 1, 1]
>>> cut(parents, altitudes, 5, 0.4).labels.tolist()
[0, 0, 0, 1, 1]

Complexity: :func:`cut` is O(M log D) (pointer jumping; D the tree depth) plus an O(N log N) sort
to rank segments by size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Colour of points outside the coloured segments (linear RGB).
GREY = (0.35, 0.35, 0.35)


class TreeError(ValueError):
    """The parents/altitudes arrays do not describe a tree over the points."""


@dataclass(frozen=True)
class Cut:
    """Segments of a cut. ``labels`` int32 [N]: segment of each point, ranked by size (0 = largest; ties
    broken by the smallest point index); ``sizes`` int64 [S] points per segment; ``first_point`` int64 [S]
    the smallest point index of each segment (a stable identity: when segments merge, the merged one
    keeps the first point of one of them)."""

    labels: np.ndarray
    sizes: np.ndarray
    first_point: np.ndarray

    @property
    def n_segments(self) -> int:
        return int(self.sizes.shape[0])


def validate_tree(parents: np.ndarray, altitudes: np.ndarray, n_leaves: int) -> None:
    """Raise :class:`TreeError` unless ``parents``/``altitudes`` form a topologically ordered forest
    whose first ``n_leaves`` nodes are the leaves."""
    parents = np.asarray(parents)
    altitudes = np.asarray(altitudes)
    m = parents.shape[0]
    if parents.ndim != 1 or altitudes.shape != (m,):
        raise TreeError(f"parents and altitudes must be 1-D of one length, got {parents.shape} and {altitudes.shape}")
    if not n_leaves <= m <= max(2 * n_leaves - 1, n_leaves):
        raise TreeError(f"a tree over {n_leaves} points has between {n_leaves} and {2 * n_leaves - 1} nodes, got {m}")
    if m == 0:
        return
    if not np.issubdtype(parents.dtype, np.integer):
        raise TreeError(f"parents must be integers, got {parents.dtype}")
    if not np.isfinite(altitudes).all():
        raise TreeError("altitudes contain NaN or inf")
    idx = np.arange(m)
    if parents.min() < 0 or parents.max() >= m:
        raise TreeError("parents must index nodes of the tree")
    if (parents < idx).any():
        raise TreeError("nodes must come after their children (parents[i] >= i)")
    internal_children = np.bincount(parents[parents != idx], minlength=m)[:n_leaves]
    if internal_children.any():
        raise TreeError("the first n_leaves nodes must be leaves (no children)")
    if (altitudes[parents] < altitudes - 1e-6 * np.maximum(1.0, np.abs(altitudes))).any():
        raise TreeError("altitudes must not decrease towards the root")


def cut_representatives(parents: np.ndarray, altitudes: np.ndarray, threshold: float) -> np.ndarray:
    """int64 [M]: for every node, its highest ancestor-or-self reachable through nodes of altitude
    ``< threshold`` (the component's top node). Pointer jumping: O(M log depth)."""
    parents = np.asarray(parents, dtype=np.int64)
    # float64: NumPy would otherwise round a Python-float threshold to float32 altitudes' precision
    altitudes = np.asarray(altitudes, dtype=np.float64)
    idx = np.arange(parents.shape[0], dtype=np.int64)
    # A node steps up when its parent merges below the threshold (and it is not a root).
    up = (parents != idx) & (altitudes[parents] < threshold)
    rep = np.where(up, parents, idx)
    while True:
        nxt = rep[rep]
        if np.array_equal(nxt, rep):
            return rep
        rep = nxt


def rank_segments(sizes: np.ndarray, first: np.ndarray, max_segments: int | None = None) -> np.ndarray:
    """Rank of each segment by decreasing size, ties by smaller first point (0 = largest); -1 beyond
    ``max_segments`` (None keeps all). This canonical order makes labels a function of the partition alone;
    the backend's cuts (``backend.core.linkage_tree``) and the add-on's use it alike.

    Shape: ``sizes``, ``first`` int [K] -> int64 [K]. Complexity: O(K + S log S), S the segments kept.

    >>> rank_segments(np.array([1, 3, 3, 2]), np.array([0, 5, 1, 2]), 3).tolist()
    [-1, 1, 0, 2]
    """
    sizes = np.asarray(sizes, np.int64)
    first = np.asarray(first, np.int64)
    k = sizes.size
    limit = k if max_segments is None else max(int(max_segments), 0)
    rank = np.full(k, -1, np.int64)
    if k == 0 or limit == 0:
        return rank
    if k <= limit:
        chosen = np.arange(k)
    else:
        cutoff = np.partition(sizes, k - limit)[k - limit]  # the limit-th largest size
        above = np.flatnonzero(sizes > cutoff)
        tied = np.flatnonzero(sizes == cutoff)
        need = limit - above.size
        if need < tied.size:
            tied = tied[np.argpartition(first[tied], need - 1)[:need]]
        chosen = np.concatenate([above, tied])
    chosen = chosen[np.lexsort((first[chosen], -sizes[chosen]))]
    rank[chosen] = np.arange(chosen.size)
    return rank


def _ranked_cut(inverse: np.ndarray, sizes: np.ndarray, first: np.ndarray) -> Cut:
    rank = rank_segments(sizes, first)
    order = np.argsort(rank)
    return Cut(labels=rank[inverse].astype(np.int32), sizes=sizes[order].astype(np.int64), first_point=first[order])


def cut(parents: np.ndarray, altitudes: np.ndarray, n_leaves: int, threshold: float) -> Cut:
    """Segments of the first ``n_leaves`` nodes at ``threshold`` (see the module docstring)."""
    rep = cut_representatives(parents, altitudes, float(threshold))[:n_leaves]
    uniq, inverse, sizes = np.unique(rep, return_inverse=True, return_counts=True)
    first = np.full(uniq.shape[0], n_leaves, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(n_leaves, dtype=np.int64))
    return _ranked_cut(inverse, sizes, first)


def relabel_by_size(labels: np.ndarray) -> Cut:
    """A :class:`Cut` from given labels (e.g. the server's ``labels[t]``; negative = unassigned, kept
    as its own segment ranked like the others)."""
    labels = np.asarray(labels).reshape(-1)
    n = labels.shape[0]
    uniq, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    first = np.full(uniq.shape[0], n, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(n, dtype=np.int64))
    return _ranked_cut(inverse, sizes, first)


def palette(n: int, seed: int = 0) -> np.ndarray:
    """float32 [n, 3] distinct-looking linear RGB colours (golden-ratio hues, alternating saturation
    and value), deterministic for ``seed``."""
    k = np.arange(n, dtype=np.float64) + seed
    h = (k * 0.618033988749895) % 1.0
    s = np.where(k % 2 == 0, 0.75, 0.55)
    v = np.where((k // 2) % 2 == 0, 0.95, 0.75)
    return hsv_to_rgb(h, s, v).astype(np.float32)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB [.., 3]."""
    h = np.asarray(h, np.float64)
    s = np.broadcast_to(np.asarray(s, np.float64), h.shape)
    v = np.broadcast_to(np.asarray(v, np.float64), h.shape)
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), 0)[0]


#: Size of the palette segment colours are drawn from.
PALETTE_SIZE = 1024


def segment_colours(c: Cut, n_coloured: int, grey=GREY) -> np.ndarray:
    """float32 [S, 3]: a colour per segment of ``c``; the ``n_coloured`` largest get distinct palette
    colours chosen from their ``first_point`` (so a segment keeps its colour while the threshold moves,
    as long as it exists), the rest ``grey``."""
    s = c.n_segments
    out = np.empty((s, 3), np.float32)
    out[:] = np.asarray(grey, np.float32)
    k = min(int(n_coloured), s)
    if k <= 0:
        return out
    size = max(PALETTE_SIZE, k)
    pal = palette(size)
    taken = np.zeros(size, bool)
    # Hash the stable identity into the palette; linear probing keeps the k colours distinct.
    slots = (c.first_point[:k].astype(np.uint64) * np.uint64(2654435761)) % np.uint64(size)
    for r, slot in enumerate(slots.tolist()):
        while taken[slot]:
            slot = (slot + 1) % size
        taken[slot] = True
        out[r] = pal[slot]
    return out


def point_colours(c: Cut, n_coloured: int, grey=GREY) -> np.ndarray:
    """float32 [N, 4] RGBA of every point (its segment's colour from :func:`segment_colours`)."""
    seg = segment_colours(c, n_coloured, grey)
    rgba = np.ones((c.labels.shape[0], 4), np.float32)
    rgba[:, :3] = seg[c.labels]
    return rgba


# -------------------------------------------------------------------------------------- granularity
#
# The panel's slider is a granularity g in [0, 1], logarithmic in the number of segments: g = 0 keeps
# every point apart (N segments), g = 1 merges everything (as many segments as the tree has roots), and
# in between the cut keeps about N ** (1 - g) segments. A single-linkage tree over N points has N - 1
# merges; a cut with k merges below the threshold leaves N - k segments (fewer only with ties).


def merge_altitudes(parents: np.ndarray, altitudes: np.ndarray, n_leaves: int) -> np.ndarray:
    """float64 [M - N]: altitudes of the internal (merge) nodes, sorted increasingly."""
    return np.sort(np.asarray(altitudes, np.float64)[n_leaves:np.asarray(parents).shape[0]])


def granularity_to_threshold(merges: np.ndarray, n_leaves: int, granularity: float) -> float:
    """Threshold whose cut keeps about ``n_leaves ** (1 - granularity)`` segments.

    ``merges`` is :func:`merge_altitudes`. The threshold is placed just above the altitude of the
    k-th lowest merge (k = N - target segments), so that the strict ``altitude < t`` rule performs it.

    >>> m = np.array([0.1, 0.2, 0.3])          # 4 points, 3 merges
    >>> granularity_to_threshold(m, 4, 0.0)    # 4 segments: no merge
    0.0
    >>> granularity_to_threshold(m, 4, 0.5) > 0.2 and granularity_to_threshold(m, 4, 0.5) < 0.3  # 2 segments
    True
    """
    g = min(max(float(granularity), 0.0), 1.0)
    n = int(n_leaves)
    if n <= 1 or merges.size == 0:
        return 0.0
    target = int(round(n ** (1.0 - g)))
    k = min(max(n - target, 0), merges.size)
    if k == 0:
        return float(min(merges[0], 0.0))
    return float(np.nextafter(merges[k - 1], np.inf))


def threshold_to_granularity(merges: np.ndarray, n_leaves: int, threshold: float) -> float:
    """Inverse of :func:`granularity_to_threshold` (up to rounding): the granularity whose cut
    performs the merges below ``threshold``."""
    n = int(n_leaves)
    if n <= 1 or merges.size == 0:
        return 0.0
    k = int(np.searchsorted(merges, float(threshold), side="left"))  # merges with altitude < t
    segments = max(n - k, 1)
    return float(min(max(1.0 - np.log(segments) / np.log(n), 0.0), 1.0))


# -------------------------------------------------------------------------------------- colours of files
#
# Pictures and PLY files colour segments like the add-on: a segment's colour comes from its first point,
# so across cuts a segment keeps its colour while it exists, and when it merges into its parent the parent
# takes the colour of the child holding the smaller first point (one child keeps its colour).


def label_cut(labels: np.ndarray) -> Cut:
    """A :class:`Cut` over labels that are already ranked segment ids (``0 .. K-1``, as in ``result.npz``;
    negative = outside the kept segments): the ids are kept, only ``sizes`` and ``first_point`` are computed.

    >>> c = label_cut(np.array([1, 0, 0, -1, 1, 0]))
    >>> c.sizes.tolist(), c.first_point.tolist()
    ([3, 2], [1, 0])
    """
    labels = np.asarray(labels).reshape(-1)
    n = labels.shape[0]
    k = int(labels.max(initial=-1)) + 1
    ok = labels >= 0
    sizes = np.bincount(labels[ok], minlength=k).astype(np.int64)
    first = np.full(k, n, np.int64)
    np.minimum.at(first, labels[ok], np.flatnonzero(ok))
    return Cut(labels=labels.astype(np.int32), sizes=sizes, first_point=first)


def colour_table(labels: np.ndarray, n_coloured: int | None = None, grey=GREY) -> np.ndarray:
    """float32 [K + 1, 3] linear RGB: row ``i`` colours segment id ``i`` of ``labels`` int [N] (ranked ids,
    see :func:`label_cut`); the last row (``table[-1]``, what ``table[labels]`` gives a label -1) is ``grey``.
    The ``n_coloured`` largest ids get palette colours (default all), the rest ``grey``."""
    c = label_cut(labels)
    k = c.n_segments
    table = np.empty((k + 1, 3), np.float32)
    table[:k] = segment_colours(c, k if n_coloured is None else n_coloured, grey)
    table[k] = np.asarray(grey, np.float32)
    return table


def srgb8(linear: np.ndarray) -> np.ndarray:
    """uint8 sRGB of linear RGB in [0, 1] (how Blender shows the add-on's colours; for PNG and PLY files).

    >>> srgb8(np.array([0.0, 0.2159, 1.0])).tolist()
    [0, 128, 255]
    """
    x = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(s * 255).astype(np.uint8)
