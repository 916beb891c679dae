"""Evaluation on a Blender-HS folder (Sec. 5.1 and appendix A.3 of the paper): NC per level, SI, VC at
10/45/90/135 degrees, depth error, for the input masks, ours-2D and ours-3D.

Protocols (:data:`PROTOCOLS`), stated in every report:

- ``paper``: predictions use only the model. Novel-view depth is rendered by the field (``nerf`` geometry),
  the 2D graph covers every pixel, and the scenes handed to the predictor carry no depth, no alpha and no
  ids (:func:`strip_ground_truth`). Only the metrics read ground truth.
- ``exact-geometry``: what a Blender user gets: the exact rendered depth of every view (novel ones too)
  places the 3D labels and the 2D features; the 2D graph still covers every pixel. The only protocol for runs
  trained in ``depth`` geometry (there is no density to render depth from).

Thresholds: the released code cuts the Euclidean distance between unit features at 0.01 ... 0.50; our trees
hold ``1 - cos`` = ``e^2 / 2`` for a Euclidean distance ``e``, so the same 50 cuts are made at ``e^2 / 2``
(:meth:`EvalConfig.tree_thresholds`). A tree has every granularity, so a second sweep cuts at 50 quantiles of
each tree's own merge altitudes (the ``(whole tree)`` rows).

NC: the released scripts' point-sampled form (mean over 100 sampled points per GT mask of the best IoU over
thresholds; ``NC_*``) and the dense Eq. 6 (best IoU over every segment; ``NC_*_dense``). The scene level
scores the foreground and the background, as the released scripts do. SI is appendix A.3's (both points
drawn from the GT mask). The input masks are queried as a point-prompted SAM user would
(:func:`backend.core.metrics.query_masks`), never turned into a partition first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.core import metrics
from backend.core.metrics import Prediction
from backend.core.scene import Scene
from backend.method.data import DataError, GroundTruth, load_ground_truth, load_scene

LEVELS = ("object", "collection", "scene")
MEAN_LEVELS = ("object", "collection")
"""Levels NC_mean averages. The scene level (foreground against background) is reported on its own: in Blender
every predictor is given the rendered depth, whose zeros are exactly the ground-truth background, so that level
measures the silhouette every row is handed, not the segmentation (a predictor that knows only the silhouette
scores 100 there). ``NC_mean_with_scene`` (eval.json) keeps the paper's three-level mean."""
LEVEL_COLUMNS = {"object": "NC_obj", "collection": "NC_coll", "scene": "NC_scene"}
COLUMNS = ("NC_obj", "NC_coll", "NC_scene", "NC_mean", "NC_mean_dense", "SI", "VC_10", "VC_45", "VC_90", "VC_135",
           "depth_err")
PROTOCOLS = ("auto", "paper", "exact-geometry")
ROTATIONS = (10.0, 45.0, 90.0, 135.0)


class ProtocolChoiceError(DataError):
    """The requested protocol cannot be applied to this run."""


@dataclass
class EvalConfig:
    """How the evaluation predicts and samples (paper defaults: 100 samples per mask, masks >= 20 px, 50 cuts)."""

    protocol: str = "auto"
    """``paper``, ``exact-geometry`` or ``auto`` (``paper`` for ``nerf`` runs, ``exact-geometry`` for ``depth``)."""
    rotations: tuple[float, ...] = ROTATIONS
    """Rotated val views used for VC (those present in the folder)."""
    samples: int = 100
    """Sampled points per ground-truth mask for NC (sampled), SI and VC."""
    min_size: int = 20
    """Ground-truth masks under this many pixels are excluded."""
    max_views: int | None = None
    """Evaluate only the first N val views (None: all)."""
    seed: int = 0
    """Seed of the sampled points."""
    max_threshold: float = 0.5
    """Largest cut, as the released code's Euclidean distance between unit features (cuts 0.01, 0.02, ...)."""
    sweep: int = 50
    """Granularities of the whole-tree sweep (quantiles of each tree's merge altitudes) and of the input masks."""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise DataError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if not (np.isfinite(self.max_threshold) and 0.01 <= self.max_threshold <= 2.0):
            raise DataError(f"max_threshold must be a Euclidean distance in [0.01, 2], got {self.max_threshold}")

    def thresholds(self) -> np.ndarray:
        """The released code's cuts 0.01, 0.02, ... ``max_threshold`` (Euclidean distance between unit features)."""
        return np.round(np.arange(1, int(round(self.max_threshold * 100)) + 1) / 100.0, 4)

    def tree_thresholds(self) -> np.ndarray:
        """:meth:`thresholds` as ``1 - cos`` (our trees' altitudes): ``e^2 / 2``."""
        return self.thresholds() ** 2 / 2.0


