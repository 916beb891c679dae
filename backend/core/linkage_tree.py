"""The single-linkage tree of a weighted graph: ONE tree type and ONE builder for training and inference,
with minimax (ultrametric) queries and cuts at any threshold. NumPy / SciPy / Higra only.

- Training (Sec. 4.1, Eq. 1-2 of the paper): the ultrametric distance ``d(p, q)`` = min over paths of the
  max edge = the altitude of the lowest common ancestor (LCA) of ``p`` and ``q``; the LCA's building edge
  is the bottleneck edge of every minimax path (:func:`bottleneck_edges`).
- Inference (Sec. 4.2): the connected components of the feature graph's edges shorter than ``t`` are the
  segments at granularity ``t``; the components of all thresholds form this one dendrogram, so the tree
  (the canonical binary partition tree of a minimum spanning forest, Kruskal order) is built ONCE and every
  threshold is a cheap, vectorised cut of it. Labels at increasing thresholds are nested.

Tree layout (Higra's, ``hierarchy_core.bpt_canonical``): ``N`` leaves first (the graph vertices), then the
``N - 1`` merge nodes in topological order, the root last and its own parent. Internal node altitude = the
weight of the edge that created it. A graph with several connected components is joined under ``+inf``
nodes, so a tree always exists and no finite threshold ever crosses those joins.

Cut algorithm (:func:`cut_many`). Preprocessing, once per tree: the number of leaves under every node
(``area``) and a depth-first leaf order in which the leaves of any node form one contiguous run
``[start, start + area)``. At threshold ``t`` a node is *merged* when it is a leaf or its altitude is ``< t``
(altitudes never decrease towards the root); the segments are the merged nodes whose parent is not merged.
Their runs tile the leaf order, so labelling every leaf is a few O(N) numpy passes (mark run starts,
cumulative sum, gather, scatter) with no per-threshold sort of the leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import higra as hg
import numpy as np

from backend.core.graphs import component_labels
from backend.wire.tree_cut import rank_segments


class TreeInputError(ValueError):
    """Raised for malformed graphs, trees, thresholds or labels given to this module."""


@dataclass
class SingleLinkageTree:
    """A single-linkage (canonical binary partition) tree in Higra's layout.

    Shape: ``parents`` int64 [2N-1], ``altitudes`` float64 [2N-1] (``N`` = ``num_leaves``; a single vertex
    gives a one-node tree, [1]).

    >>> t = SingleLinkageTree(np.array([3, 3, 4, 4, 4]), np.array([0, 0, 0, 0.1, 0.5]), 3)
    >>> t.num_nodes
    5
    """

    parents: np.ndarray
    """Parent of every node; leaves ``0..N-1`` first, the root last and its own parent; ``parents[n] > n``."""
    altitudes: np.ndarray
    """Merge altitude of every node (0 at leaves; ``+inf`` for nodes joining disconnected graph components)."""
    num_leaves: int
    """Number of leaves ``N`` (graph vertices)."""
    mst_edge_map: np.ndarray | None = None
    """int64 [N-1] or None: index into the builder's edge list of the edge that created internal node ``N + i``
    (-1 for a ``+inf`` join of two graph components). Set by :func:`single_linkage_tree`; needed by
    :func:`bottleneck_edges` only."""
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.parents = np.asarray(self.parents, dtype=np.int64)
        self.altitudes = np.asarray(self.altitudes, dtype=np.float64)
        n = int(self.num_leaves)
        self.num_leaves = n
        if self.mst_edge_map is not None:
            self.mst_edge_map = np.asarray(self.mst_edge_map, dtype=np.int64)
        if n < 1:
            raise TreeInputError(f"a tree needs at least one leaf, got num_leaves={n}")
        if self.parents.shape != (2 * n - 1,) or self.altitudes.shape != (2 * n - 1,):
            raise TreeInputError(
                f"expected parents and altitudes of shape ({2 * n - 1},) for {n} leaves, "
                f"got {self.parents.shape} and {self.altitudes.shape}")
        root = 2 * n - 2
        idx = np.arange(root)
        if self.parents[root] != root or np.any(self.parents[:root] <= idx) or np.any(self.parents > root):
            raise TreeInputError("parents must be in topological order: parents[n] > n, root last and its own parent")
        if np.isnan(self.altitudes).any():
            raise TreeInputError("altitudes contain NaN")
        if np.any(self.altitudes[self.parents[:root]] < self.altitudes[:root]):
            raise TreeInputError("altitudes must not decrease from a node to its parent")

    @property
    def num_nodes(self) -> int:
        """``2N - 1``."""
        return int(self.parents.shape[0])

    @property
    def root(self) -> int:
        """Index of the root (the last node)."""
        return self.num_nodes - 1


# ---------------------------------------------------------------------------------------------------------------
# Tree construction


def _checked_graph(num_vertices: int, src, dst, weights) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(n, src, dst, w)`` as int64 / float64 arrays, checked (:class:`TreeInputError`); ``w`` clipped at 0 (rounding
    of ``1 - cos`` can give -1e-16; altitudes start at 0, the leaves)."""
    n = int(num_vertices)
    if n < 1:
        raise TreeInputError(f"num_vertices must be >= 1, got {n}")
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not (src.shape == dst.shape == w.shape):
        raise TreeInputError(f"src, dst, weights must have equal length, got {src.shape}, {dst.shape}, {w.shape}")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise TreeInputError(f"edge endpoints must lie in [0, {n})")
    if not np.isfinite(w).all():
        raise TreeInputError("edge weights must be finite")
    if w.size and w.min() < -1e-5:
        raise TreeInputError(f"edge weights are distances and must be >= 0, got {w.min()}")
    return n, src, dst, np.maximum(w, 0.0)


