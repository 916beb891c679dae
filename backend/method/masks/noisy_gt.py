"""Evaluation only: SAM-like masks made from the ground-truth hierarchy, with SAM's failure modes.

Per view, clean masks are every node of the ground-truth tree seen in that view (each leaf, each
internal node = the union of its leaves, and the root = the whole foreground); identical regions
(e.g. a collection holding one visible object) are kept once. Noise, all drawn from a generator
seeded by ``(seed, view index)`` so a view's masks do not depend on the others:

- granularity changing with viewpoint: each tree depth (other than the root) is dropped from a view
  with probability ``drop_level_prob`` (at least one level below the root survives);
- missed masks: masks under ``small_area_frac`` of the image are missed with ``miss_small_prob``,
  others with ``miss_prob``;
- splits: with ``split_prob`` a mask is replaced by its two halves on either side of a random line
  through its centroid;
- merges: with ``merge_prob`` a mask is replaced by its union with a touching mask of the same depth;
- boundary jitter: each mask is eroded or dilated by up to ``jitter_px`` pixels (dilation spills into
  the background too, as SAM's masks do); masks then under ``min_area_frac`` of the image are dropped.

The whole foreground (the scene level's answer) is corrupted like every other mask: it may be missed or
jittered. Never a default source: it reads ground truth (run.json and eval.md say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from backend.method.masks.errors import MaskSourceError
from backend.method.masks.gt import GtTree, read_hierarchy, read_leaf_ids
from backend.core.scene import Scene


@dataclass
class NoisyGtConfig:
    """Noise model turning ground-truth hierarchies into SAM-like masks (see the module docstring)."""

    seed: int = 0
    """Seed; view ``i`` uses the generator ``(seed, i)``."""
    drop_level_prob: float = 0.15
    """Probability that a tree depth (below the root) is missing from a view."""
    miss_small_prob: float = 0.5
    """Probability of missing a small mask (under ``small_area_frac`` of the image)."""
    small_area_frac: float = 0.01
    """Masks under this fraction of the image count as small parts."""
    miss_prob: float = 0.05
    """Probability of missing any other mask."""
    split_prob: float = 0.1
    """Probability that a mask comes out as two halves."""
    merge_prob: float = 0.1
    """Probability that a mask comes out merged with a touching mask of the same depth."""
    jitter_px: int = 2
    """Each mask is eroded or dilated by a uniform random 0..jitter_px pixels."""
    min_area_frac: float = 1e-3
    """Drop masks smaller than this fraction of the image after the noise."""

    def validate(self) -> None:
        for name in ("drop_level_prob", "miss_small_prob", "miss_prob", "split_prob", "merge_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise MaskSourceError(f"noisy_gt.{name} must be a probability in [0, 1], got {v}")
        if self.jitter_px < 0:
            raise MaskSourceError(f"noisy_gt.jitter_px must be >= 0, got {self.jitter_px}")


def clean_masks(leaf_ids: np.ndarray, tree: GtTree) -> tuple[np.ndarray, np.ndarray]:
    """Every tree node's region in one view: bool ``[M, H, W]`` (largest first) and their depths ``[M]``.

    A node's region is the union of the pixels of the leaves under it; empty and repeated regions
    are dropped (a repeat keeps the deepest node). The root's region is the whole foreground.
    """
    ids, inverse = np.unique(leaf_ids, return_inverse=True)
    inverse = inverse.reshape(leaf_ids.shape)
    members: dict[int, list[int]] = {}
    for col, leaf in enumerate(ids.tolist()):
        if leaf == 0:
            continue
        if leaf not in tree.parent:
            raise MaskSourceError(f"leaf id {leaf} in the ids image is not a node of hierarchy.json")
        for node in tree.ancestors(leaf):
            members.setdefault(node, []).append(col)
    nodes = sorted(members, key=lambda n: (-tree.depth(n), n))  # deepest first wins on repeats
    seen: set[tuple[int, ...]] = set()
    regions, depths = [], []
    for node in nodes:
        key = tuple(sorted(members[node]))
        if key in seen:
            continue
        seen.add(key)
        lut = np.zeros(len(ids), bool)
        lut[list(key)] = True
        regions.append(lut[inverse])
        depths.append(tree.depth(node))
    if not regions:
        return np.zeros((0,) + leaf_ids.shape, bool), np.zeros(0, np.int64)
    masks, depth = np.stack(regions), np.asarray(depths, np.int64)
    order = np.argsort(-masks.sum((1, 2)), kind="stable")
    return masks[order], depth[order]


def _split(mask: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    rows, cols = np.nonzero(mask)
    theta = rng.uniform(0, np.pi)
    side = (rows - rows.mean()) * np.cos(theta) + (cols - cols.mean()) * np.sin(theta) > 0
    a = np.zeros_like(mask)
    a[rows[side], cols[side]] = True
    return [a, mask & ~a]


def _jitter(mask: np.ndarray, radius: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation, binary_erosion

    if radius > 0:
        return binary_dilation(mask, iterations=radius)
    if radius < 0:
        return binary_erosion(mask, iterations=-radius)
    return mask


def noisy_masks(leaf_ids: np.ndarray, tree: GtTree, config: NoisyGtConfig, view: int = 0) -> np.ndarray:
    """SAM-like noisy masks of one view, bool ``[M, H, W]``, largest first."""
    from scipy.ndimage import binary_dilation

    config.validate()
    rng = np.random.default_rng([config.seed, view])
    masks, depth = clean_masks(leaf_ids, tree)
    fg = leaf_ids > 0
    h, w = leaf_ids.shape
    if not fg.any():
        return np.zeros((0, h, w), bool)
    levels = sorted(set(depth.tolist()) - {0})
    dropped = {lv for lv in levels if rng.random() < config.drop_level_prob}
    if levels and dropped == set(levels):
        dropped.discard(levels[int(rng.integers(len(levels)))])
    small = config.small_area_frac * h * w
    out: list[np.ndarray] = []
    for k in range(len(masks)):
        m, d = masks[k], int(depth[k])
        if d in dropped:
            continue
        if rng.random() < (config.miss_small_prob if m.sum() < small else config.miss_prob):
            continue
        pieces = [m]
        if rng.random() < config.merge_prob:
            touching = [j for j in range(len(masks)) if j != k and depth[j] == d
                        and (binary_dilation(m) & masks[j]).any()]
            if touching:
                pieces = [m | masks[touching[int(rng.integers(len(touching)))]]]
        if rng.random() < config.split_prob:
            pieces = _split(pieces[0], rng)
        for p in pieces:
            radius = int(rng.integers(-config.jitter_px, config.jitter_px + 1)) if config.jitter_px else 0
            out.append(_jitter(p, radius))
    min_pixels = max(config.min_area_frac * h * w, 1)
    out = [m for m in out if m.sum() >= min_pixels]
    out.sort(key=lambda m: -int(m.sum()))
    return np.stack(out) if out else np.zeros((0, h, w), bool)


def masks_for_scene(scene: Scene, config: NoisyGtConfig, data_dir: Path | None = None, split: str = "train",
                    progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """:func:`noisy_masks` of every view, from ``<data_dir>/gt_seg/<split>/<stem>_ids.png``."""
    if data_dir is None:
        raise MaskSourceError("mask source 'noisy-gt' needs the dataset folder (data_dir) to read gt_seg/")
    if not scene.names:
        raise MaskSourceError("mask source 'noisy-gt' needs view names (scene.names) to find gt_seg files")
    tree = read_hierarchy(Path(data_dir))
    out = []
    n = scene.num_views
    for i in range(n):
        ids = read_leaf_ids(Path(data_dir), split, Path(scene.names[i]).stem)
        if ids.shape != (scene.height, scene.width):
            raise MaskSourceError(f"ground truth of {scene.names[i]} is {ids.shape}, the image is "
                                  f"{(scene.height, scene.width)}")
        out.append(noisy_masks(ids, tree, config, view=i))
        if progress is not None:
            progress(i + 1, n)
    return out
