"""The method end to end as library calls: masks -> field training -> 3D segmentation -> result.

Used by the ``backend`` CLI (train / segment / eval / demo) and by the job server (:func:`run_job`).
Each stage is a function of arrays and configs; files are read and written only by the ``*_run``
helpers at the edges, all inside one *run folder*::

    RUN/run.json            what was trained on (data folder, mask source, preset, overrides)
    RUN/masks/              cached 2D masks (per source and settings)
    RUN/checkpoint.pt       the trainer's checkpoint (resumable), train_config.json
    RUN/segmentation/       points.ply, hierarchy.json, result.npz, views/*.png (label maps, PCA)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from backend.method.config import (
    Ablation,
    PipelineConfig,
    config_from_json,
    config_json,
    train_config,
)
from backend.method.data import DataError, load_scene
from backend.core.export_metrics import ExportReport
from backend.core.geometry import directions_to, unproject_depth
from backend.method.masks.base import make_masks
from backend.method.fusion import fuse_points
from backend.wire.files import atomic_path, write_json_atomic
from backend.wire.protocol import JobResult, ProgressEvent, ResultArrays
from backend.core.pointcloud import PointCloud
from backend.core.scene import Scene, normalisation, normalise
from backend.core.segment import (SegmentConfig, Segmentation3D, export_labels, export_levels_info, export_thresholds,
                                  segment_hierarchy, segment_point_cloud)

Progress = Callable[[ProgressEvent], None]
ShouldStop = Callable[[], bool]

RUN_JSON = "run.json"
SEGMENTATION_DIR = "segmentation"

class RunError(ValueError):
    """A run folder is missing, incomplete, or belongs to another dataset."""


# ----------------------------------------------------------------------------------------------------------------
# Stages (arrays in, arrays out)
# ----------------------------------------------------------------------------------------------------------------
def content_bounds(scene: Scene, max_points: int = 200_000) -> np.ndarray | None:
    """[2,3] min/max of the surface seen in the depth maps (1st/99.9th percentiles), or None without depth."""
    if scene.depth is None or not (scene.depth > 0).any():
        return None
    rng = np.random.default_rng(0)
    pts = []
    for i in range(scene.num_views):
        p = unproject_depth(scene.depth[i], scene.K[i], scene.c2w[i])[scene.depth[i] > 0]
        pts.append(p)
    pts = np.concatenate(pts)
    if len(pts) > max_points:
        pts = pts[rng.choice(len(pts), max_points, replace=False)]
    lo, hi = np.percentile(pts, 0.1, axis=0), np.percentile(pts, 99.9, axis=0)
    pad = 0.02 * (hi - lo).max()
    return np.stack([lo - pad, hi + pad])


def normalise_scene(scene: Scene) -> Scene:
    """Put a world-unit scene into the unit box (content bounds from depth, else the camera rig)."""
    offset, scale = normalisation(scene.c2w.astype(np.float64), content_bounds(scene))
    return normalise(scene, offset, scale)


def make_view_masks(scene: Scene, cfg: PipelineConfig, data_dir: Path | None = None, cache_dir: Path | None = None,
                    progress: Progress | None = None) -> list[np.ndarray]:
    """Per-view 2D masks from the configured source (cached in ``cache_dir``)."""
    def on_mask(done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent(stage="masks", step=done, total=total, message=f"masks of view {done}/{total}"))

    if cfg.masks.source == "given" and scene.masks is not None:
        return scene.masks
    masks = make_masks(scene, cfg.masks, data_dir=data_dir, split="train", cache_dir=cache_dir, progress=on_mask)
    empty = [i for i, m in enumerate(masks) if m.shape[0] == 0]
    if len(empty) == len(masks):
        raise DataError(f"the mask source {cfg.masks.source!r} found no masks in any view "
                        "(are the images empty or fully transparent?)")
    return masks


def train_field(scene: Scene, masks: list[np.ndarray], cfg: PipelineConfig, run_dir: Path | None,
                progress: Progress | None = None, should_stop: ShouldStop | None = None, resume: bool = True):
    """Train (or resume) the ultrametric feature field; returns the ``Trainer``."""
    from backend.method.trainer import Trainer

    tc = train_config(cfg)

    def on_train(p) -> None:
        if progress is not None:
            losses = {k: float(v) for k, v in p.losses.items()}
            msg = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            progress(ProgressEvent(stage="training", step=int(p.step), total=int(p.total), message=msg,
                                   eta=None if p.eta_s is None else float(p.eta_s), losses=losses))

    if resume and run_dir is not None and (Path(run_dir) / "checkpoint.pt").is_file():
        trainer = Trainer.resume(Path(run_dir), scene, masks, progress=on_train, should_stop=should_stop,
                                 iterations=tc.iterations, device=tc.device)
    else:
        trainer = Trainer(scene, masks, tc, run_dir=run_dir, progress=on_train, should_stop=should_stop)
    trainer.fit()
    return trainer


def pixel_footprint(scene: Scene) -> float:
    """Median distance between neighbouring pixels' surface points (normalised units): depth / focal length."""
    if scene.depth is None or not (scene.depth > 0).any():
        return 0.0
    fg = scene.depth > 0
    return float(np.median(scene.depth[fg] / np.repeat(scene.K[:, 0, 0], fg.reshape(len(fg), -1).sum(1))))


