"""Hierarchical pair sampling (Algorithm 1) and depth-continuity stencils (Eq. 5), vectorised and seeded.

Hierarchical sampling (Sec. 4.1 "Hierarchical Sampling", Algorithm 1 of the supplementary): the masks of one
image form a :class:`~backend.core.mask_tree.MaskTree` (all-true root last). For every non-root node ``A`` with parent
``B``:

- ``n_pos`` *positive* pairs: two pixels of ``A`` (uniform, with replacement);
- ``n_neg`` *negative* pairs: one pixel of ``A`` and one pixel of ``B \\ A`` (uniform, with replacement).

Walking from each leaf up to the root visits every non-root node once, so sampling every non-root node is exactly
Algorithm 1 (shared ancestors are sampled once, not once per leaf). Each pair keeps the *level* of its node (its
depth, 1 = child of the root) so the loss compares positives and negatives of the same level only: a pair that is
negative at a fine level can be positive one level up. ``n_neg = 4 * n_pos`` gives the paper's 4:1 variant.

With ``reuse_negatives`` (the authors' code; Algorithm 1 read literally, where the pair that is negative for
``A`` inside ``B`` becomes a positive of ``B`` one level up), the positives of a node that has children are its
children's negative pairs (a pixel of child ``A`` and one of ``B \\ A``, drawn uniformly among all children's
negatives) instead of fresh pairs: at ``B``'s level exactly the pixels pushed apart one level down are pulled
together, tying consecutive levels. Without it each level is sampled independently.

Everything is array code: one ``flatnonzero`` per mask set plus random offsets (no Python loop over pairs or masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.mask_tree import MaskTree


@dataclass(frozen=True)
class PairSet:
    """Pixel pairs for the contrastive loss; all arrays have one entry per pair (length ``Q``)."""

    first: np.ndarray
    """int64 [Q]: index (into the ``P`` sampled pixels) of the pair's first pixel (inside the node's mask)."""
    second: np.ndarray
    """int64 [Q]: index of the second pixel (inside the node's mask for positives, in ``parent \\ node`` for
    negatives)."""
    positive: np.ndarray
    """bool [Q]: True for a positive pair (same mask), False for a negative pair."""
    level: np.ndarray
    """int64 [Q]: depth of the tree node the pair was drawn for (1 = child of the root)."""
    node: np.ndarray
    """int64 [Q]: the tree node the pair was drawn for."""

    def __post_init__(self) -> None:
        n = len(self.first)
        for name in ("second", "positive", "level", "node"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PairSet.{name} has {len(getattr(self, name))} entries, expected {n}")

    def __len__(self) -> int:
        return len(self.first)

    @property
    def pairs(self) -> np.ndarray:
        """int64 [Q, 2]: ``(first, second)`` stacked, the layout :func:`backend.method.ultrametric.ultrametric_distance`
        takes."""
        return np.stack([self.first, self.second], axis=1).astype(np.int64, copy=False)

    def subset(self, keep: np.ndarray) -> "PairSet":
        """Pairs selected by a bool mask or an index array."""
        return PairSet(self.first[keep], self.second[keep], self.positive[keep], self.level[keep], self.node[keep])

    @staticmethod
    def empty() -> "PairSet":
        """A set without pairs."""
        z = np.zeros(0, np.int64)
        return PairSet(z, z.copy(), np.zeros(0, bool), z.copy(), z.copy())


def draw_members(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniform draws (with replacement) of a member column of each row of a boolean matrix.

    The ``r``-th member of row ``i`` is found through the row-major ``flatnonzero`` of the matrix and the row's
    offset in it, so all draws are one gather. Every row must have at least one member.

    Shape: ``rows`` bool [N, P] -> int64 [N, count] column indices. ``O(N P + N count)``.

    >>> m = np.array([[0, 1, 0, 1], [1, 0, 0, 0]], bool)
    >>> d = draw_members(m, 5, np.random.default_rng(0))
    >>> bool(np.isin(d[0], [1, 3]).all()), d[1].tolist()
    (True, [0, 0, 0, 0, 0])
    """
    rows = np.asarray(rows, dtype=bool)
    n, p = rows.shape
    cnt = rows.sum(axis=1, dtype=np.int64)
    if n and np.any(cnt == 0):
        raise ValueError("draw_members: every row needs at least one member")
    flat = np.flatnonzero(rows)
    start = np.cumsum(cnt) - cnt
    offs = np.floor(rng.random((n, count)) * cnt[:, None]).astype(np.int64)
    offs = np.minimum(offs, cnt[:, None] - 1)  # guard rng.random() * cnt rounding up to cnt
    return flat[start[:, None] + offs] % p


