"""Configuration of the method: the training config, THE preset table, and the pipeline config of one run.

Every preset is a whole :class:`TrainConfig` derived from the paper's defaults with ``dataclasses.replace``;
its name and a truthful description live in :mod:`backend.wire.presets`, the vocabulary the CLI, the job
protocol and the Blender add-on share (an import-time check keeps the two in step).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.core.configs import dataclass_from_dict
from backend.core.pointcloud import PointCloudConfig
from backend.core.segment import SegmentConfig
from backend.method.field.encoding import HashGridConfig
from backend.method.field.model import UltrametricFieldConfig, scaled_config
from backend.method.losses import ContrastiveLossConfig
from backend.method.masks.base import MaskConfig
from backend.wire import presets

GEOMETRY_MODES = presets.GEOMETRIES


class ConfigError(ValueError):
    """A configuration names an unknown preset or holds an impossible value."""


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; defaults are the paper's (Sec. 5.4 and appendix A)."""

    iterations: int = 20_000
    """Optimisation steps."""
    rays_per_step: int = 4096
    """Pixels (rays) sampled per step, all from ONE training image."""
    lr: float = 1e-2
    """Adam learning rate at the start."""
    lr_final_ratio: float = 1.0 / 30.0
    """Cosine decay of the learning rate down to ``lr * lr_final_ratio`` at the last step."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas (the released code; Instant-NGP's 0.99 measured no better, docs/quality.md)."""
    adam_eps: float = 1e-15
    """Adam epsilon (Instant-NGP)."""
    geometry: str = "auto"
    """``auto`` (``depth`` when every view has depth, else ``nerf``), ``depth`` or ``nerf``."""
    device: str = "auto"
    """Torch device (``auto``: CUDA when available, else CPU)."""
    mixed_precision: bool = True
    """fp16 autocast + grad scaling on CUDA (paper: fp16); always off on CPU."""
    seed: int = 0
    """Seed of the model initialisation, pixel/pair sampling and ray jitter."""
    checkpoint_every: int = 1000
    """Write ``checkpoint.pt`` every this many steps (0: only at the end / on stop); needs a run folder."""
    progress_every: int = 10
    """Call the progress callback every this many steps (and at the end)."""
    feature_weight: float = 1.0
    """Weight of the contrastive feature loss (ultrametric + alpha * Euclidean, Eq. 4)."""
    norm_weight: float = 0.1
    """Weight of the raw-feature norm loss ``(||f|| - 1)^2`` (released code)."""
    rgb_weight: float = 1.0
    """Weight of the colour MSE (``nerf`` mode)."""
    depth_weight: float = 0.0
    """Weight of the L1 depth supervision in ``nerf`` mode (reads the rendered depth, declared in run.json and
    eval.md; 0, the default, trains from colour alone as the paper does, Sec. 5.4)."""
    composite_alpha: bool = False
    """``nerf`` mode: composite the images' transparent pixels onto ``background_rgb`` before the colour loss
    (reads the alpha, declared). False, the default, fits the colour channels as stored (the paper protocol's
    colour-only input)."""
    depth_continuity_weight: float = 1.0
    """Weight of the depth continuity loss (Eq. 5; ``nerf`` mode only; the paper gives no value)."""
    depth_continuity_start: int = 5000
    """First step using the depth continuity loss (A.1: after 5,000 of 20,000 iterations)."""
    depth_continuity_threshold: float = 0.1
    """Threshold ``t`` of Eq. 5 (not given in the paper; 0.1 in the released code)."""
    depth_continuity_true_angle: bool = False
    """Use the real angle between adjacent rays (``1 / fx``) as ``dtheta`` of Eq. 5; False uses the released
    code's ``dtheta = 1``."""
    stencils_per_mask: int = 16
    """Depth continuity stencils per finest-level mask (A.1: 16 patches per mask)."""
    max_stencils: int = 1024
    """Cap on stencils rendered per step (random subset beyond it)."""
    num_samples: int = 64
    """Samples per ray for volume rendering (``nerf`` mode)."""
    occupancy_resolution: int = 64
    """Occupancy grid cells per axis (``nerf`` mode)."""
    occupancy_every: int = 16
    """Update the occupancy grid every this many steps."""
    occupancy_warmup: int = 256
    """First occupancy update (before it, every cell counts as occupied)."""
    occupancy_threshold: float = 0.01
    """Density below which a cell is empty."""
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Colour behind the scene (``nerf`` mode): what a ray that hits nothing renders, and with
    ``composite_alpha`` what transparent pixels are composited onto. Black: a Blender render on transparent film
    stores black colour where nothing was hit."""
    n_pos: int = 64
    """Positive pairs per mask and level (A.1)."""
    n_neg: int = 64
    """Negative pairs per mask and level (A.1)."""
    p_in: float = 0.95
    """Mask tree inclusion threshold (Algorithm 1)."""
    p_iou: float = 0.85
    """Mask tree IoU threshold (paper 0.85, released code 0.9)."""
    image_mask_trees: bool = False
    """Build each image's mask tree once on its full-resolution masks (Algorithm 1's inclusion tests on exact
    areas) and restrict it to the sampled pixels at every step (authors' code). False rebuilds the tree every step
    from the sampled pixels only (noisy inclusion estimates; the tree changes from step to step). The size filter
    (5 < area < P - 5 of P sampled pixels) is scaled to the image."""
    reuse_negatives: bool = False
    """Algorithm 1's reuse: the positives of a node with children are its children's negatives (authors' code;
    see :func:`backend.core.sampling.sample_hierarchical_pairs`)."""
    feature_cell_pixels: float = 0.0
    """When > 0, the feature grid's finest resolution is derived from the scene instead of
    ``field.feature_grid.max_resolution``: the finest cell spans about this many pixel footprints at the median
    surface depth (:func:`feature_resolution`), so two objects a few pixels apart get cells of their own (a plate
    on a table at resolution 64 shares cells with the table). 0 keeps the configured resolution."""
    cpu_threads: int = 1
    """Torch intra-op threads of a training step on a CPU, with one BLAS thread (:mod:`backend.method.threads`);
    a core left over prepares the next steps' host work. 0 leaves torch's and BLAS's own settings (every core
    each). A cpu-preset step is many small operations: on a loaded 2-core machine the former step ran 6x faster on
    one thread than on torch's and OpenBLAS's defaults (docs/quality.md, issue #24; not measured on an idle machine
    or on more cores). Results do not depend on it beyond float rounding."""
    render_chunk: int = 8192
    """Points per chunk when querying features at depth points; volume rendering uses
    ``render_chunk * 16 / num_samples`` rays per chunk (bounded memory)."""
    loss: ContrastiveLossConfig = field(default_factory=ContrastiveLossConfig)
    """Contrastive loss settings (temperature, alpha, kNN graph, which terms)."""
    field: UltrametricFieldConfig = field(default_factory=UltrametricFieldConfig)
    """Field architecture."""

    def loss_weights(self) -> dict[str, float]:
        """Weight of each :class:`backend.method.losses.LossTerms` field."""
        return {"ultrametric": self.feature_weight, "euclidean": self.feature_weight, "norm": self.norm_weight,
                "rgb": self.rgb_weight, "depth": self.depth_weight,
                "depth_continuity": self.depth_continuity_weight}

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRY_MODES:
            raise ValueError(f"geometry must be one of {GEOMETRY_MODES}, got {self.geometry!r}")
        if self.iterations < 0 or self.rays_per_step < 8:
            raise ValueError("iterations must be >= 0 and rays_per_step >= 8")
        if not 0 < self.lr_final_ratio <= 1:
            raise ValueError("lr_final_ratio must be in (0, 1]")


def feature_resolution(bound: float, footprint: float, cell_pixels: float, lo: int = 64, hi: int = 2048) -> int:
    """Finest feature-grid resolution whose cell (``2 * bound / res``) spans ``cell_pixels`` pixel footprints,
    rounded up to a power of two and clamped to ``[lo, hi]``.

    >>> feature_resolution(0.5, 0.007, 2.0)
    128
    """
    if footprint <= 0 or cell_pixels <= 0:
        return lo
    res = 2.0 * bound / (cell_pixels * footprint)
    return int(min(max(2 ** int(np.ceil(np.log2(max(res, 1.0)))), lo), hi))


def scene_pixel_footprint(scene) -> float:
    """Median size of one pixel on the surface (normalised units): depth / focal length over the foreground when
    the scene has depth, else each camera's distance to the scene centre / focal length."""
    fx = np.asarray(scene.K)[:, 0, 0].astype(np.float64)
    if scene.depth is not None and (scene.depth > 0).any():
        d = np.asarray(scene.depth)
        fg = d > 0
        return float(np.median(d[fg] / np.repeat(fx, fg.reshape(len(fg), -1).sum(1))))
    dist = np.linalg.norm(np.asarray(scene.c2w)[:, :3, 3], axis=1)
    return float(np.median(dist / fx))


