"""Single-linkage segmentation trees over pixel / point graphs, and their cuts at any threshold.

PAPER.md, "Inference": the connected components of the feature graph's edges shorter than ``t`` form the
segmentation at granularity ``t``; the components of all thresholds form one single-linkage dendrogram, so
the tree (the canonical binary partition tree of a minimum spanning forest, Kruskal order) is built ONCE and
every threshold is a cheap, vectorised cut of it. Labels at increasing thresholds are nested.

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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


class SegTreeInputError(ValueError):
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
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.parents = np.asarray(self.parents, dtype=np.int64)
        self.altitudes = np.asarray(self.altitudes, dtype=np.float64)
        n = int(self.num_leaves)
        self.num_leaves = n
        if n < 1:
            raise SegTreeInputError(f"a tree needs at least one leaf, got num_leaves={n}")
        if self.parents.shape != (2 * n - 1,) or self.altitudes.shape != (2 * n - 1,):
            raise SegTreeInputError(
                f"expected parents and altitudes of shape ({2 * n - 1},) for {n} leaves, "
                f"got {self.parents.shape} and {self.altitudes.shape}")
        root = 2 * n - 2
        idx = np.arange(root)
        if self.parents[root] != root or np.any(self.parents[:root] <= idx) or np.any(self.parents > root):
            raise SegTreeInputError("parents must be in topological order: parents[n] > n, root last and its own parent")
        if np.isnan(self.altitudes).any():
            raise SegTreeInputError("altitudes contain NaN")
        if np.any(self.altitudes[self.parents[:root]] < self.altitudes[:root]):
            raise SegTreeInputError("altitudes must not decrease from a node to its parent")

    @property
    def num_nodes(self) -> int:
        """``2N - 1``."""
        return int(self.parents.shape[0])

    @property
    def root(self) -> int:
        """Index of the root (the last node)."""
        return self.num_nodes - 1


# ---------------------------------------------------------------------------------------------------------------
# Graphs


def grid_graph_4(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour graph of an ``h x w`` pixel grid over flat indices ``i * w + j``.

    Horizontal edges first (row-major), then vertical ones; ``src < dst`` for every edge.

    Shape: returns ``(src, dst)`` int64 [E] with ``E = h (w - 1) + (h - 1) w``.

    >>> grid_graph_4(2, 2)
    (array([0, 2, 0, 1]), array([1, 3, 2, 3]))
    """
    if h < 1 or w < 1:
        raise SegTreeInputError(f"grid must be at least 1x1, got {h}x{w}")
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    src = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    dst = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return src, dst


def knn_graph(points: np.ndarray, k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric k-nearest-neighbour graph of a point cloud (PAPER.md "Inference / 3D", k = 16).

    Each point is linked to its ``k`` nearest other points (Euclidean, KD-tree); the union of both directions is
    kept once, as ``src < dst``, sorted by ``(src, dst)``. Duplicate points are linked like any other.

    Shape: ``points`` [N, D] -> ``(src, dst)`` int64 [E], ``E <= N k``.
    Complexity: O(N k log N).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise SegTreeInputError(f"points must be a finite [N, D] array, got shape {p.shape}")
    if k < 1:
        raise SegTreeInputError(f"k must be >= 1, got {k}")
    n = p.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kq = min(k + 1, n)
    _, nbr = cKDTree(p).query(p, k=kq)
    nbr = nbr.reshape(n, kq).astype(np.int64)
    me = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], nbr.shape)
    # Drop self matches; with duplicate points self may be absent, so keep at most k others per row.
    other = nbr != me
    rank = np.cumsum(other, axis=1)
    keep = other & (rank <= k)
    a, b = me[keep], nbr[keep]
    key = np.unique(np.minimum(a, b) * n + np.maximum(a, b))
    return key // n, key % n


