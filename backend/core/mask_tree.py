"""Organise one image's overlapping SAM masks into a tree by inclusion (Sec. 4.1 "Hierarchical Sampling").

Definition: mask ``A`` is a *child candidate* of mask ``B`` when ``|A ∩ B| / |A| > p_in`` (A is almost inside B)
and ``IoU(A, B) < p_iou`` (A is not a near-duplicate of B). The parent of ``A`` is the **smallest** candidate
``B`` (fewest pixels; ties by lower input index), i.e. the tightest enclosing mask, which makes the chain of
parents a chain of growing masks. A mask with no candidate hangs from the all-true root, appended last.

To guarantee a tree (no cycles) for any ``p_in``/``p_iou``, a candidate parent must also come strictly later in
the order ``(area, index)``; with the paper's values (``p_in > p_iou``) this never removes a candidate, since
mutual near-inclusion then implies ``IoU > p_iou``.

Complexity: one ``[M, P] x [P, M]`` float32 matrix product for all intersections, ``O(M^2 P)``; everything else
is ``O(M^2)``.

>>> m = np.zeros((3, 10), bool); m[0, :8] = True; m[1, :3] = True; m[2, 5:7] = True
>>> t = mask_tree(m, min_size=1)
>>> t.parent.tolist(), t.depth.tolist()
([3, 0, 0, 3], [1, 2, 2, 0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MaskTree:
    """Masks of one image as a tree; node ``i < M'`` is kept input mask ``kept[i]``, node ``M'`` is the root."""

    masks: np.ndarray
    """bool [M' + 1, P]: the kept masks (input order) and the all-true root LAST."""
    parent: np.ndarray
    """int64 [M' + 1]: parent node of each node; the root is its own parent."""
    kept: np.ndarray
    """int64 [M']: index in the input of each kept mask."""
    depth: np.ndarray
    """int64 [M' + 1]: number of edges to the root (root 0, its children 1, ...)."""

    @property
    def root(self) -> int:
        """Index of the all-true root (the last node)."""
        return len(self.parent) - 1

    @property
    def num_nodes(self) -> int:
        """``M' + 1``."""
        return len(self.parent)

    @property
    def is_leaf(self) -> np.ndarray:
        """bool [M' + 1]: nodes without children (the root only when there are no masks)."""
        has_child = np.zeros(self.num_nodes, dtype=bool)
        nonroot = np.arange(self.num_nodes) != self.root
        has_child[self.parent[nonroot]] = True
        return ~has_child

    @property
    def area(self) -> np.ndarray:
        """int64 [M' + 1]: pixels per node."""
        return self.masks.sum(axis=1, dtype=np.int64)


def tree_depth(parent: np.ndarray) -> np.ndarray:
    """Depth of each node of a parent array whose root is its own parent, by pointer jumping (``O(N log N)``).

    Shape: ``parent`` int [N] -> int64 [N].

    >>> tree_depth(np.array([2, 0, 2])).tolist()
    [1, 2, 0]
    """
    parent = np.asarray(parent, dtype=np.int64)
    anc = parent.copy()
    depth = (anc != np.arange(len(parent))).astype(np.int64)  # distance to anc (1 unless at the root)
    for _ in range(64):
        nxt = anc[anc]
        step = depth[anc]
        if np.array_equal(nxt, anc):
            break
        depth = depth + step
        anc = nxt
    return depth


def mask_tree(masks: np.ndarray, p_in: float = 0.95, p_iou: float = 0.85, min_size: int = 6,
              max_size: int | None = None) -> MaskTree:
    """Build the inclusion tree of ``masks`` (see the module docstring for the definition).

    Masks with fewer than ``min_size`` pixels, or more than ``max_size`` pixels, are dropped first. The defaults
    reproduce the released code's filter on the 4,096 sampled pixels (keep ``5 < area < P - 5``): ``min_size=6``
    and ``max_size=None`` meaning ``P - min_size``. ``p_iou`` is 0.85 in the paper, 0.9 in the released code.

    Shape: ``masks`` bool [M, P] -> :class:`MaskTree` with ``M' + 1`` nodes. Deterministic.
    """
    masks = np.asarray(masks, dtype=bool)
    m_in, p = masks.shape
    if max_size is None:
        max_size = p - min_size
    area_all = masks.sum(axis=1, dtype=np.int64)
    kept = np.flatnonzero((area_all >= min_size) & (area_all <= max_size)).astype(np.int64)
    km = masks[kept]
    m = len(kept)
    area = area_all[kept].astype(np.float64)
    parent = np.full(m + 1, m, dtype=np.int64)
    if m:
        f = km.astype(np.float32)
        inter = (f @ f.T).astype(np.float64)  # exact: counts < 2^24
        incl = inter / area[:, None]  # |A ∩ B| / |A|, A = row
        iou = inter / (area[:, None] + area[None, :] - inter)
        idx = np.arange(m)
        later = (area[None, :] > area[:, None]) | ((area[None, :] == area[:, None]) & (idx[None, :] > idx[:, None]))
        cand = (incl > p_in) & (iou < p_iou) & later
        # smallest candidate: minimise (area, index) -> rank of each mask in that order
        rank = np.empty(m, np.int64)
        rank[np.lexsort((idx, area))] = idx
        score = np.where(cand, rank[None, :], m)
        best = score.argmin(axis=1)
        has = cand[idx, best]
        parent[:m] = np.where(has, best, m)
    all_masks = np.concatenate([km, np.ones((1, p), dtype=bool)], axis=0)
    return MaskTree(masks=all_masks, parent=parent, kept=kept, depth=tree_depth(parent))


def leaf_label_map(tree: MaskTree) -> np.ndarray:
    """Finest-level label of each pixel: the index of the smallest *leaf* mask containing it, -1 if none.

    Used for the depth continuity stencils (patches inside one finest-level mask). Overlapping leaves are
    resolved in favour of the smaller one (ties: lower node index).

    Shape: -> int64 [P] (node indices into ``tree``; reshape to ``[H, W]`` when ``P = H * W``).
    """
    leaves = np.flatnonzero(tree.is_leaf & (np.arange(tree.num_nodes) != tree.root))
    p = tree.masks.shape[1]
    out = np.full(p, -1, dtype=np.int64)
    if len(leaves) == 0:
        return out
    area = tree.area[leaves]
    order = leaves[np.lexsort((-leaves, -area))]  # paint largest first so smaller leaves win
    lm = tree.masks[order]
    last = lm.shape[0] - 1 - np.argmax(lm[::-1], axis=0)  # last painter per pixel
    covered = lm.any(axis=0)
    out[covered] = order[last[covered]]
    return out