def resolve_scene_dependent(cfg: TrainConfig, footprint: float) -> TrainConfig:
    """``cfg`` with its scene-dependent settings fixed for a scene of this pixel footprint (normalised units)."""
    if cfg.feature_cell_pixels <= 0:
        return cfg
    fg = replace(cfg.field.feature_grid,
                 max_resolution=feature_resolution(cfg.field.bound, footprint, cfg.feature_cell_pixels))
    return replace(cfg, field=replace(cfg.field, feature_grid=fg))


def _scaled(cfg: TrainConfig, iterations: int) -> TrainConfig:
    """``cfg`` with a new iteration count; the depth continuity start keeps its fraction of the run."""
    frac = cfg.depth_continuity_start / max(cfg.iterations, 1)
    return replace(cfg, iterations=iterations, depth_continuity_start=int(round(frac * iterations)),
                   occupancy_warmup=min(cfg.occupancy_warmup, max(iterations // 8, 16)))


#: The paper as the authors' code runs it: Algorithm 1 with a level's negatives reused as the next level's
#: positives, mask trees built once per image, three hidden feature layers (docs/quality.md measures each).
_PAPER = replace(TrainConfig(), reuse_negatives=True, image_mask_trees=True,
                 field=replace(TrainConfig().field, feature_hidden_layers=3))
#: THE preset table: every preset a whole :class:`TrainConfig` (``dataclasses.replace`` of the paper's
#: settings), named and described in :data:`backend.wire.presets.PRESETS` (the CLI, the job protocol and the
#: add-on use those names).
PRESETS: dict[str, TrainConfig] = {
    "paper": _PAPER,
    "default": _scaled(_PAPER, 5000),
    "fast": replace(_scaled(_PAPER, 1500), field=scaled_config(_PAPER.field, 17, feature_dim=128),
                    checkpoint_every=500),
    # CPU demo: depth-mode training of a ~128x128, ~20-view scene in about 4 minutes on 2 cores.
    # One hidden feature layer and fresh positives per level: measured better or equal on CPU (docs/quality.md).
    "cpu": replace(_scaled(_PAPER, 1500), rays_per_step=4096, checkpoint_every=500, num_samples=48,
                   occupancy_resolution=32, reuse_negatives=False, image_mask_trees=False,
                   field=replace(scaled_config(_PAPER.field, 15, feature_dim=32, density_max_resolution=512),
                                 feature_hidden_dim=64, feature_hidden_layers=1,
                                 # the paper's max resolution 64, every level dense as in its 2^20 table (no
                                 # hash collisions); finer grids fragment objects under inconsistent masks
                                 # (docs/quality.md)
                                 feature_grid=HashGridConfig(num_levels=8, features_per_level=2,
                                                             log2_hashmap_size=19, max_resolution=64))),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of ``PRESETS[name]`` with field overrides (never mutates the shared preset)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """:class:`TrainConfig` from ``asdict(cfg)`` (e.g. read back from ``train_config.json``)."""
    return dataclass_from_dict(TrainConfig, data)


@dataclass
class Ablation:
    """The paper's ablations (Table 1 / Sec. 5.3), as switches on the training losses."""

    ultrametric: bool = True
    """Train with the ultrametric contrastive term (off: Euclidean distances only)."""
    hierarchical_sampling: bool = True
    """Sample pairs level by level from the mask tree (off: every mask a child of the root, one level)."""
    depth_continuity: bool = True
    """Add the depth continuity loss (Eq. 5) in ``nerf`` geometry."""

    @property
    def name(self) -> str:
        off = [n for n, on in (("no-ultrametric", self.ultrametric),
                               ("no-hierarchical-sampling", self.hierarchical_sampling),
                               ("no-depth-continuity", self.depth_continuity)) if not on]
        return "+".join(off) or "full"


@dataclass
class PipelineConfig:
    """Everything one run needs; defaults are the CPU-friendly ones, ``preset="paper"`` the paper's."""

    preset: str = presets.DEFAULT_TRAIN_PRESET
    """Name in :data:`PRESETS` (``paper``, ``default``, ``fast``, ``cpu``)."""
    iterations: int | None = None
    """Override the preset's iterations."""
    geometry: str = "auto"
    """``auto`` (depth when every view has depth), ``depth`` or ``nerf``."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``)."""
    seed: int = 0
    """Seed of mask sampling and training."""
    masks: MaskConfig = field(default_factory=MaskConfig)
    """2D mask source and its settings."""
    ablation: Ablation = field(default_factory=Ablation)
    """Loss switches for the ablation study."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    """3D segmentation settings (kNN, N largest, thresholds)."""
    pointcloud: PointCloudConfig = field(default_factory=PointCloudConfig)
    """Point-cloud fusion settings (voxel size, outlier radius)."""
    max_points: int = presets.DEFAULT_MAX_POINTS
    """Most points kept in the 3D point cloud (a seeded random subset beyond)."""
    train_overrides: dict[str, Any] = field(default_factory=dict)
    """:class:`TrainConfig` fields changed on top of the preset; dotted paths reach nested configs
    (``{"reuse_negatives": True, "field.feature_grid.max_resolution": 128}``). For experiments (bench/)."""


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
def train_config(cfg: PipelineConfig):
    """The trainer's ``TrainConfig`` for this pipeline configuration (preset + overrides + ablation)."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"unknown preset {cfg.preset!r}; choose one of {list(PRESETS)}")
    tc = PRESETS[cfg.preset]
    changes = {"seed": cfg.seed, "device": cfg.device, "geometry": cfg.geometry}
    if cfg.iterations is not None:
        if cfg.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {cfg.iterations}")
        changes["iterations"] = cfg.iterations
    tc = dataclasses.replace(tc, **changes)
    try:
        for key, value in cfg.train_overrides.items():
            tc = replace_path(tc, key.split("."), value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad train override: {e}") from e
    return apply_ablation(tc, cfg.ablation)


def replace_path(obj, path: list[str], value):
    """``obj`` (a dataclass) with the field at the dotted ``path`` replaced (copies along the path)."""
    if not dataclasses.is_dataclass(obj) or path[0] not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"no field {'.'.join(path)!r} in {type(obj).__name__}")
    if len(path) > 1:
        value = replace_path(getattr(obj, path[0]), path[1:], value)
    elif isinstance(getattr(obj, path[0]), tuple) and isinstance(value, list):
        value = tuple(value)
    return dataclasses.replace(obj, **{path[0]: value})


def apply_ablation(tc, ablation: Ablation):
    """Switch the trainer's loss terms off as the ablation says (returns a new config).

    Without hierarchical sampling no mask may contain another (``p_in`` above 1), so every mask hangs
    from the root and all pairs share one level, as in the paper's "w/o hierarchical sampling" row.
    """
    changes = {}
    if not ablation.ultrametric:
        changes["loss"] = dataclasses.replace(tc.loss, use_ultrametric=False, use_euclidean=True)
    if not ablation.hierarchical_sampling:
        changes["p_in"] = 1.01
    if not ablation.depth_continuity:
        changes["depth_continuity_weight"] = 0.0
    return dataclasses.replace(tc, **changes)


def config_json(cfg: PipelineConfig) -> dict:
    def default(o):
        if isinstance(o, Path):
            return str(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(type(o))

    return json.loads(json.dumps(dataclasses.asdict(cfg), default=default))


def config_from_json(d: dict) -> PipelineConfig:
    """:class:`PipelineConfig` from :func:`config_json` (e.g. read back from ``run.json``)."""
    return dataclass_from_dict(PipelineConfig, d)


if tuple(PRESETS) != presets.PRESET_NAMES:  # pragma: no cover - a developer error, caught by any test
    raise RuntimeError(f"backend.method.config.PRESETS {list(PRESETS)} and backend.wire.presets "
                       f"{list(presets.PRESET_NAMES)} disagree")
