"""Weight-free SAM-like masks: the most persistent regions of a watershed hierarchy per image.

Per image:

1. A 4-adjacency pixel graph weighted by the CIELAB colour difference of neighbours (lightness
   down-weighted, so shading and soft shadows matter less than hue changes), plus a saturating
   depth-discontinuity term when depth is given (relative jump ``|d1 - d2| / min(d1, d2)``).
   Edges between foreground (alpha >= ``foreground_alpha``) and background get a weight above every
   other edge and background-background edges 0, so background is one region that joins the foreground last.
2. The watershed hierarchy of that graph by ``volume`` (default), ``area`` or ``dynamics``
   (Higra ``watershed_hierarchy_by_*``): a tree of nested regions, leaves = pixels.
3. Candidate masks are the tree's nodes (each = a region present in every horizontal cut between
   its own altitude and its parent's), restricted to the foreground. A node is kept when its
   foreground part covers at least ``min_area_frac`` of the image and at least half of the node,
   ranked by *persistence* ``altitude(parent) - altitude(node)`` (the range of cut levels over
   which the region survives). Going down that ranking, a node whose nearest kept ancestor is
   a near-duplicate (IoU = area ratio > ``dedupe_iou``) is dropped; the ``max_masks`` most
   persistent survivors, plus the whole foreground, are returned, largest first.

Masks of one image form a laminar family (any two nest or are disjoint), so coarse masks contain
finer ones, as the cuts of a hierarchy do. Deterministic; ~20-60 ms for a 200x200 image.
Complexity: O(P log P) for P pixels (the tree), O(M * depth) to materialise M masks.

On Cycles renders of textured primitives (200x200, ~11 objects per view) the best IoU of an object
with some mask averaged 0.95 with depth (0.82 without), with 120 masks per image; on
``dataset_tools`` examples (table_set, vehicle) the per-level covering was object 0.79-0.83,
collection ~0.57, scene 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from backend.method.masks.errors import MaskSourceError
from backend.core.scene import Scene

HIERARCHIES = ("volume", "area", "dynamics")


@dataclass
class ClassicalConfig:
    """Settings of the weight-free hierarchical segmentation (see the module docstring)."""

    hierarchy: str = "volume"
    """Watershed hierarchy attribute: ``volume`` (default; best on renders), ``area`` or ``dynamics``."""
    lightness_weight: float = 0.5
    """Weight of the L* difference relative to a*/b* in the colour gradient (< 1 discounts shading)."""
    smoothing_sigma: float = 0.0
    """Gaussian blur (pixels) of the Lab image before the gradient; 0 = none (sharpest boundaries)."""
    use_depth: bool | None = None
    """Add depth discontinuities and normal creases (from the depth) to the colour gradient. ``None`` (default):
    when the scene carries depth, i.e. in exact geometry where Blender gives every predictor its rendered depth (a
    run in nerf geometry never has it: its scene is stripped of undeclared depth), declared in run.json and
    eval.md; ``True``: always (declared); ``False``: colour alone, as SAM sees an image (the mask source
    ``classical-colour``). Measured at 200 px (docs/quality.md, issue 22, 3 seeds): with ``max_masks`` 20 the
    lifted 3D result rises from 49.9 to 66.7 NC_mean on the closed room (colour alone with 120 masks) and from
    62.1 to 71.0 on the surroundings, and falls from 69.3 to 64.5 on the table set."""
    use_alpha: bool = False
    """Restrict the masks to the alpha foreground and add it as a mask (off by default: the foreground is
    the scene level's ground truth; on, run.json and eval.md record that the masks saw it)."""
    depth_weight: float = 60.0
    """Gradient added at a full depth discontinuity (Lab units; a strong hue edge is ~50-100)."""
    depth_rel_jump: float = 0.1
    """Relative depth jump ``|d1 - d2| / min(d1, d2)`` at which the depth term saturates."""
    normal_weight: float = 15.0
    """With depth: gradient added where the surface normals (from the depth and the camera) of two neighbours
    differ fully (``1 - n1 . n2`` at ``normal_jump``): creases where colour cannot tell a shelf from the wall
    behind it or a table top from its legs. 0 = depth jumps only. Measured (best IoU of a ground-truth object with
    some mask, 12 views each; docs/quality.md): colour alone 67.0 / 66.2 / 74.5 on table set / room /
    surroundings, depth jumps 79.8 / 77.9 / 75.7, jumps + normals at 15: 79.2 / 80.5 / 80.2, at 30:
    74.5 / 81.5 / 81.6 (curved small objects split)."""
    normal_jump: float = 0.3
    """``1 - n1 . n2`` at which the normal term saturates (0.3: about 45 degrees)."""
    min_area_frac: float = 1e-3
    """Drop masks smaller than this fraction of the image (0.1 % = 40 px at 200x200)."""
    dedupe_iou: float = 0.9
    """Drop a mask whose IoU with the next kept mask containing it exceeds this."""
    max_masks: int = 20
    """At most this many masks per image besides the whole foreground (the most persistent). Every mask gets the
    same number of training pairs (Algorithm 1), so on large textured surfaces (a floor, a wall in a noisy render)
    a long tail of weakly persistent fragments, which differ from view to view, dominates the loss and the field
    learns them as structure. Measured at 200 px with depth (docs/quality.md, seed 0): lifted 3D NC_mean on the closed
    room 66.8 (120 masks), 72.2 (40), 72.4 (20), 63.7 (10); surroundings 61.3, 66.9, 71.5; table set 68.9,
    66.8, 63.7. The input masks themselves score higher with more masks (a point-prompted user picks one)."""
    foreground_alpha: int = 128
    """Pixels with alpha below this (0-255) are background, in no mask; 128 drops the anti-aliased halo
    (a render's id pass labels a pixel by its centre), 1 keeps every pixel with alpha > 0."""

    def validate(self) -> None:
        if self.hierarchy not in HIERARCHIES:
            raise MaskSourceError(f"classical.hierarchy must be one of {HIERARCHIES}, got {self.hierarchy!r}")
        if not 0.0 <= self.min_area_frac < 1.0:
            raise MaskSourceError(f"classical.min_area_frac must be in [0, 1), got {self.min_area_frac}")
        if not 0.0 < self.dedupe_iou <= 1.0:
            raise MaskSourceError(f"classical.dedupe_iou must be in (0, 1], got {self.dedupe_iou}")
        if not 1 <= self.foreground_alpha <= 255:
            raise MaskSourceError(f"classical.foreground_alpha must be in [1, 255], got {self.foreground_alpha}")
        if self.max_masks < 0:
            raise MaskSourceError(f"classical.max_masks must be >= 0, got {self.max_masks}")


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB uint8 ``[..., 3]``, float32 ``[..., 3]`` (L* in [0, 100])."""
    c = rgb.astype(np.float32) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], np.float32)
    xyz = c @ m.T / np.array([0.9505, 1.0, 1.089], np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def depth_normals(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Unit surface normals float64 [H, W, 3] (camera frame) of a planar depth map, from the cross product of the
    unprojected points' central differences; zero where a neighbour has no surface.

    >>> K = np.array([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
    >>> (depth_normals(np.full((4, 4), 2.0), K)[1, 1].round(3) + 0.0).tolist()   # a wall facing the camera
    [0.0, 0.0, 1.0]
    """
    from backend.core.geometry import unproject_depth

    d = np.asarray(depth, np.float64)
    p = unproject_depth(d, np.asarray(K, np.float64), np.eye(4))
    dx = np.zeros_like(p)
    dy = np.zeros_like(p)
    dx[:, 1:-1] = p[:, 2:] - p[:, :-2]
    dy[1:-1] = p[2:] - p[:-2]
    n = np.cross(dx, dy)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = d > 0
    ok = valid.copy()
    ok[:, 1:-1] &= valid[:, 2:] & valid[:, :-2]
    ok[1:-1] &= valid[2:] & valid[:-2]
    n = np.where(ok[..., None] & (norm > 0), n / np.maximum(norm, 1e-300), 0.0)
    return n * np.where(n[..., 2:3] < 0, -1.0, 1.0)  # facing the camera (+z in the camera frame)


def edge_weights(rgb: np.ndarray, foreground: np.ndarray, depth: np.ndarray | None,
                 config: ClassicalConfig, K: np.ndarray | None = None) -> tuple[object, np.ndarray]:
    """The 4-adjacency graph of an ``[H, W]`` image and its gradient weights ``[E]`` (float64).

    ``rgb`` uint8 ``[H, W, 3]``; ``foreground`` bool ``[H, W]``; ``depth`` float ``[H, W]`` or None; ``K``
    [3, 3] the camera (normals from depth need it; None: depth jumps only).
    """
    import higra as hg

    h, w = foreground.shape
    lab = srgb_to_lab(rgb) * np.array([config.lightness_weight, 1.0, 1.0], np.float32)
    if config.smoothing_sigma > 0:
        from scipy.ndimage import gaussian_filter

        lab = gaussian_filter(lab, (config.smoothing_sigma, config.smoothing_sigma, 0))
    graph = hg.get_4_adjacency_graph((h, w))
    src, dst = graph.edge_list()
    feat = lab.reshape(-1, 3)
    weight = np.linalg.norm(feat[src] - feat[dst], axis=1).astype(np.float64)
    if depth is not None:
        d = depth.reshape(-1).astype(np.float64)
        rel = np.abs(d[src] - d[dst]) / np.maximum(np.minimum(d[src], d[dst]), 1e-9)
        weight += config.depth_weight * np.clip(rel / config.depth_rel_jump, 0.0, 1.0)
        if K is not None and config.normal_weight > 0:
            n = depth_normals(depth, K).reshape(-1, 3)
            bend = 1.0 - np.einsum("ij,ij->i", n[src], n[dst])
            known = (np.abs(n[src]).sum(1) > 0) & (np.abs(n[dst]).sum(1) > 0)
            weight += np.where(known, config.normal_weight * np.clip(bend / config.normal_jump, 0.0, 1.0), 0.0)
    fg = foreground.reshape(-1)
    both, neither = fg[src] & fg[dst], ~fg[src] & ~fg[dst]
    top = float(weight.max(initial=0.0)) + 1e3
    weight = np.where(both, weight, np.where(neither, 0.0, top))
    return graph, weight


def node_masks(tree, nodes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool ``[len(nodes), H, W]``: the leaves (pixels) under each node of a laminar selection.

    Each pixel is assigned its nearest selected ancestor, then climbs the chain of selected
    ancestors: O(P * depth of the selection), all vectorised.
    """
    import higra as hg

    n_leaves = tree.num_leaves()
    out = np.zeros((len(nodes), n_leaves), bool)
    if len(nodes) == 0:
        return out.reshape((0,) + shape)
    column = np.full(tree.num_vertices(), -1, np.int64)
    column[nodes] = np.arange(len(nodes))
    nearest = hg.propagate_sequential(tree, column, column < 0)  # nearest selected ancestor-or-self
    parents = tree.parents()
    root = tree.root()
    # next selected strict ancestor of every selected node (-1 at the top)
    up = np.where(nodes == root, -1, nearest[parents[nodes]])
    cur = nearest[:n_leaves].copy()
    leaves = np.arange(n_leaves)
    while True:
        ok = cur >= 0
        if not ok.any():
            break
        out[cur[ok], leaves[ok]] = True
        cur = np.where(ok, up[np.maximum(cur, 0)], -1)
    return out.reshape((len(nodes),) + shape)


def select_nodes(tree, altitudes: np.ndarray, fg_area: np.ndarray, area: np.ndarray,
                 min_pixels: float, dedupe_iou: float, max_masks: int) -> np.ndarray:
    """Most persistent tree nodes with enough foreground, near-duplicates of kept ancestors removed."""
    parents = tree.parents()
    root = tree.root()
    persistence = altitudes[parents] - altitudes
    persistence[root] = np.inf
    valid = np.nonzero((fg_area >= max(min_pixels, 1.0)) & (fg_area >= 0.5 * area))[0]
    # rank by persistence, ties by larger area then node index (deterministic)
    order = valid[np.lexsort((valid, -fg_area[valid], -persistence[valid]))]
    kept = np.zeros(tree.num_vertices(), bool)
    # process large-to-small so a node's kept ancestors are decided before it
    for node in order[np.argsort(-fg_area[order], kind="stable")]:
        a = parents[node]
        while not kept[a] and a != root:
            a = parents[a]
        if kept[a] and fg_area[node] / fg_area[a] > dedupe_iou:
            continue
        kept[node] = True
    rank = {int(n): i for i, n in enumerate(order)}
    chosen = sorted((int(n) for n in np.nonzero(kept)[0]), key=rank.__getitem__)[:max_masks]
    return np.asarray(chosen, np.int64)


def classical_masks(rgb: np.ndarray, alpha: np.ndarray | None = None, depth: np.ndarray | None = None,
                    config: ClassicalConfig | None = None, K: np.ndarray | None = None) -> np.ndarray:
    """SAM-like multi-granular masks of one image, bool ``[M, H, W]``, largest first.

    ``rgb`` uint8 ``[H, W, 3]``; ``alpha`` uint8 ``[H, W]`` (pixels with alpha below
    ``config.foreground_alpha`` are background and in no mask) or None (everything is foreground);
    ``depth`` planar ``[H, W]`` (0 = background) or None; ``K`` [3, 3] for normals from depth, or None.
    The first mask is the whole foreground (the whole image without ``alpha``).
    """
    import higra as hg

    config = config or ClassicalConfig()
    config.validate()
    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MaskSourceError(f"classical masks need an RGB image [H,W,3], got {rgb.shape}")
    fg = np.ones((h, w), bool) if alpha is None else np.asarray(alpha) >= config.foreground_alpha
    if not fg.any():
        return np.zeros((0, h, w), bool)
    graph, weight = edge_weights(rgb, fg, depth if config.use_depth is not False else None, config, K)
    builder = getattr(hg, f"watershed_hierarchy_by_{config.hierarchy}")
    tree, altitudes = builder(graph, weight)
    fg_area = hg.accumulate_sequential(tree, fg.reshape(-1).astype(np.float64), hg.Accumulators.sum)
    area = hg.attribute_area(tree).astype(np.float64)
    nodes = select_nodes(tree, np.asarray(altitudes, np.float64), fg_area, area,
                         config.min_area_frac * h * w, config.dedupe_iou, config.max_masks)
    masks = node_masks(tree, nodes, (h, w)) & fg[None]
    n_fg = int(fg.sum())
    sizes = masks.sum((1, 2))
    # the whole foreground goes first; drop selections equal (or nearly) to it
    keep = sizes <= config.dedupe_iou * n_fg
    masks, sizes = masks[keep], sizes[keep]
    masks = masks[np.argsort(-sizes, kind="stable")]
    return np.concatenate([fg[None], masks], 0)


def colour_masks_for_scene(scene: Scene, config: ClassicalConfig, data_dir: Path | None = None, split: str = "train",
                           progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """The ``classical-colour`` source: :func:`masks_for_scene` from colour alone (``use_depth=False``)."""
    return masks_for_scene(scene, replace(config, use_depth=False), data_dir, split, progress)


def masks_for_scene(scene: Scene, config: ClassicalConfig, data_dir: Path | None = None, split: str = "train",
                    progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """:func:`classical_masks` of every view (from colour; alpha and depth only when the config asks)."""
    out = []
    n = scene.num_views
    for i in range(n):
        alpha = None if scene.alpha is None or not config.use_alpha else scene.alpha[i]
        depth = None if scene.depth is None or config.use_depth is False else scene.depth[i]
        out.append(classical_masks(scene.rgb[i], alpha, depth, config, scene.K[i]))
        if progress is not None:
            progress(i + 1, n)
    return out
