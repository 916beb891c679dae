"""Evaluation on a Blender-HS folder: NC per level, SI, VC at 10/45/90/135 degrees, depth error.

Three rows as in the paper's Table 1: the input masks themselves (a 2D baseline), ours-2D (rendered
feature maps cut at the 50 thresholds) and ours-3D (point-cloud labels propagated into the views).

The input masks (overlapping, not a partition) are scored as a hierarchy of *depth layers* of their
mask tree (:func:`mask_layers`): layer ``k`` labels each pixel with the deepest mask of depth <= k
containing it, so NC sees every mask, and VC compares "the same granularity" across two views the
way a point-prompted SAM would (the k-th mask around the point).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.core import metrics
from backend.method.data import DataError, GroundTruth, load_ground_truth, load_scene
from backend.core.mask_tree import mask_tree
from backend.core.scene import Scene

LEVELS = ("object", "collection", "scene")
COLUMNS = ("NC_obj", "NC_coll", "NC_scene", "NC_mean", "SI", "VC_10", "VC_45", "VC_90", "VC_135", "depth_err")


@dataclass
class EvalConfig:
    """How the evaluation samples (paper defaults: 100 samples per mask, masks >= 20 px, 4 rotations)."""

    rotations: tuple[float, ...] = (10.0, 45.0, 90.0, 135.0)
    """Rotated val views used for VC (those present in the folder)."""
    samples: int = 100
    """Sampled points per ground-truth mask for SI and VC."""
    min_size: int = 20
    """Ground-truth masks under this many pixels are excluded."""
    max_views: int | None = None
    """Evaluate only the first N val views (None: all)."""
    seed: int = 0
    """Seed of the sampled points."""
    max_threshold: float = 0.5
    """Evaluated thresholds run from 0.01 to this in steps of 0.01 (paper: 0.50, i.e. 50 thresholds)."""

    def thresholds(self) -> np.ndarray:
        """Cut thresholds 0.01, 0.02, ... ``max_threshold`` (the paper's 50 by default)."""
        return np.round(np.arange(1, int(round(self.max_threshold * 100)) + 1) / 100.0, 4)


@dataclass
class ViewPredictions:
    """Predicted label stacks int [T,H,W] for the val views and, per rotation, for the turned views."""

    val: list[np.ndarray]
    rotated: dict[float, list[np.ndarray]] = field(default_factory=dict)
    depth: list[np.ndarray] | None = None
    """Predicted planar depth per val view (normalised units), for the depth error."""


def mask_layers(masks: np.ndarray, p_in: float = 0.95, p_iou: float = 0.85) -> np.ndarray:
    """Overlapping masks bool [M,H,W] -> int [T,H,W]: layer k = deepest mask of tree depth <= k+1 per pixel (-1 none)."""
    m, h, w = masks.shape
    if m == 0:
        return np.full((1, h, w), -1, np.int64)
    tree = mask_tree(masks.reshape(m, -1), p_in=p_in, p_iou=p_iou, min_size=1)
    nodes = np.arange(len(tree.parent) - 1)  # without the root
    depth = tree.depth[nodes]
    order = np.lexsort((-tree.masks[nodes].sum(1), depth))  # shallow first, big first: deeper/smaller overwrite
    layers = []
    lab = np.full(h * w, -1, np.int64)
    for k in range(1, int(depth.max()) + 1):
        for n in order[depth[order] == k]:
            lab[tree.masks[n]] = n
        layers.append(lab.copy())
    return np.stack(layers).reshape(-1, h, w)


def _level_masks(gt: GroundTruth, view: int, min_size: int) -> dict[str, np.ndarray]:
    return {lvl: gt.level_masks(view, lvl, min_pixels=min_size) for lvl in LEVELS}


def _visible(folder: Path, stem: str, angle: float, shape) -> np.ndarray | None:
    from PIL import Image

    suffix = "" if abs(angle - 10.0) < 1e-6 else f"_{int(round(angle))}"
    p = folder / "val_visible" / f"{stem}{suffix}.png"
    if not p.is_file():
        return None
    with Image.open(p) as im:
        v = np.asarray(im) > 127
    return v if v.shape == tuple(shape) else None


def rotated_transforms(angle: float) -> str:
    return "transforms_val_rotate.json" if abs(angle - 10.0) < 1e-6 else f"transforms_val_rotate_{int(round(angle))}.json"


def load_eval_views(folder: Path, cfg: EvalConfig) -> tuple[Scene, GroundTruth, dict[float, Scene]]:
    """Val scene (normalised, with depth), its ground truth, and the rotated val scenes present."""
    folder = Path(folder)
    val = load_scene(folder, "val", max_views=cfg.max_views)
    if val.depth is None:
        raise DataError(f"{folder} has no depth for the val views (depth/val/*.npy); VC and 3D labels need it")
    gt = load_ground_truth(folder, "val", val.names)
    rotated = {}
    for a in cfg.rotations:
        name = rotated_transforms(a)
        if (folder / name).is_file():
            rotated[a] = load_scene(folder, "val", transforms=name, max_views=cfg.max_views)
    return val, gt, rotated


def score(pred: ViewPredictions, val: Scene, gt: GroundTruth, rotated: dict[float, Scene], folder: Path,
          cfg: EvalConfig) -> dict[str, float]:
    """One row of the table (fractions in [0, 1]; depth error in normalised units)."""
    rng = np.random.default_rng(cfg.seed)
    nc = {lvl: [] for lvl in LEVELS}
    si = []
    vc = {a: [] for a in rotated}
    for v in range(val.num_views):
        masks = _level_masks(gt, v, cfg.min_size)
        all_masks = np.concatenate([masks[lvl] for lvl in LEVELS])
        for lvl in LEVELS:
            if len(masks[lvl]):
                nc[lvl].append(metrics.normalized_covering(pred.val[v], masks[lvl], min_size=cfg.min_size))
        if len(all_masks):
            si.append(metrics.segmentation_injectivity(pred.val[v], all_masks, rng, samples=cfg.samples))
        stem = Path(val.names[v]).stem
        for a, rs in rotated.items():
            vis = _visible(folder, stem, a, val.depth[v].shape)
            if vis is None or a not in pred.rotated or not len(all_masks):
                continue
            vc[a].append(metrics.view_consistency(pred.val[v], pred.rotated[a][v], all_masks, val.depth[v],
                                                  val.K[v], val.c2w[v], rs.K[v], rs.c2w[v], vis, rng,
                                                  samples=cfg.samples))
    row = {}
    names = {"object": "NC_obj", "collection": "NC_coll", "scene": "NC_scene"}
    for lvl in LEVELS:
        row[names[lvl]] = float(np.mean(nc[lvl])) if nc[lvl] else float("nan")
    row["NC_mean"] = float(np.nanmean([row[names[lvl]] for lvl in LEVELS]))
    row["SI"] = float(np.mean(si)) if si else float("nan")
    for a in (10.0, 45.0, 90.0, 135.0):
        row[f"VC_{int(a)}"] = float(np.mean(vc[a])) if vc.get(a) else float("nan")
    if pred.depth is not None:
        errs = [metrics.depth_error(d, val.depth[v], val.depth[v] > 0) for v, d in enumerate(pred.depth)]
        row["depth_err"] = float(np.mean(errs))
    else:
        row["depth_err"] = float("nan")
    return row


def input_mask_predictions(val: Scene, rotated: dict[float, Scene], make) -> ViewPredictions:
    """Predictions of the 2D baseline: the mask source's own masks on every view, as depth layers.

    ``make(scene, split) -> list of bool [M,H,W]`` runs the mask source.
    """
    val_layers = [mask_layers(m) for m in make(val, "val")]
    rot_layers = {}
    for a, rs in rotated.items():
        split = "val_rotate" if abs(a - 10.0) < 1e-6 else f"val_rotate_{int(round(a))}"
        rot_layers[a] = [mask_layers(m) for m in make(rs, split)]
    depth = max(x.shape[0] for x in val_layers + [y for v in rot_layers.values() for y in v])

    def pad(x: np.ndarray) -> np.ndarray:  # the finest layer persists below a view's deepest mask
        return np.concatenate([x, np.repeat(x[-1:], depth - x.shape[0], 0)]) if x.shape[0] < depth else x

    return ViewPredictions(val=[pad(x) for x in val_layers],
                           rotated={a: [pad(x) for x in v] for a, v in rot_layers.items()})


def format_rows(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table like the paper's Table 1 (NC, SI, VC in percent; depth error in normalised units)."""
    return metrics.format_table(rows, COLUMNS, raw_columns=("depth_err",))
