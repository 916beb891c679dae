"""Graphs over pixels and points: 4-neighbour grids, kNN graphs, joining components, feature edge lengths,
and the mask-boundary prior. NumPy / SciPy only.

Every function returns an undirected edge list ``(src, dst)`` of int64 arrays with ``src < dst`` (sorted,
no duplicates, no self-loops) unless it says otherwise. Edge lengths are separate arrays, so one graph
serves any features.

- Sec. 4.1 of the paper (training): the kNN graph (k = 10) of the pixels sampled from one image, in
  image space, with feature-distance edge lengths.
- Sec. 4.2 (inference): the 4-neighbour pixel grid (2D) and the kNN graph (k = 16) of the fused point
  cloud (3D).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


class GraphInputError(ValueError):
    """Raised for malformed points, edges or parameters given to this module."""


def dedup_edges(sources: np.ndarray, targets: np.ndarray, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Undirected, deduplicated edge list without self-loops, sorted by ``(source, target)``, source < target.

    Shape: ``sources``, ``targets`` int [E] -> two int64 [E'] arrays.

    >>> dedup_edges(np.array([0, 1, 2, 2]), np.array([1, 0, 2, 0]), 3)
    (array([0, 0]), array([1, 2]))
    """
    s = np.asarray(sources, dtype=np.int64)
    t = np.asarray(targets, dtype=np.int64)
    a, b = np.minimum(s, t), np.maximum(s, t)
    keep = a != b
    key = sorted_unique(a[keep] * np.int64(num_vertices) + b[keep])
    return key // num_vertices, key % num_vertices


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D integer array by sorting: the same result, ~25x faster than the hash table NumPy 2.3+
    uses for ``np.unique`` on 45,000 keys spread over ``[0, 4096^2)`` (4.4 ms -> 0.16 ms; issue #24).

    >>> sorted_unique(np.array([3, 1, 3, 2])).tolist()
    [1, 2, 3]
    """
    s = np.sort(np.asarray(values).reshape(-1))
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def grid_graph_4(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """4-neighbour graph of an ``h x w`` pixel grid over flat indices ``i * w + j``.

    Horizontal edges first (row-major), then vertical ones; ``src < dst`` for every edge (not sorted).

    Shape: returns ``(src, dst)`` int64 [E] with ``E = h (w - 1) + (h - 1) w``.

    >>> grid_graph_4(2, 2)
    (array([0, 2, 0, 1]), array([1, 3, 2, 3]))
    """
    if h < 1 or w < 1:
        raise GraphInputError(f"grid must be at least 1x1, got {h}x{w}")
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    src = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    dst = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return src, dst


def knn_graph(points: np.ndarray, k: int = 16, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric k-nearest-neighbour graph of points (Euclidean, KD-tree).

    Each point is linked to its ``k`` nearest *other* points; the union of both directions is kept once.
    Duplicate points are linked like any other (at most ``k`` others per point even then).

    Shape: ``points`` [N, D] -> ``(src, dst)`` int64 [E], ``N k / 2 <= E <= N k``.
    Complexity: O(N k log N).

    >>> s, t = knn_graph(np.array([[0.0, 0], [1, 0], [5, 0]]), k=1)
    >>> s.tolist(), t.tolist()
    ([0, 1], [1, 2])
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise GraphInputError(f"points must be a finite [N, D] array, got shape {p.shape}")
    if k < 1:
        raise GraphInputError(f"k must be >= 1, got {k}")
    n = p.shape[0]
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    kq = min(k + 1, n)
    _, nbr = cKDTree(p).query(p, k=kq, workers=workers)
    nbr = nbr.reshape(n, kq).astype(np.int64)
    me = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], nbr.shape)
    # Drop self matches; with duplicate points self may be absent, so keep at most k others per row.
    other = nbr != me
    keep = other & (np.cumsum(other, axis=1) <= k)
    return dedup_edges(me[keep], nbr[keep], n)


def component_labels(num_vertices: int, src: np.ndarray, dst: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of a graph: ``(count, label of each vertex)`` (SciPy)."""
    adj = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(num_vertices, num_vertices))
    ncomp, lab = connected_components(adj, directed=False)
    return int(ncomp), lab