def resolve_protocol(protocol: str, geometry: str) -> str:
    """``auto`` -> ``paper`` for a ``nerf`` run, ``exact-geometry`` for a ``depth`` run; refuses ``paper`` on a
    ``depth`` run (it has no density to render novel-view depth from)."""
    if protocol == "auto":
        return "paper" if geometry == "nerf" else "exact-geometry"
    if protocol == "paper" and geometry != "nerf":
        raise ProtocolChoiceError("the paper protocol renders novel-view depth from the field, but this run was "
                                  "trained in depth geometry (no density); use --protocol exact-geometry, or train "
                                  "with --geometry nerf")
    return protocol


def protocol_description(protocol: str) -> str:
    return {"paper": "novel-view depth rendered by the field; predictions see no ground truth",
            "exact-geometry": "exact rendered depth for every view (novel ones too), as the Blender add-on has it"
            }[protocol]


@dataclass
class ViewPredictions:
    """Predictions for the val views and, per rotation, for the turned views."""

    val: list[Prediction]
    rotated: dict[float, list[Prediction]] = field(default_factory=dict)
    depth: list[np.ndarray] | None = None
    """Predicted planar depth per val view (normalised units), for the depth error."""


def strip_ground_truth(scene: Scene) -> Scene:
    """The scene as a predictor may see it under the paper protocol: posed colour only (no depth, alpha, masks)."""
    return dataclasses.replace(scene, depth=None, alpha=None, masks=None)


def level_masks(gt: GroundTruth, view: int, min_size: int) -> dict[str, np.ndarray]:
    """GT masks per level for NC; the scene level holds the foreground and the background (released scripts)."""
    out = {lvl: gt.level_masks(view, lvl, min_pixels=min_size) for lvl in LEVELS}
    background = (gt.ids[view] == 0)[None]
    if background.sum() >= min_size:
        out["scene"] = np.concatenate([out["scene"], background])
    return out


def foreground_masks(gt: GroundTruth, view: int, min_size: int) -> np.ndarray:
    """Every GT mask of the hierarchy (objects, collections, the whole foreground): SI and VC are averaged
    over these."""
    return np.concatenate([gt.level_masks(view, lvl, min_pixels=min_size) for lvl in LEVELS])


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
    if abs(angle - 10.0) < 1e-6:
        return "transforms_val_rotate.json"
    return f"transforms_val_rotate_{int(round(angle))}.json"


def rotated_split(angle: float) -> str:
    return "val_rotate" if abs(angle - 10.0) < 1e-6 else f"val_rotate_{int(round(angle))}"


def load_eval_views(folder: Path, cfg: EvalConfig) -> tuple[Scene, GroundTruth, dict[float, Scene]]:
    """Val scene (normalised, with depth), its ground truth, and the rotated val scenes present."""
    folder = Path(folder)
    val = load_scene(folder, "val", max_views=cfg.max_views)
    if val.depth is None:
        raise DataError(f"{folder} has no depth for the val views (depth/val/*.npy); VC needs it")
    gt = load_ground_truth(folder, "val", val.names)
    rotated = {}
    for a in cfg.rotations:
        name = rotated_transforms(a)
        if (folder / name).is_file():
            rotated[a] = load_scene(folder, "val", transforms=name, max_views=cfg.max_views)
    return val, gt, rotated


@dataclass
class Scored:
    """One row: metric values (fractions; depth error in normalised units) and the NC-per-granularity curve."""

    row: dict[str, float]
    curve: np.ndarray