def feature_distances(features: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Edge lengths ``1 - cos(f_src, f_dst)`` (the paper's feature distance), clipped to [0, 2].

    Shape: ``features`` [N, D], ``src``/``dst`` [E] -> float64 [E].

    >>> feature_distances(np.array([[1.0, 0], [0, 2.0]]), np.array([0]), np.array([1]))
    array([1.])
    """
    f = np.asarray(features, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return np.clip(1.0 - np.einsum("ed,ed->e", f[src], f[dst]), 0.0, 2.0)


# ---------------------------------------------------------------------------------------------------------------
# Tree construction


def single_linkage_tree(num_vertices: int, src: np.ndarray, dst: np.ndarray,
                        weights: np.ndarray) -> SingleLinkageTree:
    """Single-linkage tree (canonical binary partition tree of the minimum spanning forest) of a weighted graph.

    Definition: merge the two regions at the ends of each edge in increasing weight order (Kruskal); every
    merge is a node at altitude = that weight. The ultrametric ``d(p, q)`` = altitude of the lowest common
    ancestor = the minimax path weight (PAPER.md Eq. 1-2). Connected components of the graph are joined
    under ``+inf`` nodes. Built with ``higra.bpt_canonical``.

    Shape: ``src``, ``dst`` int [E], ``weights`` float [E] (finite) -> tree with ``2 * num_vertices - 1`` nodes.
    Complexity: O(E log E).

    >>> t = single_linkage_tree(3, np.array([0, 1]), np.array([1, 2]), np.array([0.5, 0.2]))
    >>> t.parents.tolist(), t.altitudes.tolist()
    ([4, 3, 3, 4, 4], [0.0, 0.0, 0.0, 0.2, 0.5])
    """
    n = int(num_vertices)
    if n < 1:
        raise SegTreeInputError(f"num_vertices must be >= 1, got {n}")
    src = np.asarray(src, dtype=np.int64).ravel()
    dst = np.asarray(dst, dtype=np.int64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not (src.shape == dst.shape == w.shape):
        raise SegTreeInputError(f"src, dst, weights must have equal length, got {src.shape}, {dst.shape}, {w.shape}")
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise SegTreeInputError(f"edge endpoints must lie in [0, {n})")
    if not np.isfinite(w).all():
        raise SegTreeInputError("edge weights must be finite")
    if n == 1:
        return SingleLinkageTree(np.zeros(1, np.int64), np.zeros(1), 1)
    order = np.argsort(w)
    try:
        tree, alt = _bpt(n, src, dst, w, order)
    except RuntimeError as exc:  # higra refuses disconnected graphs
        if "connected" not in str(exc):
            raise
        ncomp, comp = connected_components(
            coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(n, n)), directed=False)
        # One representative per component, all joined to component 0's by +inf edges (sorted last).
        _, reps = np.unique(comp, return_index=True)
        m = src.size
        src = np.concatenate([src, np.full(ncomp - 1, reps[0], np.int64)])
        dst = np.concatenate([dst, reps[1:].astype(np.int64)])
        w = np.concatenate([w, np.full(ncomp - 1, np.inf)])
        tree, alt = _bpt(n, src, dst, w, np.concatenate([order, np.arange(m, m + ncomp - 1)]))
    return SingleLinkageTree(np.asarray(tree.parents(), np.int64), np.asarray(alt, np.float64), n)


def _bpt(n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, order: np.ndarray):
    graph = hg.UndirectedGraph(n)
    graph.add_edges(src, dst)
    return hg.bpt_canonical(graph, w, sorted_edge_indices=order, compute_mst=False)


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


def rank_segments(sizes: np.ndarray, first: np.ndarray, max_segments: int) -> np.ndarray:
    """Rank of each segment by decreasing size (ties: smaller first member index first); -1 beyond
    ``max_segments``. This canonical order makes labels a function of the partition alone.

    Shape: ``sizes``, ``first`` int [K] -> int64 [K]. Complexity: O(K + max_segments log max_segments).

    >>> rank_segments(np.array([1, 3, 3, 2]), np.array([0, 5, 1, 2]), 3).tolist()
    [-1, 1, 0, 2]
    """
    sizes = np.asarray(sizes, np.int64)
    first = np.asarray(first, np.int64)
    k = sizes.size
    rank = np.full(k, -1, np.int64)
    if k == 0 or max_segments <= 0:
        return rank
    if k <= max_segments:
        chosen = np.arange(k)
    else:
        cutoff = np.partition(sizes, k - max_segments)[k - max_segments]  # the max_segments-th largest size
        above = np.flatnonzero(sizes > cutoff)
        tied = np.flatnonzero(sizes == cutoff)
        need = max_segments - above.size
        if need < tied.size:
            tied = tied[np.argpartition(first[tied], need - 1)[:need]]
        chosen = np.concatenate([above, tied])
    chosen = chosen[np.lexsort((first[chosen], -sizes[chosen]))]
    rank[chosen] = np.arange(chosen.size)
    return rank


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
    largest kept, the rest -1 (PAPER.md: N = 200).

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
        raise SegTreeInputError(f"thresholds must be a 1-D array of numbers, got shape {th.shape}")
    if max_segments < 0:
        raise SegTreeInputError(f"max_segments must be >= 0, got {max_segments}")
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
# 2D segmentation and label propagation


def segment_feature_map(features: np.ndarray, thresholds: np.ndarray, max_segments: int = 200,
                        valid: np.ndarray | None = None) -> np.ndarray:
    """2D inference (PAPER.md "Inference / 2D"): 4-neighbour pixel graph with ``1 - cos`` edge lengths, one
    single-linkage tree, a cut per threshold. Pixels outside ``valid`` are not in the graph and get -1.

    Shape: ``features`` [H, W, D], ``valid`` bool [H, W] -> int64 [T, H, W].
    """
    f = np.asarray(features)
    if f.ndim != 3:
        raise SegTreeInputError(f"features must be [H, W, D], got shape {f.shape}")
    h, w, d = f.shape
    th = np.atleast_1d(np.asarray(thresholds, np.float64))
    out = np.full((th.size, h * w), -1, np.int64)
    valid_flat = np.ones(h * w, bool) if valid is None else np.asarray(valid, bool).reshape(-1)
    if valid_flat.size != h * w:
        raise SegTreeInputError(f"valid must be [H, W] = [{h}, {w}], got {np.shape(valid)}")
    nv = int(valid_flat.sum())
    if nv == 0:
        return out.reshape(th.size, h, w)
    src, dst = grid_graph_4(h, w)
    keep = valid_flat[src] & valid_flat[dst]
    new_id = np.cumsum(valid_flat) - 1
    feats = f.reshape(h * w, d)[valid_flat]
    s, t = new_id[src[keep]], new_id[dst[keep]]
    tree = single_linkage_tree(nv, s, t, feature_distances(feats, s, t))
    out[:, valid_flat] = cut_many(tree, th, max_segments=max_segments)
    return out.reshape(th.size, h, w)


def mode_vote(votes: np.ndarray) -> np.ndarray:
    """Mode of each row of neighbour labels, nearest-first (``-1`` does not vote; ties go to the nearest tied
    label; a row with no vote gives -1).

    Shape: ``votes`` int [Q, k] (columns ordered by distance) -> int64 [Q].

    >>> mode_vote(np.array([[3, 5, 5], [3, 5, -1], [-1, -1, -1]])).tolist()
    [5, 3, -1]
    """
    votes = np.asarray(votes, np.int64)
    counts = (votes[:, :, None] == votes[:, None, :]).sum(-1) * (votes >= 0)  # [Q, k] count of each label
    winner = votes[np.arange(votes.shape[0]), np.argmax(counts, axis=1)]  # first max = nearest among ties
    winner[counts.max(axis=1, initial=0) == 0] = -1
    return winner


def propagate_labels(points: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int = 5,
                     max_distance: float = 5e-3) -> np.ndarray:
    """Label new points by the mode of the ``k`` nearest labelled points (PAPER.md "Inference / 3D").

    Only points with ``labels >= 0`` vote. A query is unassigned (-1) when its nearest labelled point is farther
    than ``max_distance``. Ties in the vote go to the label of the nearest among the tied neighbours.

    Shape: ``points`` [N, 3], ``labels`` int [N], ``queries`` [Q, 3] -> int64 [Q].

    >>> pts = np.array([[0.0, 0, 0], [0.001, 0, 0], [0.002, 0, 0], [1, 0, 0]])
    >>> propagate_labels(pts, np.array([4, 4, 7, 7]), np.array([[0.0021, 0, 0], [0.5, 0, 0]]), k=3).tolist()
    [4, -1]
    """
    pts = np.asarray(points, np.float64)
    lab = np.asarray(labels).ravel()
    q = np.asarray(queries, np.float64)
    if pts.ndim != 2 or q.ndim != 2 or pts.shape[1] != q.shape[1] or lab.size != pts.shape[0]:
        raise SegTreeInputError(
            f"expected points [N, D], labels [N], queries [Q, D]; got {pts.shape}, {lab.shape}, {q.shape}")
    if k < 1:
        raise SegTreeInputError(f"k must be >= 1, got {k}")
    out = np.full(q.shape[0], -1, np.int64)
    ok = lab >= 0
    if not ok.any() or q.shape[0] == 0:
        return out
    ref, ref_lab = pts[ok], lab[ok].astype(np.int64)
    kk = min(k, ref.shape[0])
    dist, idx = cKDTree(ref).query(q, k=kk)
    dist = dist.reshape(q.shape[0], kk)
    winner = mode_vote(ref_lab[idx.reshape(q.shape[0], kk)])
    near = dist[:, 0] <= max_distance
    out[near] = winner[near]
    return out