def connect_components(points: np.ndarray, src: np.ndarray, dst: np.ndarray, min_size: int = 1,
                       max_rounds: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Add the few shortest edges that join the components of a graph over ``points`` (Borůvka rounds).

    Each round, every component but the largest gains one edge to its nearest point in another component
    (exact, KD-tree); rounds repeat until one component remains. Components with fewer than ``min_size``
    vertices are left alone (debris: they stay apart and only join at ``+inf`` in a tree).

    Why: a kNN graph falls apart where objects do not touch (a chair beside a table), and a single-linkage
    tree over it could then never merge them at any finite threshold; one bridge per component lets the
    *feature* distance decide when they merge (the paper's scene level). In training it makes every sampled
    pair's ultrametric distance finite.

    Shape: ``points`` [N, D]; ``src``, ``dst`` int [E] -> deduplicated int64 [E'] edges (src < dst).
    Complexity: one ``connected_components`` call when already connected; O(C N log N) per round otherwise.

    >>> s, t = connect_components(np.array([[0.0], [1], [5], [6]]), np.array([0, 2]), np.array([1, 3]))
    >>> s.tolist(), t.tolist()
    ([0, 1, 2], [1, 2, 3])
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    s = np.asarray(src, dtype=np.int64)
    t = np.asarray(dst, dtype=np.int64)
    for _ in range(max_rounds):
        ncomp, lab = component_labels(n, s, t)
        sizes = np.bincount(lab, minlength=ncomp)
        big = np.flatnonzero(sizes >= max(min_size, 1))
        if len(big) <= 1:
            break
        in_big = np.isin(lab, big)
        largest = big[np.argmax(sizes[big])]
        new_s, new_t = [], []
        for c in big:
            if c == largest:
                continue
            inside = np.flatnonzero(lab == c)
            outside = np.flatnonzero(in_big & (lab != c))
            dist, j = cKDTree(pts[outside]).query(pts[inside], k=1)
            best = int(np.argmin(dist))
            new_s.append(inside[best])
            new_t.append(outside[j[best]])
        s = np.concatenate([s, np.asarray(new_s, dtype=np.int64)])
        t = np.concatenate([t, np.asarray(new_t, dtype=np.int64)])
    return dedup_edges(s, t, n)


def knn_pixel_graph(uv: np.ndarray, k: int = 10, connect: bool = True, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The training graph of Sec. 4.1: the sampled pixels of one image, each linked to its ``k`` (10) nearest in
    image space (:func:`knn_graph`); with ``connect`` its components are joined (:func:`connect_components`) so
    every pair has a finite ultrametric distance.

    Shape: ``uv`` float [P, 2] -> ``(src, dst)`` int64 [E].

    >>> s, t = knn_pixel_graph(np.array([[0.0, 0], [1, 0], [5, 0], [6, 0]]), k=1)
    >>> s.tolist(), t.tolist()
    ([0, 1, 2], [1, 2, 3])
    """
    src, dst = knn_graph(uv, k=k, workers=workers)
    return connect_components(uv, src, dst) if connect else (src, dst)


def feature_distances(features: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Edge lengths ``1 - cos(f_src, f_dst)`` (the paper's feature distance, Sec. 4.1), clipped to [0, 2].

    Shape: ``features`` [N, D], ``src``/``dst`` [E] -> float64 [E]. Memory: the features plus ~64 MiB (edges are
    taken in chunks).

    >>> feature_distances(np.array([[1.0, 0], [0, 2.0]]), np.array([0]), np.array([1]))
    array([1.])
    """
    f = np.asarray(features)
    src, dst = np.asarray(src), np.asarray(dst)
    out = np.empty(len(src), np.float64)
    # Edges in chunks of about 64 MiB of gathered float64 rows: memory bounded by the chunk, not by E x D (E is
    # ~k N: gathering every edge's two rows at once took E x D x 16 bytes, 6.5 GB for 200k points of 256-d).
    step = max(256, (64 << 20) // (16 * max(f.shape[1] if f.ndim == 2 else 1, 1)))
    for i in range(0, len(src), step):
        a = f[src[i:i + step]].astype(np.float64)
        b = f[dst[i:i + step]].astype(np.float64)
        a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        out[i:i + step] = 1.0 - np.einsum("ed,ed->e", a, b)
    return np.clip(out, 0.0, 2.0, out=out)


def core_distances(num_vertices: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """``m``-th smallest edge length at every vertex (HDBSCAN's core distance, Campello et al. 2013, taken over
    the vertex's graph edges), float64 [N]. Vertices with fewer than ``m`` edges get their largest edge (0 without
    edges).

    >>> core_distances(3, np.array([0, 0]), np.array([1, 2]), np.array([0.1, 0.3]), 2).tolist()
    [0.3, 0.1, 0.3]
    """
    n = int(num_vertices)
    ends = np.concatenate([src, dst]).astype(np.int64)
    lens = np.concatenate([w, w]).astype(np.float64)
    order = np.lexsort((lens, ends))
    ends, lens = ends[order], lens[order]
    first = np.searchsorted(ends, np.arange(n), side="left")
    count = np.searchsorted(ends, np.arange(n), side="right") - first
    core = np.zeros(n, np.float64)
    has = count > 0
    core[has] = lens[first[has] + np.minimum(m, count[has]) - 1]
    return core


def mutual_reachability(num_vertices: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray,
                        min_samples: int) -> np.ndarray:
    """Edge lengths ``max(w, core(src), core(dst))`` (HDBSCAN's mutual reachability over a kNN graph), float64 [E].

    Single linkage over these lengths is robust to a few points lying between two clusters: a path through them
    costs at least their core distance. ``min_samples <= 0`` returns ``w`` unchanged.
    """
    w = np.asarray(w, np.float64)
    if min_samples <= 0 or len(w) == 0:
        return w
    core = core_distances(num_vertices, src, dst, w, min_samples)
    return np.maximum(w, np.maximum(core[src], core[dst]))


def point_normals(points: np.ndarray, k: int = 16, block: int = 65536) -> np.ndarray:
    """Unoriented unit surface normals of a point cloud: the least-variance axis of each point's ``k`` nearest
    points (itself included; PCA, the usual point-cloud normal). Sign is arbitrary; compare with ``|n_a . n_b|``.

    Shape: ``points`` [N, 3] -> float64 [N, 3]. Memory: ``block`` points' neighbourhoods at a time.

    >>> n = point_normals(np.array([[x, y, 0.0] for x in range(3) for y in range(3)]), k=5)
    >>> np.abs(n[:, 2]).round(3).tolist() == [1.0] * 9
    True
    """
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
        raise GraphInputError(f"points must be a finite [N, 3] array, got shape {p.shape}")
    n = len(p)
    out = np.zeros((n, 3))
    if n < 3:
        out[:, 2] = 1.0
        return out
    k = min(max(k, 3), n)
    tree = cKDTree(p)
    for i in range(0, n, block):
        _, nb = tree.query(p[i:i + block], k=k)
        x = p[nb]
        x -= x.mean(axis=1, keepdims=True)
        _, vec = np.linalg.eigh(np.einsum("nki,nkj->nij", x, x))
        out[i:i + block] = vec[:, :, 0]  # eigh sorts ascending: the first axis is the normal
    return out


def crease_edges(normals: np.ndarray, src: np.ndarray, dst: np.ndarray, angle_deg: float) -> np.ndarray:
    """Bool [E]: edges whose end points' (unoriented) normals differ by more than ``angle_deg``, i.e. edges that
    cross a fold of the surface (a cup standing on a table, a wall meeting the floor, two faces of a box).

    >>> crease_edges(np.array([[0, 0, 1.0], [0, 0, -1], [1, 0, 0]]), np.array([0, 0]), np.array([1, 2]), 30).tolist()
    [False, True]
    """
    cos = np.abs(np.einsum("ed,ed->e", normals[src], normals[dst]))
    return cos < np.cos(np.radians(angle_deg))


def orient_normals(normals: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """Normals flipped to face ``toward`` (per point, e.g. the direction to the cameras that saw it: a visible
    surface faces its camera); rows where ``toward`` is zero or perpendicular keep their sign.

    Shape: ``normals``, ``toward`` [N, 3] -> float64 [N, 3].

    >>> orient_normals(np.array([[0, 0, 1.0], [0, 0, 1.0]]), np.array([[0, 0, -2.0], [0, 0, 0]])).tolist()
    [[-0.0, -0.0, -1.0], [0.0, 0.0, 1.0]]
    """
    n = np.asarray(normals, np.float64)
    flip = np.einsum("nd,nd->n", n, np.asarray(toward, np.float64)) < 0
    return np.where(flip[:, None], -n, n)


def concave_edges(points: np.ndarray, normals: np.ndarray, src: np.ndarray, dst: np.ndarray,
                  angle_deg: float) -> np.ndarray:
    """Bool [E]: edges across a *concave* fold of at least ``angle_deg``: the end points' normals differ by more
    than the angle and turn towards each other along the edge, ``(n_dst - n_src) . (p_dst - p_src) < 0`` (for
    ``normals`` oriented out of the surface, :func:`orient_normals`).

    Where one object rests on or against another (a cup on a table, a sofa on the floor, two walls in a corner)
    the surface folds inward; the faces of one convex object (a box's edges, a cup's rim) fold outward. This is
    the minima rule of part perception (Hoffman and Richards 1984; concave edges separate parts, as in LCCP
    point-cloud segmentation, Stein et al. 2014). With oriented normals a smaller angle than
    :func:`crease_edges` needs can be used, catching contacts where the fitted normals turn gradually, without
    cutting rounded convex objects.

    >>> pts = np.array([[0, 0, 0.0], [1, 0, 0.01], [0, 0, 0], [1, 0, -0.01]])
    >>> up, tilted_in, tilted_out = [0, 0, 1.0], [-0.5, 0, 0.87], [0.5, 0, 0.87]
    >>> n = np.array([up, tilted_in, up, tilted_out])   # a floor meeting a wall vs a box's rounded edge
    >>> concave_edges(pts, n, np.array([0, 2]), np.array([1, 3]), 10).tolist()
    [True, False]
    """
    p = np.asarray(points, np.float64)
    n = np.asarray(normals, np.float64)
    turn = np.einsum("ed,ed->e", n[dst] - n[src], p[dst] - p[src])
    return (turn < 0) & crease_edges(n, src, dst, angle_deg)


def fold_contrast(num_vertices: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, folds: np.ndarray,
                  hops: int = 2) -> np.ndarray:
    """The feature contrast of the fold each edge lies on: for every point, the mean ``w`` of the fold edges within
    ``hops`` graph hops (1: the fold edges at the point; 2: also those at its graph neighbours), and for an edge the
    mean of its two end points' values (0 where no fold edge is near).

    Where two objects touch, the field blends their features over a few points, so a handful of the contact's fold
    edges are as short as edges inside one object while most are long; single linkage would merge the two at the
    shortest. The fold's regional mean says how different the two sides are (:func:`crease_lengths` uses it).

    Shape: ``src``, ``dst`` int [E], ``w`` float [E], ``folds`` bool [E] -> float64 [E]. Complexity O(E hops).

    >>> src, dst = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])   # a chain; edges 1 and 2 cross one fold
    >>> w, folds = np.array([0.0, 0.01, 0.5, 0.0]), np.array([False, True, True, False])
    >>> fold_contrast(5, src, dst, w, folds, hops=1).round(4).tolist()   # the blended edge 1: 0.01 -> 0.1325
    [0.005, 0.1325, 0.3775, 0.25]
    """
    if hops < 1:
        raise GraphInputError(f"hops must be >= 1, got {hops}")
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    w, folds = np.asarray(w, np.float64), np.asarray(folds, bool)
    fs, fd, fw = src[folds], dst[folds], w[folds]
    total = np.bincount(fs, fw, num_vertices) + np.bincount(fd, fw, num_vertices)
    count = np.bincount(fs, None, num_vertices) + np.bincount(fd, None, num_vertices)
    for _ in range(hops - 1):  # add the sums and counts of the graph neighbours
        total = total + np.bincount(src, total[dst], num_vertices) + np.bincount(dst, total[src], num_vertices)
        count = count + np.bincount(src, count[dst], num_vertices) + np.bincount(dst, count[src], num_vertices)
    point = np.divide(total, count, out=np.zeros(num_vertices), where=count > 0)
    return 0.5 * (point[src] + point[dst])


def crease_lengths(w: np.ndarray, crease: np.ndarray, cost: float | None = None,
                   contrast: np.ndarray | None = None) -> np.ndarray:
    """Edge lengths with a geometric cost added where the surface folds: ``w + c`` on crease edges, ``w``
    elsewhere, with ``c = cost``, or when None the median ``w`` of the crease edges (scale-free: a fold costs one
    typical step across a fold). Two objects in contact meet at a fold; in the field their features blend over
    about a grid cell, so a few of their contact edges are as short as edges inside an object and single linkage
    chains them there. With the cost, surfaces that meet at a fold merge after the smooth surfaces they are made
    of, in the order of their feature distance; faces of one object (feature distance ~0) still merge before two
    objects do.

    With ``contrast`` (:func:`fold_contrast`) a crease edge's own ``w`` is raised to the contrast of its fold when
    that is larger: the few contact edges where the field blends two objects' features then cost what the contact
    as a whole costs, and two objects merge in the order of how different they are, not of their most blended
    point. The cost ``c`` is still the median of the crease edges' own ``w``.

    Shape: ``w`` float [E], ``crease`` bool [E], ``contrast`` float [E] or None -> float64 [E].

    >>> crease_lengths(np.array([0.01, 0.02, 0.04]), np.array([False, True, True])).tolist()
    [0.01, 0.05, 0.07]
    >>> crease_lengths(np.array([0.01, 0.02, 0.04]), np.array([False, True, True]), 0.1, np.full(3, 0.03)).tolist()
    [0.01, 0.13, 0.14]
    """
    w = np.asarray(w, np.float64)
    if not crease.any():
        return w
    c = np.median(w[crease]) if cost is None else float(cost)
    if contrast is None:
        return w + c * crease
    return np.where(crease, np.maximum(w, np.asarray(contrast, np.float64)) + c, w)


def mask_boundary_crossings(sources: np.ndarray, targets: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Edges that cross a mask boundary: endpoints differ in membership of at least one mask.

    Implemented on bit-packed membership rows (one byte per 8 masks per pixel), so ``O(E * M / 8)``.

    Shape: ``sources``, ``targets`` int [E]; ``masks`` bool [M, P] -> bool [E].

    >>> m = np.array([[1, 1, 0], [0, 1, 1]], bool)
    >>> mask_boundary_crossings(np.array([0, 1, 0]), np.array([1, 2, 0]), m).tolist()
    [True, True, False]
    """
    masks = np.asarray(masks, dtype=bool)
    sources = np.asarray(sources, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if masks.ndim != 2:
        raise GraphInputError(f"masks must be bool [M, P], got shape {masks.shape}")
    if masks.shape[0] == 0:
        return np.zeros(len(sources), dtype=bool)
    packed = np.packbits(masks, axis=0)  # [ceil(M/8), P] uint8
    nbytes = packed.shape[0]
    words = -(-nbytes // 8)
    wide = np.zeros((packed.shape[1], 8 * words), np.uint8)  # each pixel's row as ``words`` 64-bit integers
    wide[:, :nbytes] = packed.T
    key = wide.view(np.uint64)
    out = key[sources, 0] != key[targets, 0]
    for w in range(1, words):  # 120 masks: 2 words; comparing words, not bytes: 1.6 -> 1.0 ms (issue #24)
        out |= key[sources, w] != key[targets, w]
    return out


def mask_boundary_prior(sources: np.ndarray, targets: np.ndarray, masks: np.ndarray,
                        weight: float = 10.0) -> np.ndarray:
    """Tree-building prior of the authors' released code: ``weight`` (+10) on every edge that crosses a mask
    boundary (not in the paper).

    Added to the edge lengths only when building the tree, so minimax paths prefer to stay inside masks; the
    distances themselves (and their gradients) are read from the unmodified feature lengths.

    Shape: ``sources``, ``targets`` int [E]; ``masks`` bool [M, P] -> float64 [E] (0 or ``weight``).

    >>> m = np.array([[1, 1, 0]], bool)
    >>> mask_boundary_prior(np.array([0, 1]), np.array([1, 2]), m).tolist()
    [0.0, 10.0]
    """
    return weight * mask_boundary_crossings(sources, targets, masks).astype(np.float64)
