"""Per-image precomputation for training steps (issue #16): work that depends only on an image's masks is done
once per image, so a step only draws indices.

- :func:`stencil_runs`: every depth-continuity run (Eq. 5) of an image's leaf-label map, grouped by label, once;
  :func:`sample_stencils_from_runs` then draws a step's stencils from it, with exactly the output (and the random
  draws) of :func:`backend.core.sampling.sample_depth_stencils` on the same map, at a fraction of the cost (no
  full-image scan, no global lexsort: a partial selection per label).

NumPy only; arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.core.sampling import stencil_starts


@dataclass(frozen=True)
class StencilRuns:
    """All ``length``-pixel runs inside one label of an image (:func:`backend.core.sampling.stencil_starts` order),
    with the permutation that groups them by label."""

    start: np.ndarray
    """int64 [C]: flat start pixel of each run (``stencil_starts`` order)."""
    step: np.ndarray
    """int64 [C]: 1 (row run) or W (column run)."""
    order: np.ndarray
    """int64 [C]: run indices sorted by label, stably (runs of one label keep their ``stencil_starts`` order)."""
    bounds: np.ndarray
    """int64 [G + 1]: runs of the ``g``-th label (increasing) are ``order[bounds[g]:bounds[g + 1]]``."""
    length: int
    """Pixels per run."""

    def __len__(self) -> int:
        return len(self.start)


def stencil_runs(leaf_labels: np.ndarray, length: int = 4) -> StencilRuns:
    """The runs of :func:`backend.core.sampling.stencil_starts`, grouped by label for fast per-step draws.

    Shape: ``leaf_labels`` int [H, W] (-1 = no mask) -> :class:`StencilRuns` with ``C`` runs.
    """
    start, step, lab = stencil_starts(leaf_labels, length)
    order = np.argsort(lab, kind="stable").astype(np.int64)
    _, first = np.unique(lab[order], return_index=True)
    bounds = np.concatenate([first, [len(order)]]).astype(np.int64)
    return StencilRuns(start=start, step=step, order=order, bounds=bounds, length=length)


def sample_stencils_from_runs(runs: StencilRuns, rng: np.random.Generator, per_mask: int = 16) -> np.ndarray:
    """Up to ``per_mask`` runs per label, uniformly without replacement: the output of
    :func:`backend.core.sampling.sample_depth_stencils` for the same map and generator state, bit for bit.

    ``sample_depth_stencils`` draws one key per run (``rng.random(C)``, same draws here) and keeps, per label, the
    runs with the ``per_mask`` smallest keys in key order (ties: ``stencil_starts`` order). Here each label's
    runs are partially selected (``argpartition``) instead of lexsorting all ``C`` runs.

    Shape: -> int64 [S, length] flat pixel indices, grouped by increasing label.

    >>> from backend.core.sampling import sample_depth_stencils
    >>> lab = np.full((6, 7), -1); lab[1:5, 0:6] = 2; lab[0, :] = 5
    >>> a = sample_depth_stencils(lab, np.random.default_rng(3), per_mask=3)
    >>> b = sample_stencils_from_runs(stencil_runs(lab), np.random.default_rng(3), per_mask=3)
    >>> bool(np.array_equal(a, b)), a.shape
    (True, (6, 4))
    """
    if per_mask < 0:
        raise ValueError(f"per_mask must be >= 0, got {per_mask}")
    if len(runs) == 0 or per_mask == 0:
        return np.zeros((0, runs.length), np.int64)
    keys = rng.random(len(runs))
    ks = keys[runs.order]
    chosen = []
    b = runs.bounds
    for g in range(len(b) - 1):
        a, e = int(b[g]), int(b[g + 1])
        sub = ks[a:e]
        if e - a > per_mask:
            kth = np.partition(sub, per_mask - 1)[per_mask - 1]
            cand = np.flatnonzero(sub <= kth)  # ties at the k-th key included, resolved by the stable sort below
        else:
            cand = np.arange(e - a)
        cand = cand[np.argsort(sub[cand], kind="stable")][:per_mask]
        chosen.append(runs.order[a + cand])
    sel = np.concatenate(chosen)
    return runs.start[sel, None] + runs.step[sel, None] * np.arange(runs.length, dtype=np.int64)[None, :]