def _joined_components(n: int, src: np.ndarray, dst: np.ndarray,
                       w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges with one ``+inf`` edge appended per extra connected component (its representative joined to
    component 0's), so every tree builder gets a connected graph and no finite cut crosses the joins."""
    ncomp, comp = component_labels(n, src, dst)
    if ncomp == 1:
        return src, dst, w
    _, reps = np.unique(comp, return_index=True)
    return (np.concatenate([src, np.full(ncomp - 1, reps[0], np.int64)]),
            np.concatenate([dst, reps[1:].astype(np.int64)]), np.concatenate([w, np.full(ncomp - 1, np.inf)]))


def single_linkage_tree(num_vertices: int, src: np.ndarray, dst: np.ndarray,
                        weights: np.ndarray) -> SingleLinkageTree:
    """Single-linkage tree (canonical binary partition tree of the minimum spanning forest) of a weighted graph.

    Definition: merge the two regions at the ends of each edge in increasing weight order (Kruskal); every
    merge is a node at altitude = that weight. The ultrametric ``d(p, q)`` = altitude of the lowest common
    ancestor = the minimax path weight (Eq. 1-2). Connected components of the graph are joined
    under ``+inf`` nodes. Built with ``higra.bpt_canonical``.

    Shape: ``src``, ``dst`` int [E], ``weights`` float [E] (finite, >= 0) -> tree with ``2 * num_vertices - 1`` nodes.
    Complexity: O(E log E).

    >>> t = single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> t.parents.tolist(), t.altitudes.tolist()
    ([4, 3, 3, 4, 4], [0.0, 0.0, 0.0, 0.2, 0.5])
    """
    n, src, dst, w = _checked_graph(num_vertices, src, dst, weights)
    if n == 1:
        return SingleLinkageTree(np.zeros(1, np.int64), np.zeros(1), 1, np.zeros(0, np.int64))
    m = src.size
    order = np.argsort(w, kind="stable")  # ties by edge index, as Higra
    src, dst, w = _joined_components(n, src, dst, w)
    order = np.concatenate([order, np.arange(m, src.size)])  # the +inf joins sort last
    graph = hg.UndirectedGraph(n)
    graph.add_edges(src, dst)
    tree, alt = hg.bpt_canonical(graph, w, sorted_edge_indices=order, compute_mst=False)
    emap = np.asarray(tree.mst_edge_map, np.int64)
    emap[emap >= m] = -1
    return SingleLinkageTree(np.asarray(tree.parents(), np.int64), np.asarray(alt, np.float64), n, emap)


def average_linkage_tree(num_vertices: int, src: np.ndarray, dst: np.ndarray,
                         weights: np.ndarray) -> SingleLinkageTree:
    """Graph-constrained average-linkage tree (a departure from Sec. 4.2's single linkage, for the 3D step):
    regions joined by an edge merge in order of the MEAN length of all edges between them, and the merge's altitude
    is that mean. A few short edges (points in the band where the field changes from one object's feature to its
    neighbour's) no longer decide when two touching objects merge; all their contact edges do. Cuts still give
    nested segments at a feature-distance threshold. Components of the graph are joined under ``+inf`` nodes as in
    :func:`single_linkage_tree`. Built with ``higra.binary_partition_tree_average_linkage``; ``mst_edge_map`` is
    None (no bottleneck edges: the training's ultrametric stays single linkage).

    Shape: as :func:`single_linkage_tree`. Complexity: O(E log E).

    >>> t = average_linkage_tree(3, np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.1, 0.2, 0.6]))
    >>> t.altitudes.round(3).tolist()   # {0, 1} at 0.1, then {0, 1} + {2} at the mean of 0.2 and 0.6
    [0.0, 0.0, 0.0, 0.1, 0.4]
    """
    n, src, dst, w = _checked_graph(num_vertices, src, dst, weights)
    if n == 1:
        return SingleLinkageTree(np.zeros(1, np.int64), np.zeros(1), 1)
    src, dst, w = _joined_components(n, src, dst, w)
    graph = hg.UndirectedGraph(n)
    graph.add_edges(src, dst)
    tree, alt = hg.binary_partition_tree_average_linkage(graph, w)
    parents = np.asarray(tree.parents(), np.int64)
    alt = np.asarray(alt, np.float64).copy()
    alt[:n] = 0.0
    # average linkage is monotone, but the float means can dip by an ulp below a child's: lift such parents
    # (children come before their parent, so one pass in index order settles every chain)
    bad = np.flatnonzero(alt[parents[:-1]] < alt[:-1])
    if bad.size:
        for i in range(int(bad[0]), len(alt) - 1):  # flatnonzero is sorted
            if alt[parents[i]] < alt[i]:
                alt[parents[i]] = alt[i]
    return SingleLinkageTree(parents, alt, n)


# ---------------------------------------------------------------------------------------------------------------
# Node attributes (computed once per tree, cached on it)


def attribute_area(tree: SingleLinkageTree) -> np.ndarray:
    """Number of leaves under every node.

    Shape: int64 [2N-1]. Complexity: O(N).

    >>> attribute_area(SingleLinkageTree(np.array([3, 3, 4, 4, 4]), np.array([0, 0, 0, 0.1, 0.5]), 3)).tolist()
    [1, 1, 1, 2, 3]
    """
    if "area" not in tree._cache:
        tree._cache["area"] = np.asarray(hg.attribute_area(_hg_tree(tree)), dtype=np.int64)
    return tree._cache["area"]


def attribute_leaf_start(tree: SingleLinkageTree) -> np.ndarray:
    """Position of each node's first leaf in a depth-first leaf order; a node's leaves are the run
    ``order[start : start + area]`` where ``order = leaf_order(tree)``.

    Definition: ``start[root] = 0``; the first child of ``n`` starts at ``start[n]``, the second at
    ``start[n] + area[first child]``. Shape: int64 [2N-1]. Complexity: O(N).

    >>> attribute_leaf_start(SingleLinkageTree(np.array([3, 3, 4, 4, 4]), np.array([0, 0, 0, 0.1, 0.5]), 3)).tolist()
    [1, 2, 0, 1, 0]
    """
    if "start" not in tree._cache:
        area = attribute_area(tree)
        n_nodes, n = tree.num_nodes, tree.num_leaves
        hgt = _hg_tree(tree)
        internal = np.arange(n, n_nodes)
        # Offset of each node inside its parent's run: the summed area of its lower-index siblings.
        offset = np.zeros(n_nodes, np.int64)
        if np.all(np.asarray(hgt.num_children(internal)) == 2):  # binary (every BPT): one gather
            first = np.minimum(hgt.child(0, internal), hgt.child(1, internal))
            second = np.maximum(hgt.child(0, internal), hgt.child(1, internal))
            offset[second] = area[first]
        else:
            par = tree.parents[:-1]
            order = np.argsort(par, kind="stable")  # children grouped by parent, in index order
            child_area = area[order]
            csum = np.cumsum(child_area)
            first_in_group = np.r_[True, par[order][1:] != par[order][:-1]]
            group_base = np.maximum.accumulate(np.where(first_in_group, np.arange(order.size), 0))
            offset[order] = csum - child_area - np.r_[0, csum][group_base]
        start = hg.propagate_sequential_and_accumulate(_hg_tree(tree), offset, hg.Accumulators.sum)
        tree._cache["start"] = np.asarray(start, dtype=np.int64)
    return tree._cache["start"]


def leaf_order(tree: SingleLinkageTree) -> np.ndarray:
    """The depth-first leaf order: ``order[attribute_leaf_start(tree)[leaf]] = leaf``.

    Shape: int64 [N].
    """
    if "order" not in tree._cache:
        order = np.empty(tree.num_leaves, np.int64)
        order[attribute_leaf_start(tree)[: tree.num_leaves]] = np.arange(tree.num_leaves)
        tree._cache["order"] = order
    return tree._cache["order"]


def _hg_tree(tree: SingleLinkageTree) -> "hg.Tree":
    if "hg" not in tree._cache:
        tree._cache["hg"] = hg.Tree(tree.parents)
    return tree._cache["hg"]


# ---------------------------------------------------------------------------------------------------------------
# Cuts


def relabel_by_size(labels: np.ndarray, max_segments: int = 200) -> np.ndarray:
    """Relabel an arbitrary partition ``labels`` (negative = unassigned) with the same rule as :func:`cut`:
    0..K-1 by decreasing size, ties by smallest member index, only ``max_segments`` kept, rest -1.

    Shape: int [N] -> int64 [N].

    >>> relabel_by_size(np.array([7, 7, 3, 5, 5, 5, -1]), max_segments=2).tolist()
    [1, 1, -1, 0, 0, 0, -1]
    """
    labels = np.asarray(labels).ravel()
    out = np.full(labels.size, -1, np.int64)
    ok = labels >= 0
    if not ok.any():
        return out
    ids, first, inv, sizes = np.unique(labels[ok], return_index=True, return_inverse=True, return_counts=True)
    first = np.flatnonzero(ok)[first]
    out[ok] = rank_segments(sizes, first, max_segments)[inv]
    return out


def cut(tree: SingleLinkageTree, threshold: float, max_segments: int = 200) -> np.ndarray:
    """Segments at one threshold: connected components of the graph's edges with weight ``< threshold``.

    Labels ``0..K-1`` by decreasing size (ties: smaller smallest vertex index first); only the ``max_segments``
    largest kept, the rest -1 (Sec. 4.2: the N = 200 largest).

    Shape: int64 [N]. Complexity: O(N) (after the once-per-tree preprocessing).

    >>> t = single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> cut(t, 0.3).tolist(), cut(t, 0.6).tolist(), cut(t, 0.3, max_segments=1).tolist()
    ([1, 0, 0], [0, 0, 0], [-1, 0, 0])
    """
    return cut_many(tree, np.array([threshold], np.float64), max_segments=max_segments)[0]


def cut_many(tree: SingleLinkageTree, thresholds: np.ndarray, max_segments: int = 200) -> np.ndarray:
    """:func:`cut` at every threshold; rows are nested (a segment at ``t`` lies inside one segment at any
    ``t' > t``, up to the ``max_segments`` rule).

    Shape: ``thresholds`` float [T] -> int64 [T, N]. Complexity: O(N) per threshold.
    """
    th = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if th.ndim != 1 or np.isnan(th).any():
        raise TreeInputError(f"thresholds must be a 1-D array of numbers, got shape {th.shape}")
    if max_segments < 0:
        raise TreeInputError(f"max_segments must be >= 0, got {max_segments}")
    n = tree.num_leaves
    out = np.empty((th.size, n), np.int64)
    if n == 1:
        out[:] = 0 if max_segments > 0 else -1
        return out
    area = attribute_area(tree)
    start = attribute_leaf_start(tree)
    order = leaf_order(tree)
    parents, alt = tree.parents, tree.altitudes
    root = tree.root
    pos_root = np.empty(n, np.int64)
    marker = np.zeros(n, bool)
    for i, t in enumerate(th):
        merged = alt < t
        merged[:n] = True
        seg = merged & ~merged[parents]
        seg[root] = merged[root]
        roots = np.flatnonzero(seg)
        s = start[roots]
        marker[:] = False
        marker[s] = True
        pos_root[s] = roots
        run_starts = np.flatnonzero(marker)  # sorted run starts; the runs tile the leaf order
        run_roots = pos_root[run_starts]
        first = np.minimum.reduceat(order, run_starts)
        rank = rank_segments(area[run_roots], first, max_segments)
        run_of_pos = np.cumsum(marker) - 1
        out[i, order] = rank[run_of_pos]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Minimax (ultrametric) queries


#: Bottleneck edge index returned for a pair ``(p, p)``: its distance is 0.
SAME_VERTEX = -1
#: Bottleneck edge index returned for a pair in two different graph components: distance +inf.
DISCONNECTED = -2


def lowest_common_ancestors(tree: SingleLinkageTree, pairs: np.ndarray) -> np.ndarray:
    """LCA node of each vertex pair, vectorised (Higra ``LCAFast``: O(N log N) once per tree, O(1) a query).

    Shape: ``pairs`` int [Q, 2] -> int64 [Q] node indices (a leaf index when ``p == q``).

    >>> t = single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> lowest_common_ancestors(t, np.array([[0, 2], [1, 2], [1, 1]])).tolist()
    [4, 3, 1]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros(0, np.int64)
    if "lca" not in tree._cache:
        tree._cache["lca"] = hg.make_lca_fast(_hg_tree(tree))
    return np.asarray(tree._cache["lca"].lca(pairs[:, 0], pairs[:, 1]), dtype=np.int64)


def bottleneck_edges(tree: SingleLinkageTree, pairs: np.ndarray) -> np.ndarray:
    """Eq. 1: the bottleneck edge of each pair's minimax path, i.e. the building edge of its LCA.

    ``weights[bottleneck_edges(tree, pairs)]`` is the ultrametric distance (weights as given to the builder).

    Shape: ``pairs`` int [Q, 2] -> int64 [Q] indices into the builder's edge list, :data:`SAME_VERTEX` (-1)
    for ``p == q`` and :data:`DISCONNECTED` (-2) for pairs in different graph components.

    >>> t = single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> bottleneck_edges(t, np.array([[0, 2], [1, 2], [1, 1]])).tolist()
    [0, 1, -1]
    """
    if tree.mst_edge_map is None:
        raise TreeInputError("this tree carries no edge map; build it with single_linkage_tree()")
    node = lowest_common_ancestors(tree, pairs)
    n = tree.num_leaves
    out = np.full(len(node), SAME_VERTEX, dtype=np.int64)
    internal = node >= n
    e = tree.mst_edge_map[node[internal] - n]
    out[internal] = np.where(e >= 0, e, DISCONNECTED)
    return out