def score(pred: ViewPredictions, val: Scene, gt: GroundTruth, rotated: dict[float, Scene], folder: Path,
          cfg: EvalConfig) -> Scored:
    """Score one row of the table against the ground truth (the only place ground truth is read)."""
    rng = np.random.default_rng(cfg.seed)
    sampled: dict[str, list[float]] = {lvl: [] for lvl in LEVELS}
    dense: dict[str, list[float]] = {lvl: [] for lvl in LEVELS}
    curves = []
    si = []
    vc: dict[float, list[float]] = {a: [] for a in rotated}
    for v in range(val.num_views):
        masks = level_masks(gt, v, cfg.min_size)
        all_masks = np.concatenate([masks[lvl] for lvl in LEVELS])
        objects = foreground_masks(gt, v, cfg.min_size)
        for lvl in LEVELS:
            if len(masks[lvl]):
                sampled[lvl].append(metrics.normalized_covering_sampled(pred.val[v], masks[lvl], rng, cfg.samples,
                                                                        cfg.min_size))
                dense[lvl].append(metrics.normalized_covering(pred.val[v], masks[lvl], cfg.min_size))
        if len(all_masks):
            curves.append(metrics.normalized_covering_curve(pred.val[v], all_masks, cfg.min_size))
        if len(objects):
            si.append(metrics.segmentation_injectivity(pred.val[v], objects, rng, cfg.samples, cfg.min_size))
        stem = Path(val.names[v]).stem
        for a, rs in rotated.items():
            vis = _visible(folder, stem, a, val.depth[v].shape)
            if vis is None or a not in pred.rotated or not len(objects):
                continue
            vc[a].append(metrics.view_consistency(pred.val[v], pred.rotated[a][v], objects, val.depth[v],
                                                  val.K[v], val.c2w[v], rs.K[v], rs.c2w[v], vis, rng,
                                                  samples=cfg.samples, min_size=cfg.min_size))

    def mean(xs: list[float]) -> float:
        xs = [x for x in xs if np.isfinite(x)]
        return float(np.mean(xs)) if xs else float("nan")

    row: dict[str, float] = {}
    for lvl in LEVELS:
        row[LEVEL_COLUMNS[lvl]] = mean(sampled[lvl])
        row[LEVEL_COLUMNS[lvl] + "_dense"] = mean(dense[lvl])
    # NC_mean over the object and collection levels; the scene level stands apart (MEAN_LEVELS)
    row["NC_mean"] = mean([row[LEVEL_COLUMNS[lvl]] for lvl in MEAN_LEVELS])
    row["NC_mean_dense"] = mean([row[LEVEL_COLUMNS[lvl] + "_dense"] for lvl in MEAN_LEVELS])
    row["NC_mean_with_scene"] = mean([row[LEVEL_COLUMNS[lvl]] for lvl in LEVELS])
    row["SI"] = mean(si)
    for a in ROTATIONS:
        row[f"VC_{int(a)}"] = mean(vc.get(a, []))
    if pred.depth is not None:
        row["depth_err"] = mean([metrics.depth_error(d, val.depth[v], val.depth[v] > 0)
                                 for v, d in enumerate(pred.depth)])
    else:
        row["depth_err"] = float("nan")
    curve = np.nanmean(np.stack(curves), axis=0) if curves else np.zeros(0)
    return Scored(row, curve)


def no_surface(scene: Scene, view: int) -> np.ndarray | None:
    """bool [H, W]: the pixels of a view where the given depth hits no surface (None without depth)."""
    return None if scene.depth is None else scene.depth[view] <= 0


def with_no_surface_region(pred: ViewPredictions, val: Scene, rotated: dict[float, Scene]) -> ViewPredictions:
    """Every view's pixels without a surface made one region of every row alike (exact-geometry protocol: the
    rendered depth every Blender user has; see :func:`backend.core.metrics.no_surface_as_region`)."""
    def wrap(preds: list[Prediction], sc: Scene) -> list[Prediction]:
        out = []
        for v, p in enumerate(preds):
            region = no_surface(sc, v)
            out.append(metrics.as_prediction(p) if region is None else metrics.no_surface_as_region(p, region))
        return out

    return dataclasses.replace(pred, val=wrap(pred.val, val),
                               rotated={a: wrap(p, rotated[a]) for a, p in pred.rotated.items() if a in rotated})


def input_mask_predictions(val: Scene, rotated: dict[float, Scene], make, levels: int = 50) -> ViewPredictions:
    """The 2D baseline: the mask source's own masks on every view, queried per granularity like a point-prompted
    SAM user (:func:`backend.core.metrics.query_masks`). ``make(scene, split) -> list of bool [M,H,W]``."""
    return ViewPredictions(
        val=[metrics.query_masks(m, levels) for m in make(val, "val")],
        rotated={a: [metrics.query_masks(m, levels) for m in make(rs, rotated_split(a))] for a, rs in rotated.items()})


def format_rows(rows: dict[str, dict[str, float]]) -> str:
    """Markdown table like the paper's Table 1 (NC, SI, VC in percent; depth error in normalised units)."""
    return metrics.format_table(rows, COLUMNS, raw_columns=("depth_err",))