def adapt_to_resolution(cfg: PipelineConfig, scene: Scene, feature_cell: float = 0.0) -> PipelineConfig:
    """Scale the paper's absolute radii (tuned for 200x200 Blender-HS views, where a pixel covers ~2e-3)
    up to this scene's pixel footprint, so low-resolution renders are not torn apart by the outlier
    filter or left with holes by the propagation gate; with ``voxel_at_least_feature_cell``, raise the voxel
    to ``feature_cell`` (the field's finest feature-grid cell, normalised units; see :class:`PointCloudConfig`)."""
    f = pixel_footprint(scene)
    voxel = cfg.pointcloud.voxel_size
    if cfg.pointcloud.voxel_at_least_feature_cell:
        voxel = max(voxel, feature_cell)
    pc = dataclasses.replace(cfg.pointcloud, voxel_size=voxel,
                             outlier_radius=max(cfg.pointcloud.outlier_radius, 2.0 * f, 2.0 * voxel))
    sg = dataclasses.replace(cfg.segment, propagate_max_distance=max(cfg.segment.propagate_max_distance, 2.0 * f,
                                                                     voxel))
    return dataclasses.replace(cfg, pointcloud=pc, segment=sg)


def for_geometry(cfg: PipelineConfig, geometry: str) -> PipelineConfig:
    """The 3D step's settings for a run's geometry: the concave-fold test (:attr:`SegmentConfig.concave_angle`)
    needs the exact surface Blender renders; a ``nerf`` run's cloud comes from the field's rendered depth, whose
    normals are too rough for a 10-degree test (measured on the table set, seed 0, paper protocol: ours-3D NC_mean
    50.4 -> 49.7 and object recall at the exported cuts 83 -> 67 % with it), so there only the 30-degree fold
    test applies."""
    if geometry == "depth" or cfg.segment.concave_angle == 0:
        return cfg
    return dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, concave_angle=0.0))


def feature_cell(trainer) -> float:
    """The trained field's finest feature-grid cell (normalised units)."""
    fc = trainer.cfg.field
    return 2.0 * fc.bound / fc.feature_grid.max_resolution