def sample_hierarchical_pairs(tree: MaskTree, rng: np.random.Generator, n_pos: int = 64,
                              n_neg: int = 64, reuse_negatives: bool = False) -> PairSet:
    """Algorithm 1: ``n_pos`` positive and ``n_neg`` negative pairs for every non-root node of ``tree``.

    Output order: all positives (node by node, increasing node index), then all negatives (same node order).
    Nodes whose remainder ``parent \\ node`` is empty (impossible with ``p_iou < 1``) or that are empty are
    skipped. Deterministic for a given ``rng`` state.

    Shape: tree with ``M' + 1`` nodes over ``P`` pixels -> :class:`PairSet` with ``(n_pos + n_neg) * M'`` pairs.

    >>> from backend.core.mask_tree import mask_tree
    >>> m = np.zeros((2, 12), bool); m[0, :8] = True; m[1, :3] = True
    >>> ps = sample_hierarchical_pairs(mask_tree(m, min_size=1), np.random.default_rng(0), n_pos=2, n_neg=2)
    >>> ps.level.tolist(), ps.positive.tolist()
    ([1, 1, 2, 2, 1, 1, 2, 2], [True, True, True, True, False, False, False, False])
    """
    if n_pos < 0 or n_neg < 0:
        raise ValueError(f"n_pos and n_neg must be >= 0, got {n_pos}, {n_neg}")
    nodes = np.arange(tree.root, dtype=np.int64)  # every node but the root
    if len(nodes) == 0:
        return PairSet.empty()
    inside = tree.masks[nodes]
    remainder = tree.masks[tree.parent[nodes]] & ~inside
    ok = inside.any(axis=1) & remainder.any(axis=1)
    nodes, inside, remainder = nodes[ok], inside[ok], remainder[ok]
    if len(nodes) == 0:
        return PairSet.empty()
    pos = draw_members(inside, 2 * n_pos, rng).reshape(len(nodes), n_pos, 2)
    neg_a = draw_members(inside, n_neg, rng)
    neg_b = draw_members(remainder, n_neg, rng)
    if reuse_negatives and n_neg > 0 and n_pos > 0:
        _reuse_negatives(tree, nodes, pos, neg_a, neg_b, rng)
    node_pos = np.repeat(nodes, n_pos)
    node_neg = np.repeat(nodes, n_neg)
    node = np.concatenate([node_pos, node_neg])
    return PairSet(first=np.concatenate([pos[..., 0].reshape(-1), neg_a.reshape(-1)]),
                   second=np.concatenate([pos[..., 1].reshape(-1), neg_b.reshape(-1)]),
                   positive=np.concatenate([np.ones(len(node_pos), bool), np.zeros(len(node_neg), bool)]),
                   level=tree.depth[node].astype(np.int64), node=node)