def fused_cloud(trainer, scene: Scene, cfg: PipelineConfig, should_stop: ShouldStop | None = None) -> PointCloud:
    """The feature point cloud of Sec. 4.2: the training views' surface points with their features, colours and
    view directions (unit vectors to the view's camera), fused (:func:`backend.method.fusion.fuse_points`) and
    subsampled to ``cfg.max_points``. Each view is subsampled to ``2 * max_points / views`` points before fusion
    (memory bounded by the settings, not the image size); ``cfg`` must already be adapted to the resolution
    (:func:`adapt_to_resolution`)."""
    per_view = max(1, -(-2 * cfg.max_points // max(scene.num_views, 1)))
    rng = np.random.default_rng(cfg.seed)
    parts = []
    for v in range(scene.num_views):
        if should_stop is not None and should_stop():
            raise InterruptedError("cancelled during segmentation")
        def sample(n: int) -> np.ndarray | None:  # the same draw as subsampling the view's full point set
            return np.sort(rng.choice(n, per_view, replace=False)) if n > per_view else None

        pts, feats, cols = trainer.sampled_feature_points(v, sample, should_stop)
        parts.append((pts, feats, cols, directions_to(pts, trainer.scene.c2w[v][:3, 3])))
    points, features, colors, dirs = (np.concatenate([x[i] for x in parts], 0) for i in range(4))
    del parts
    if should_stop is not None and should_stop():
        raise InterruptedError("cancelled during segmentation")
    cloud = fuse_points(points, colors, features, cfg.pointcloud, view_dirs=dirs)
    del points, features, colors, dirs  # before the subsample's copies (the peak the memory model counts)
    if len(cloud) > cfg.max_points:
        cloud = cloud.subset(np.sort(np.random.default_rng(cfg.seed).choice(len(cloud), cfg.max_points,
                                                                            replace=False)))
    return cloud


def segment_field(trainer, scene: Scene, cfg: PipelineConfig, progress: Progress | None = None,
                  should_stop: ShouldStop | None = None) -> Segmentation3D:
    """Fuse the training views' surface points and features into a cloud (:func:`fused_cloud`) and build its
    single-linkage tree. ``should_stop()`` is checked between views, before fusion and between the tree's steps
    (raises ``InterruptedError``)."""
    if progress is not None:
        progress(ProgressEvent(stage="segmentation", step=0, total=3, message="feature point cloud"))
    cfg = for_geometry(adapt_to_resolution(cfg, scene, feature_cell(trainer)), trainer.geometry)
    cloud = fused_cloud(trainer, scene, cfg, should_stop)
    if progress is not None:
        progress(ProgressEvent(stage="segmentation", step=1, total=3, message=f"tree over {len(cloud)} points"))
    seg = segment_point_cloud(cloud, cfg.segment, should_stop=should_stop)
    if progress is not None:
        progress(ProgressEvent(stage="segmentation", step=3, total=3, message="done"))
    return seg


def build_result(seg: Segmentation3D, scene: Scene, thresholds=None, cfg: SegmentConfig | None = None) -> JobResult:
    """The job result: world-unit points, colours, the tree (any threshold is a cut) and labels at the exported
    cuts (``thresholds``, else :func:`backend.core.segment.export_thresholds`; dust absorbed as
    :func:`backend.core.segment.export_labels` does)."""
    cfg = cfg or SegmentConfig()
    max_segments = cfg.max_segments
    chosen_given = bool(thresholds)
    chosen = list(thresholds) if thresholds else export_thresholds(seg, cfg)
    thresholds = np.asarray(sorted(float(t) for t in chosen), np.float64)
    labels = export_labels(seg, thresholds, cfg)
    world = seg.cloud.points / np.float32(scene.scale) + scene.offset.astype(np.float32)
    tree = seg.tree
    arrays = {
        ResultArrays.POINTS: world.astype(np.float32),
        ResultArrays.COLORS: seg.cloud.colors.astype(np.uint8),
        ResultArrays.PARENTS: tree.parents.astype(np.int32),
        ResultArrays.ALTITUDES: np.minimum(tree.altitudes, np.finfo(np.float32).max).astype(np.float32),
        ResultArrays.LABELS: labels.astype(np.int32),
        ResultArrays.THRESHOLDS: thresholds.astype(np.float32),
    }
    hierarchy = segment_hierarchy(labels, thresholds)
    hierarchy["levels_chosen_by"] = (export_levels_info(cfg, len(seg.cloud)) if not chosen_given else
                                     {"rule": "requested", "thresholds": [float(t) for t in thresholds]})
    meta = {"hierarchy": hierarchy, "num_points": int(len(seg.cloud)),
            "max_segments": int(max_segments), "scale": float(scene.scale),
            "offset": [float(x) for x in scene.offset], "distance": "1 - cosine"}
    return JobResult(arrays=arrays, meta=meta)


# ----------------------------------------------------------------------------------------------------------------
# Run folders (CLI)
# ----------------------------------------------------------------------------------------------------------------
def write_run_info(run: Path, data: Path, cfg: PipelineConfig, max_views: int | None = None,
                   geometry: str | None = None) -> None:
    """``run.json``: the data folder, the config, ``max_views`` (the training views used: segment and eval
    load the same ones, or the checkpoint's scene fingerprint would not match) and what the masks and the
    training read beyond posed colour (:func:`backend.method.inputs.ground_truth_read`)."""
    from backend.method.inputs import ground_truth_read

    run.mkdir(parents=True, exist_ok=True)
    reads = ground_truth_read(cfg, geometry) if geometry else {"masks": cfg.masks.ground_truth_read(geometry)}
    info = {"data": str(Path(data).resolve()), "config": config_json(cfg), "max_views": max_views,
            "geometry": geometry, "masks_read_ground_truth": reads["masks"], "ground_truth_read": reads,
            "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json_atomic(run / RUN_JSON, info, indent=1)


def read_run_info(run: Path) -> tuple[Path, PipelineConfig]:
    path = Path(run) / RUN_JSON
    if not path.is_file():
        raise RunError(f"{run} is not a run folder (no {RUN_JSON}); make one with `backend train DATA {run}`")
    try:
        info = json.loads(path.read_text())
        return Path(info["data"]), config_from_json(info["config"])
    except (KeyError, json.JSONDecodeError, TypeError) as e:
        raise RunError(f"{path} is damaged ({e}); train again into a new folder") from None


def run_max_views(run: Path) -> int | None:
    """The ``--max-views`` a run was trained with (None: every training view, or a run.json from before
    it was recorded)."""
    try:
        value = json.loads((Path(run) / RUN_JSON).read_text()).get("max_views")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def train_run(data: Path, run: Path, cfg: PipelineConfig, progress: Progress | None = None,
              should_stop: ShouldStop | None = None, resume: bool = True, max_views: int | None = None):
    """Load ``data``'s train split, make masks, train into ``run`` (resuming a checkpoint there)."""
    data, run = Path(data), Path(run)
    train_config(cfg)  # unknown presets / bad overrides fail before any work
    if (run / RUN_JSON).is_file():
        old_data, _ = read_run_info(run)
        if old_data.resolve() != data.resolve():
            raise RunError(f"{run} holds a run of {old_data}, not {data}; choose another run folder")
        if max_views is None and resume and (run / "checkpoint.pt").is_file():
            max_views = run_max_views(run)  # resuming: the same views as before
    from backend.method.inputs import run_geometry, visible_scene

    scene = load_scene(data, "train", max_views=max_views)
    geometry = run_geometry(scene, cfg)
    scene = visible_scene(scene, cfg)  # only what the run declares reaches masks and training
    write_run_info(run, data, cfg, max_views, geometry)
    masks = make_view_masks(scene, cfg, data_dir=data, cache_dir=run / "masks", progress=progress)
    trainer = train_field(scene, masks, cfg, run, progress=progress, should_stop=should_stop, resume=resume)
    return trainer, scene, masks


def load_trained(run: Path, data: Path | None = None, max_views: int | None = None):
    """Reload a finished run: (trainer, train scene, masks, data folder, config)."""
    run = Path(run)
    data_recorded, cfg = read_run_info(run)
    from backend.method.trainer import Trainer

    data = Path(data) if data is not None else data_recorded
    max_views = max_views if max_views is not None else run_max_views(run)
    if not (run / "checkpoint.pt").is_file():
        raise RunError(f"{run} has no checkpoint.pt: training has not started or was removed")
    from backend.method.inputs import visible_scene

    scene = visible_scene(load_scene(data, "train", max_views=max_views), cfg)
    masks = make_view_masks(scene, cfg, data_dir=data, cache_dir=run / "masks")
    trainer = Trainer.resume(run, scene, masks)
    return trainer, scene, masks, data, cfg


def pca_image(features: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H,W,3] image of the first three principal components of a feature map [H,W,D]."""
    h, w, d = features.shape
    f = features.reshape(-1, d).astype(np.float64)
    m = np.ones(h * w, bool) if valid is None else valid.reshape(-1)
    out = np.zeros((h * w, 3))
    if m.sum() >= 3:
        x = f[m] - f[m].mean(0)
        _, _, vt = np.linalg.svd(x[:: max(1, len(x) // 20000)], full_matrices=False)
        y = x @ vt[:3].T
        lo, hi = np.percentile(y, 1, axis=0), np.percentile(y, 99, axis=0)
        out[m, : y.shape[1]] = np.clip((y - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    return (out.reshape(h, w, 3) * 255).astype(np.uint8)


def sweep_thresholds(seg: Segmentation3D, count: int = 8, finest: float = 0.35, coarsest: float = 0.92) -> np.ndarray:
    """float64 [<= count] thresholds of a granularity sweep (as the add-on's slider: about ``N ** (1 - g)``
    segments for ``g`` evenly spaced from ``finest`` to ``coarsest``), finite, distinct, increasing."""
    from backend.wire.tree_cut import granularity_to_threshold, merge_altitudes

    n = len(seg.cloud)
    merges = merge_altitudes(seg.tree.parents, seg.tree.altitudes, n)
    merges = merges[np.isfinite(merges)]
    t = [granularity_to_threshold(merges, n, g) for g in np.linspace(finest, coarsest, count)]
    return np.unique(np.asarray([x for x in t if np.isfinite(x) and x > 0], np.float64))


def segment_run(run: Path, thresholds=None, out: Path | None = None, data: Path | None = None,
                progress: Progress | None = None, views: int = 4) -> Path:
    """3D-segment a trained run. Writes (see docs/backend.md) ``points.ply``, ``points_segments.ply``,
    ``hierarchy.json``, ``result.npz``, ``tree.npz``; per view ``views/<view>_sheet.png`` (image, PCA of the
    features, 4 cuts over the image) and ``views/<view>_labels.npz`` (label maps [T, H, W] + thresholds); and
    ``sweep.gif`` / ``sweep.png`` (the first view through a sweep of cuts, fine to coarse)."""
    from backend.core.segment import view_labels
    from backend.method import exports
    from backend.wire.result_files import write_outputs

    trainer, scene, _, data, cfg = load_trained(run, data)
    cfg = adapt_to_resolution(cfg, scene, feature_cell(trainer))
    # exported view label maps: -1 where no segment (background included), as in the PLYs
    cfg = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, background_segment=False))
    out = Path(out) if out is not None else Path(run) / SEGMENTATION_DIR
    seg = segment_field(trainer, scene, cfg, progress)
    result = build_result(seg, scene, thresholds, cfg.segment)
    write_outputs(result, out)
    with atomic_path(out / "tree.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, parents=seg.tree.parents, altitudes=seg.tree.altitudes)
    vdir = out / "views"
    vdir.mkdir(parents=True, exist_ok=True)
    labels = result.arrays[ResultArrays.LABELS]
    thr = np.asarray(result.arrays[ResultArrays.THRESHOLDS])
    tables = exports.colour_tables(labels)
    sweep = sweep_thresholds(seg)
    distance = "1 - cos, plus the cost of a fold" if cfg.segment.crease_angle > 0 else "feature distance 1 - cos"
    for k, i in enumerate(np.linspace(0, scene.num_views - 1, min(views, scene.num_views)).round().astype(int)):
        stem = Path(scene.names[i]).stem if scene.names else f"view_{i}"
        r = trainer.render_view(scene.c2w[i], scene.K[i], scene.height, scene.width,
                                None if scene.depth is None else scene.depth[i])
        depth = scene.depth[i] if scene.depth is not None else r.depth
        lab = view_labels(seg, labels, depth, scene.K[i], scene.c2w[i], cfg.segment)
        with atomic_path(vdir / f"{stem}_labels.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, labels=lab.astype(np.int32), thresholds=thr)
        rgb = exports.composite(scene.rgb[i], None if scene.alpha is None else scene.alpha[i])
        pca = pca_image(r.features, r.depth > 0)
        pca[~(r.depth > 0)] = exports.BACKGROUND
        sheet = exports.view_sheet(rgb, pca, lab, thr, tables,
                                   f"{stem}: cuts of the tree distance ({distance}), fine to coarse "
                                   "(colours follow the tree)")
        exports.save_png(sheet, vdir / f"{stem}_sheet.png")
        if k == 0 and len(sweep):
            cloud = seg.labels(sweep, max_segments=cfg.segment.max_segments)
            maps = view_labels(seg, cloud, depth, scene.K[i], scene.c2w[i], cfg.segment)
            exports.write_sweep(rgb, maps, sweep, exports.colour_tables(cloud), out,
                                f"{stem}: granularity sweep, fine to coarse (t: {distance})")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Evaluation (CLI)
# ----------------------------------------------------------------------------------------------------------------
def predict_views(trainer, seg: Segmentation3D, scenes: list[Scene], protocol: str, eval_cfg,
                  cfg: PipelineConfig) -> dict[str, list[list]]:
    """Predictions for each scene (val, then each rotation), by row name: ``ours-2D`` / ``ours-3D`` at the
    released code's thresholds, the same ``(whole tree)`` at quantiles of each tree, and ``depth`` per view.

    ``paper`` protocol: the scenes are stripped of depth, alpha and masks first, features and novel-view depth
    come from the field (nerf geometry). ``exact-geometry``: each view's exact depth places features and labels.
    The 2D graph always covers every pixel.
    """
    from backend.core import segment
    from backend.core.metrics import Prediction, unassigned_as_region
    from backend.core.segment import altitude_quantiles, view_labels
    from backend.method.evaluation import strip_ground_truth

    n_max = cfg.segment.max_segments
    thresholds = eval_cfg.tree_thresholds()
    cloud = {"": seg.labels(thresholds, max_segments=n_max),
             " (whole tree)": seg.labels(altitude_quantiles(seg.tree, eval_cfg.sweep), max_segments=n_max)}
    out: dict[str, list[list]] = {k: [] for k in ("ours-2D", "ours-3D", "ours-2D (whole tree)",
                                                  "ours-3D (whole tree)", "depth")}
    for sc in scenes:
        if protocol == "paper":
            sc = strip_ground_truth(sc)
        per = {k: [] for k in out}
        for i in range(sc.num_views):
            given = None if sc.depth is None else sc.depth[i]
            r = trainer.render_view(sc.c2w[i], sc.K[i], sc.height, sc.width, given)
            depth = r.depth if protocol == "paper" else given
            # pixels outside the kept segments form one region, as for every other row (released scripts)
            per["ours-2D"].append(Prediction(unassigned_as_region(
                segment.segment_feature_map(r.features, thresholds, n_max))))
            per["ours-2D (whole tree)"].append(Prediction(unassigned_as_region(segment.segment_feature_map(
                r.features, None, n_max, quantiles=eval_cfg.sweep))))
            for suffix, labels in cloud.items():  # pixels no point reaches form one region (released scripts)
                per["ours-3D" + suffix].append(Prediction(unassigned_as_region(
                    view_labels(seg, labels, depth, sc.K[i], sc.c2w[i], cfg.segment))))
            per["depth"].append(r.depth)
        for k in out:
            out[k].append(per[k])
    return out


@dataclass
class Evaluation:
    """Rows of the table, the NC-per-granularity curve of each row, what each row read beyond posed colour, and
    the exported cuts scored in 3D (None when the data has no depth or ids for the training views)."""

    rows: dict[str, dict[str, float]]
    curves: dict[str, np.ndarray]
    protocol: str
    reads: dict[str, str] = dataclasses.field(default_factory=dict)
    exported: ExportReport | None = None


def score_exported_cuts(seg: Segmentation3D, scene: Scene, data: Path, cfg: PipelineConfig) -> ExportReport | None:
    """The cuts a user receives (the exported thresholds; the add-on opens on
    :func:`backend.wire.presets.default_cut_index`) scored against the ground-truth objects the cloud's points lie
    on (:mod:`backend.core.export_metrics`). Ground truth (train-view depth and ids) is read here, for the metric
    only. None when the folder lacks it."""
    from backend.core.export_metrics import point_leaf_ids, score_exported
    from backend.method.data import load_ground_truth
    from backend.wire.presets import default_cut_index

    try:
        truth = load_scene(data, "train", max_views=scene.num_views)
        gt = load_ground_truth(data, "train", truth.names)
    except DataError:
        return None
    if truth.depth is None or truth.names != scene.names:
        return None
    leaf = point_leaf_ids(seg.cloud.points, truth.depth, gt.ids, truth.K, truth.c2w)
    levels = {lvl: gt.level_labels(leaf, lvl) for lvl in ("object", "collection")}
    thresholds = export_thresholds(seg, cfg.segment)
    labels = export_labels(seg, thresholds, cfg.segment)
    return score_exported(labels, thresholds, levels, default_cut_index(len(thresholds)))


def input_mask_scene(scene: Scene, cfg: PipelineConfig, protocol: str) -> Scene:
    """A val view as the input-mask row's source may see it: the knowledge the training masks had, no more
    (alpha or depth only when the mask source declares it; the exact-geometry protocol gives every row depth)."""
    reads = cfg.masks.reads() | ({"depth"} if protocol == "exact-geometry" else set())
    return dataclasses.replace(scene, depth=scene.depth if "depth" in reads else None,
                               alpha=scene.alpha if "alpha" in reads else None, masks=None)


def evaluate_trained(trainer, scene: Scene, data: Path, cfg: PipelineConfig, eval_cfg=None,
                     with_input_masks: bool = True, progress: Progress | None = None) -> Evaluation:
    """Rows ``input masks (2D)``, ``ours-2D``, ``ours-3D`` (and their whole-tree sweeps) for a trained field."""
    from backend.method.evaluation import (EvalConfig, ViewPredictions, input_mask_predictions, load_eval_views,
                                           resolve_protocol, score, with_no_surface_region)
    from backend.method.inputs import describe_reads, ground_truth_read

    eval_cfg = eval_cfg or EvalConfig(seed=cfg.seed)
    protocol = resolve_protocol(eval_cfg.protocol, trainer.geometry)
    cfg = adapt_to_resolution(cfg, scene, feature_cell(trainer))
    data = Path(data)
    val, gt, rotated = load_eval_views(data, eval_cfg)

    def note(step: int, msg: str) -> None:
        if progress is not None:
            progress(ProgressEvent(stage="evaluation", step=step, total=4, message=msg))

    note(0, "3D segmentation")
    seg = segment_field(trainer, scene, cfg)
    note(1, f"rendering and labelling the val views ({protocol} protocol)")
    angles = list(rotated)
    pred = predict_views(trainer, seg, [val] + [rotated[a] for a in angles], protocol, eval_cfg, cfg)
    rows: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    exact = protocol == "exact-geometry"  # every row is handed the no-surface region of the rendered depth
    reads = ground_truth_read(cfg, trainer.geometry)
    given = "; the no-surface region of the rendered depth" if exact else ""
    row_reads = {"input masks (2D)": describe_reads({"masks": reads["masks"]}) + given}
    if with_input_masks:
        note(2, "input masks of the val views")

        def make(sc: Scene, split: str) -> list[np.ndarray]:
            return make_masks(input_mask_scene(sc, cfg, protocol), cfg.masks, data_dir=data, split=split)

        vp = input_mask_predictions(val, rotated, make, eval_cfg.sweep)
        s = score(with_no_surface_region(vp, val, rotated) if exact else vp, val, gt, rotated, data, eval_cfg)
        rows["input masks (2D)"], curves["input masks (2D)"] = s.row, s.curve
    note(3, "scoring")
    nerf = trainer.geometry == "nerf"  # in depth geometry the depth is given, so its error is not a result
    for name in ("ours-2D", "ours-3D", "ours-2D (whole tree)", "ours-3D (whole tree)"):
        labels = pred[name]
        vp = ViewPredictions(val=labels[0], rotated={a: labels[k + 1] for k, a in enumerate(angles)},
                             depth=pred["depth"][0] if nerf else None)
        s = score(with_no_surface_region(vp, val, rotated) if exact else vp, val, gt, rotated, data, eval_cfg)
        rows[name], curves[name] = s.row, s.curve
        row_reads[name] = describe_reads(reads) + given
    exported = score_exported_cuts(seg, scene, data, cfg)
    return Evaluation(rows, curves, protocol, row_reads, exported)


def evaluate_run(data: Path, run: Path, out: Path | None = None, ablations: bool = False,
                 eval_cfg=None, progress: Progress | None = None, max_train_views: int | None = None) -> Path:
    """Evaluate a trained run on ``data``'s val split; with ``ablations`` also train and score the ablated
    variants next to it. Writes ``eval.md``, ``eval.json`` and ``eval_nc.png``; returns the Markdown path."""
    from backend.method.evaluation import EvalConfig, format_rows
    from backend.method.figures import plot_nc_curves

    run = Path(run)
    eval_cfg = eval_cfg or EvalConfig()
    trainer, scene, _, _, cfg = load_trained(run, data, max_views=max_train_views)
    ev = evaluate_trained(trainer, scene, data, cfg, eval_cfg, progress=progress)
    rows, curves = ev.rows, ev.curves
    notes = []
    if ablations:
        variants = [Ablation(ultrametric=False), Ablation(hierarchical_sampling=False)]
        if trainer.geometry == "nerf":
            variants.append(Ablation(depth_continuity=False))
        else:
            notes.append("The depth continuity ablation is skipped: in depth geometry the given depth is exact "
                         "and the loss (Eq. 5) is not used.")
        for ab in variants:
            sub = dataclasses.replace(cfg, ablation=ab)
            t, sc, _ = train_run(data, run / "ablations" / ab.name, sub, progress=progress,
                                 max_views=max_train_views or run_max_views(run))
            r = evaluate_trained(t, sc, data, sub, eval_cfg, with_input_masks=False, progress=progress)
            for base in ("ours-3D", "ours-2D"):
                rows[f"{base} ({ab.name})"] = r.rows[base]
                curves[f"{base} ({ab.name})"] = r.curves[base]
    out = Path(out) if out is not None else run
    out.mkdir(parents=True, exist_ok=True)
    info = evaluation_info(ev.protocol, trainer, cfg, eval_cfg, data)
    header = ("Evaluation of `{run}` on `{data}` (val split).\n\n".format(run=run, data=data)
              + "".join(f"- {k}: {v}\n" for k, v in info.items())
              + "".join(f"- {n}\n" for n in notes)
              + "\n## Per-point oracle (the tree at its best threshold per ground-truth point)\n\n"
              "NC, SI and VC in percent; depth error in normalised scene units. NC_obj/coll/scene: the released "
              "scripts' sampled NC, each ground-truth point scored at its best threshold; NC_mean averages the object "
              "and collection levels (the scene level stands apart, see the scene-level rule above); NC_mean_dense: "
              f"Eq. 6. `(whole tree)` rows cut each tree at {eval_cfg.sweep} quantiles of its own merge altitudes "
              "instead of the fixed thresholds.\n\n")
    reads = "\n".join(["| row | read beyond posed colour |", "|---|---|"]
                       + [f"| {name} | {text} |" for name, text in ev.reads.items() if name in rows])
    body = (header + format_rows(rows) + "\n\nWhat each row read:\n\n" + reads + "\n\n"
            + exported_markdown(ev.exported) + "\n![NC against granularity](eval_nc.png)\n")
    (out / "eval.md").write_text(body)
    finite = {name: {k: (v if np.isfinite(v) else None) for k, v in row.items()} for name, row in rows.items()}
    report = {"info": info, "rows": finite, "reads": ev.reads,
              "exported_cuts": None if ev.exported is None else ev.exported.as_json(),
              "nc_curves": {k: [None if not np.isfinite(x) else float(x) for x in c] for k, c in curves.items()}}
    (out / "eval.json").write_text(json.dumps(report, indent=1))  # null where a metric does not apply
    plot_nc_curves(curves, eval_cfg.thresholds(), out / "eval_nc.png",
                   title=f"{Path(data).name}: NC against granularity ({ev.protocol} protocol)")
    return out / "eval.md"


def exported_markdown(rep: ExportReport | None) -> str:
    """The "what the user receives" section of eval.md: every exported cut scored in 3D."""
    if rep is None:
        return ("## What the user receives\n\nNot scored: the data folder lacks depth or ids for the training "
                "views.\n\n")

    def pct(x: float) -> str:
        return "-" if not np.isfinite(x) else f"{100 * x:.1f}"

    lines = ["## What the user receives (the exported cuts, scored on the point cloud)\n",
             f"Each cloud point takes the ground-truth object it lies on (from the training views' depth and ids; "
             f"{pct(rep.unlabelled_share)} % of the points lie on none). {rep.objects} objects hold >= 0.5 % of the "
             f"points. **Object recall at the exported cuts: {pct(rep.recall_any)} %** (an object is recalled when "
             f"a segment of some exported cut has IoU >= 0.5 with it); NC of points at the single best exported cut: "
             + ", ".join(f"{k} {pct(v)}" for k, v in rep.nc_best.items())
             + f". The add-on opens on cut {rep.default_index + 1}.\n",
             "| cut | threshold (1 - cos) | segments >= 0.5 % | largest segment share | object recall | "
             "NC_obj (points) | NC_coll (points) |", "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(rep.cuts):
        mark = " (add-on default)" if i == rep.default_index else ""
        lines.append(f"| {i + 1}{mark} | {c.threshold:g} | {c.segments} | {pct(c.largest_share)} % | "
                     f"{pct(c.object_recall)} % | {pct(c.nc_points.get('object', float('nan')))} | "
                     f"{pct(c.nc_points.get('collection', float('nan')))} |")
    return "\n".join(lines) + "\n"


def evaluation_info(protocol: str, trainer, cfg: PipelineConfig, eval_cfg, data: Path) -> dict[str, str]:
    """What every figure of an evaluation depends on, stated next to the table."""
    from backend.method.evaluation import protocol_description

    from backend.method.inputs import describe_reads, ground_truth_read

    gt = cfg.masks.ground_truth_read(trainer.geometry)
    th = eval_cfg.thresholds()
    scene_rule = ("every row (input masks, ours-2D, ours-3D) is given the pixels where the rendered depth hits no "
                  "surface as one region: a Blender user has that depth, and its zeros are exactly the ground-truth "
                  "background, so NC_scene measures that given silhouette; NC_mean therefore averages the object "
                  "and collection levels only (eval.json's NC_mean_with_scene keeps the three-level mean)"
                  if protocol == "exact-geometry" else
                  "no row is given the background: ours-3D's comes from the field's own opacity, the input masks "
                  "get none; NC_mean averages the object and collection levels (eval.json's NC_mean_with_scene "
                  "keeps the three-level mean)")
    return {
        "protocol": f"{protocol} ({protocol_description(protocol)})",
        "scene-level rule": scene_rule,
        "ground truth read by the prediction": describe_reads(ground_truth_read(cfg, trainer.geometry))
        + ("; the rendered depth of the val views (exact geometry)" if protocol == "exact-geometry" else ""),
        "unit box": "the dataset's own normalisation (scene bounds in meta.json: the released Blender-HS "
                    "convention of content in [-0.5, 0.5]^3)",
        "geometry used in training": trainer.geometry,
        "novel-view depth": "rendered by the field" if protocol == "paper" else "exact rendered depth (Blender)",
        "mask source": cfg.masks.source + (f" (read: {', '.join(gt)})" if gt else " (colour only; no ground truth)"),
        "thresholds": f"{len(th)} cuts {th[0]:g}-{th[-1]:g} of the Euclidean distance between unit features "
                      f"(1 - cos = d^2/2), plus a {eval_cfg.sweep}-quantile whole-tree sweep",
        "NC": f"sampled ({eval_cfg.samples} points per GT mask, mean of the best IoU; scene level scores the "
              "background) and dense Eq. 6",
        "SI": f"appendix A.3 ({eval_cfg.samples} point pairs per GT mask)",
        "preset / iterations / seed": f"{cfg.preset} / {trainer.step} / {cfg.seed}",
        "evaluation seed": str(eval_cfg.seed),
    }