def _reuse_negatives(tree: MaskTree, nodes: np.ndarray, pos: np.ndarray, neg_a: np.ndarray, neg_b: np.ndarray,
                     rng: np.random.Generator) -> None:
    """Overwrite (in place) the positives ``pos`` [N, n_pos, 2] of every sampled node that has sampled children
    with uniform draws among its children's negative pairs (``neg_a``, ``neg_b`` [N, n_neg])."""
    row_of = np.full(tree.num_nodes, -1, np.int64)
    row_of[nodes] = np.arange(len(nodes))
    parent_row = row_of[tree.parent[nodes]]  # -1: the parent is the root or was not sampled
    child = np.flatnonzero(parent_row >= 0)
    if len(child) == 0:
        return
    order = child[np.argsort(parent_row[child], kind="stable")]
    prow = parent_row[order]
    parents, first, count = np.unique(prow, return_index=True, return_counts=True)
    n_pos, n_neg = pos.shape[1], neg_a.shape[1]
    pick = np.minimum((rng.random((len(parents), n_pos)) * count[:, None]).astype(np.int64), count[:, None] - 1)
    pick_child = order[first[:, None] + pick]
    pick_neg = np.minimum((rng.random((len(parents), n_pos)) * n_neg).astype(np.int64), n_neg - 1)
    pos[parents, :, 0] = neg_a[pick_child, pick_neg]
    pos[parents, :, 1] = neg_b[pick_child, pick_neg]


def stencil_starts(labels: np.ndarray, length: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All horizontal and vertical runs of ``length`` pixels inside one label (labels ``>= 0``).

    Shape: ``labels`` int [H, W] -> ``(start, step, label)`` int64 [C] each: flat start index ``row * W + col``,
    ``step`` 1 (row run, left to right) or ``W`` (column run, top to bottom), and the run's label.

    >>> s, st, lab = stencil_starts(np.array([[0, 0, 0], [-1, 0, 1]]), length=2)
    >>> s.tolist(), st.tolist(), lab.tolist()
    ([0, 1, 1], [1, 1, 3], [0, 0, 0])
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be int [H, W], got shape {lab.shape}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    h, w = lab.shape
    starts, steps, labs = [], [], []
    for axis, step in ((1, 1), (0, w)):  # two orientations, not a loop over pixels
        n_along = lab.shape[axis] - length + 1
        if n_along <= 0:
            continue
        head = lab[:, :n_along] if axis == 1 else lab[:n_along, :]
        ok = head >= 0
        for s in range(1, length):
            nxt = lab[:, s:s + n_along] if axis == 1 else lab[s:s + n_along, :]
            ok &= nxt == head
        rr, cc = np.nonzero(ok)
        starts.append(rr.astype(np.int64) * w + cc)
        steps.append(np.full(len(rr), step, np.int64))
        labs.append(head[rr, cc].astype(np.int64))
    if not starts:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    return np.concatenate(starts), np.concatenate(steps), np.concatenate(labs)


def sample_depth_stencils(leaf_labels: np.ndarray, rng: np.random.Generator, per_mask: int = 16,
                          length: int = 4) -> np.ndarray:
    """Stencils for the depth continuity loss (Eq. 5): ``length``-pixel row/column runs inside one leaf mask.

    For each label ``>= 0`` of ``leaf_labels`` (e.g. :func:`backend.core.mask_tree.leaf_label_map` reshaped to the
    image), up to ``per_mask`` runs are drawn uniformly *without* replacement among all valid runs of both
    orientations (fewer when the mask holds fewer runs; masks too thin for any run give none). Vectorised: one
    random key per candidate, one lexsort.

    Shape: ``leaf_labels`` int [H, W] (-1 = no mask) -> int64 [S, length] flat pixel indices ``row * W + col``,
    ordered along the run; grouped by increasing label.

    >>> lab = np.full((5, 5), -1); lab[1:4, 0:4] = 7
    >>> st = sample_depth_stencils(lab, np.random.default_rng(0), per_mask=16)
    >>> st.shape, bool((lab.reshape(-1)[st] == 7).all())
    ((3, 4), True)
    """
    if per_mask < 0:
        raise ValueError(f"per_mask must be >= 0, got {per_mask}")
    start, step, lab = stencil_starts(leaf_labels, length)
    if len(start) == 0 or per_mask == 0:
        return np.zeros((0, length), np.int64)
    order = np.lexsort((rng.random(len(start)), lab))
    lab_sorted = lab[order]
    first = np.searchsorted(lab_sorted, lab_sorted, side="left")
    rank = np.arange(len(order)) - first
    chosen = order[rank < per_mask]
    return start[chosen, None] + step[chosen, None] * np.arange(length, dtype=np.int64)[None, :]
