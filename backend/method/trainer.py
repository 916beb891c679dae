"""Training of the ultrametric feature field (Sec. 4.1 and 5.4 of the paper), with checkpoints, resume and progress.

One step (released-code recipe): pick ONE training image, sample ``rays_per_step`` of its pixels, build the mask
tree of its masks restricted to those pixels (:func:`backend.core.mask_tree.mask_tree`), draw hierarchical pairs
(:func:`backend.core.sampling.sample_hierarchical_pairs`, Algorithm 1), get unit features for the pixels and apply the
contrastive losses (:func:`backend.method.losses.feature_losses`, Eq. 1-4) plus the norm loss on raw features.

Geometry modes (:attr:`TrainConfig.geometry`):

- ``nerf``: volume-render the pixels (:func:`backend.method.field.renderer.render_rays`); colour loss (MSE), optional L1
  depth supervision where the scene has depth, the depth continuity loss (Eq. 5) from
  ``depth_continuity_start``; features are composited with detached weights.
- ``depth``: the given depth is the exact geometry: the sampled pixels are unprojected and the feature branch is
  queried at those surface points; background pixels (depth 0) get the background feature. No volume rendering,
  no colour loss.
- ``auto``: ``depth`` when the scene has depth for every view, else ``nerf``.

Run folder: ``checkpoint.pt`` (model, optimiser, scheduler, grad scaler, occupancy grid, RNG states, step, scene
fingerprint; written atomically) and ``train_config.json`` (the config, the resolved geometry and the scene
fingerprint). :meth:`Trainer.resume` continues an interrupted run and refuses a folder made for another scene.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backend.method.config import (GEOMETRY_MODES, TrainConfig, config_from_dict, resolve_scene_dependent,
                                   scene_pixel_footprint)
from backend.method.field.model import UltrametricField
from backend.method.field.occupancy import OccupancyGrid
from backend.method.field.renderer import render_rays, render_rays_chunked
from backend.core.geometry import camera_rays, unproject
from backend.method.losses import LossTerms, depth_continuity_loss, feature_losses, level_groups, norm_loss
from backend.method.prefetch import Prefetcher
from backend.method.threads import cpu_count, cpu_training_threads
from backend.core.graphs import knn_pixel_graph, mask_boundary_prior
from backend.core.mask_tree import MaskTree, leaf_label_map, mask_tree
from backend.core.precompute import StencilRuns, sample_stencils_from_runs, stencil_runs
from backend.core.sampling import PairSet, sample_hierarchical_pairs
from backend.core.scene import Scene
from backend.wire.files import atomic_path, write_json_atomic

#: File names inside a run folder.
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "train_config.json"


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------
class TrainError(ValueError):
    """Base of the trainer's input errors."""


class GeometryModeError(TrainError):
    """The requested geometry mode cannot be used with this scene (e.g. ``depth`` without depth maps)."""


class MasksError(TrainError):
    """The per-view masks are missing or do not match the scene."""


class DepthRequiredError(TrainError):
    """A depth-mode render was asked for without a depth map."""


class RunFolderMismatchError(TrainError):
    """The run folder (checkpoint/config) belongs to another scene."""


class NoCheckpointError(TrainError):
    """Resume was asked for, but the run folder holds no checkpoint."""


# ----------------------------------------------------------------------------------------------------------------
# Results and callbacks
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class TrainProgress:
    """Passed to the progress callback every ``progress_every`` steps."""

    step: int
    """Steps done so far."""
    total: int
    """Steps of the whole run."""
    losses: dict[str, float]
    """Loss terms of the latest step (``total`` included)."""
    eta_s: float
    """Estimated seconds left."""


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`."""

    iterations: int
    """Steps done in total (including steps before a resume)."""
    losses: dict[str, float]
    """Loss terms of the last step."""
    stopped: bool
    """True when ``should_stop`` ended the run early."""
    seconds: float
    """Wall time of this call."""
    geometry: str
    """The geometry mode used (``depth`` or ``nerf``)."""


@dataclass
class ViewRender:
    """A rendered view. Shapes: ``rgb`` float32 [H, W, 3] in [0, 1] or None (depth mode); ``depth`` float32
    [H, W] planar, normalised units, 0 = background; ``opacity`` float32 [H, W]; ``features`` float32
    [H, W, D] unit rows."""

    rgb: np.ndarray | None
    depth: np.ndarray
    opacity: np.ndarray
    features: np.ndarray


@dataclass
class StepBatch:
    """The host work of one training step (issue #16), produced ahead by :meth:`Trainer.prepare_step`:
    everything the step needs that does not depend on the field's weights."""

    step: int
    view: int
    rows: np.ndarray
    """int64 [P]: sampled pixel rows (sorted flat order)."""
    cols: np.ndarray
    uv: np.ndarray
    """float64 [P, 2]: pixel centres."""
    sampled_masks: np.ndarray
    """bool [M, P]: the view's masks at the sampled pixels."""
    pairs: PairSet
    groups: list
    """:func:`backend.method.losses.level_groups` of ``pairs``."""
    graph: tuple[np.ndarray, np.ndarray] | None
    """The kNN pixel graph of ``uv`` (None when the ultrametric term is off or there are no pairs)."""
    prior: np.ndarray | None
    """Its mask-boundary prior (``cfg.loss.boundary_prior``)."""
    stencils: np.ndarray | None
    """int64 [S, 4] depth-continuity stencils (``nerf`` geometry from ``depth_continuity_start``)."""
    timings: dict[str, float]
    """Seconds per part of the host work: ``sample``, ``tree_pairs``, ``graph``, ``stencils``."""


def _no_mark(stage: str) -> None:
    """The default :attr:`Trainer.stage_hook`: nothing."""


def scene_fingerprint(scene: Scene) -> dict[str, Any]:
    """What identifies a scene for resuming: view count, image size and a hash of the camera poses."""
    c2w = np.round(np.asarray(scene.c2w, np.float64), 5) + 0.0  # + 0.0 folds -0.0 into 0.0
    return {"num_views": scene.num_views, "height": scene.height, "width": scene.width,
            "c2w_sha256": hashlib.sha256(np.ascontiguousarray(c2w).tobytes()).hexdigest()[:32]}


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None) -> CUDA when available, else CPU; anything else as given."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_geometry(mode: str, scene: Scene) -> str:
    """``auto`` -> ``depth`` when the scene has depth for every view, else ``nerf``; checks ``depth``."""
    if mode not in GEOMETRY_MODES:
        raise GeometryModeError(f"geometry must be one of {GEOMETRY_MODES}, got {mode!r}")
    has_depth = scene.depth is not None and scene.depth.shape[0] == scene.num_views
    if mode == "depth" and not has_depth:
        raise GeometryModeError("geometry 'depth' needs a depth map for every view; use 'nerf' or 'auto'")
    if mode == "auto":
        return "depth" if has_depth else "nerf"
    return mode


# ----------------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------------
class Trainer:
    """Fits an :class:`UltrametricField` to a scene and its per-view masks; renders views and point features.

    ``masks``: one bool array ``[M_i, H, W]`` per view (None: ``scene.masks``). ``progress`` receives
    :class:`TrainProgress`; ``should_stop()`` is polled before every step and ends the run early (with a
    checkpoint when there is a run folder).
    """

    #: Worker threads preparing the next steps' host work during :meth:`fit` (0: none, the host work runs inside
    #: each step; None: 2 on a GPU; on a CPU 1 when the step runs on fewer threads than there are cores
    #: (:attr:`TrainConfig.cpu_threads`, issue #24), else 0: with torch on every core the worker would compete with
    #: the field (bench/bench_step.py measured a step 804 -> 907 ms on 2 cores)) and how many steps ahead they may
    #: run. Results do not depend on either (per-step generators).
    prefetch_workers: int | None = None
    prefetch_depth: int = 3
    #: Called with a stage name after each stage of a step (``field forward + norm``, ``loss: ultrametric``,
    #: ``loss: euclidean``, ``backward``, ``optimiser``) when set: bench/bench_train_step.py's per-stage profile.
    stage_hook: Callable[[str], None] | None = None

    def __init__(self, scene: Scene, masks: list[np.ndarray] | None, cfg: TrainConfig | None = None,
                 run_dir: str | Path | None = None, progress: Callable[[TrainProgress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        cfg = cfg or TrainConfig()
        scene.validate()
        self.cfg = cfg = resolve_scene_dependent(cfg, scene_pixel_footprint(scene))
        self.scene = scene
        self.masks = self._check_masks(scene, scene.masks if masks is None else masks)
        self.geometry = resolve_geometry(cfg.geometry, scene)
        self.device = resolve_device(cfg.device)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.progress = progress
        self.should_stop = should_stop
        self.fingerprint = scene_fingerprint(scene)
        self.amp = bool(cfg.mixed_precision and self.device.type == "cuda")

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.field = UltrametricField(cfg.field, self.device)
        self.occupancy = OccupancyGrid(cfg.occupancy_resolution, cfg.field.bound, cfg.occupancy_threshold,
                                       device=self.device)
        # fused on CUDA: the grad scaler hands it found_inf on the device, no .item() per step (issue #16); fused on
        # the CPU too: one pass over each parameter instead of seven (the 606k-row feature table: 3.6 -> 0.9 ms,
        # issue #24), the same update up to float rounding
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                          eps=cfg.adam_eps, fused=self._fused_adam())
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(cfg.iterations, 1), eta_min=cfg.lr * cfg.lr_final_ratio)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.rng = np.random.default_rng(cfg.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)  # ray jitter drawn on the device
        self.step = 0
        self.last_losses: dict[str, float] = {}
        self._leaf_labels: dict[int, np.ndarray] = {}
        self._trees: dict[int, MaskTree] = {}
        self._runs: dict[int, StencilRuns] = {}
        self._pending_losses: dict[str, Tensor | float] | None = None
        self._bg_rgb = torch.tensor(cfg.background_rgb, dtype=torch.float32, device=self.device)

    # -- construction helpers -----------------------------------------------------------------------------------
    def _fused_adam(self) -> bool | None:
        """Whether Adam runs fused on this device (CUDA and CPU; None: torch's default elsewhere)."""
        return True if self.device.type in ("cuda", "cpu") else None

    def training_threads(self) -> contextlib.AbstractContextManager:
        """Thread settings of a training step (:mod:`backend.method.threads`): on a CPU, ``cfg.cpu_threads``
        intra-op threads and one BLAS thread (0 leaves torch's and BLAS's settings); elsewhere nothing changes."""
        if self.device.type == "cpu" and self.cfg.cpu_threads > 0:
            return cpu_training_threads(self.cfg.cpu_threads)
        return contextlib.nullcontext()

    def _prefetch_workers(self) -> int:
        """Prefetch threads of :meth:`fit` (see :attr:`prefetch_workers`)."""
        if self.prefetch_workers is not None:
            return self.prefetch_workers
        if self.device.type != "cpu":
            return 2
        return 1 if 0 < self.cfg.cpu_threads < cpu_count() else 0

    @staticmethod
    def _check_masks(scene: Scene, masks: list[np.ndarray] | None) -> list[np.ndarray]:
        if masks is None:
            raise MasksError("no masks: pass one bool [M, H, W] array per view (or set scene.masks)")
        if len(masks) != scene.num_views:
            raise MasksError(f"masks given for {len(masks)} views, the scene has {scene.num_views}")
        out = []
        for i, m in enumerate(masks):
            m = np.asarray(m)
            if m.ndim != 3 or m.shape[1:] != (scene.height, scene.width):
                raise MasksError(f"masks of view {i} must be [M, {scene.height}, {scene.width}], got {m.shape}")
            out.append(m.astype(bool, copy=False))
        return out

    @classmethod
    def resume(cls, run_dir: str | Path, scene: Scene, masks: list[np.ndarray] | None,
               progress: Callable[[TrainProgress], None] | None = None,
               should_stop: Callable[[], bool] | None = None, **overrides: Any) -> "Trainer":
        """A trainer restored from ``run_dir`` (config and checkpoint); call :meth:`fit` to continue.

        ``overrides`` replace config fields (e.g. ``device``). Raises :class:`RunFolderMismatchError` when the
        folder was made for another scene, :class:`NoCheckpointError` when it holds no checkpoint.
        """
        run_dir = Path(run_dir)
        cfg_path = run_dir / CONFIG_NAME
        if not cfg_path.exists() or not (run_dir / CHECKPOINT_NAME).exists():
            raise NoCheckpointError(f"{run_dir} holds no {CONFIG_NAME} + {CHECKPOINT_NAME} to resume from")
        meta = json.loads(cfg_path.read_text())
        cls._check_fingerprint(meta.get("fingerprint"), scene_fingerprint(scene), cfg_path)
        cfg = config_from_dict(meta["config"])
        if overrides:
            cfg = replace(cfg, **overrides)
        trainer = cls(scene, masks, cfg, run_dir=run_dir, progress=progress, should_stop=should_stop)
        trainer.load_checkpoint(run_dir / CHECKPOINT_NAME)
        return trainer

    @staticmethod
    def _check_fingerprint(stored: dict[str, Any] | None, current: dict[str, Any], where: Path) -> None:
        if stored != current:
            raise RunFolderMismatchError(
                f"{where} belongs to another scene (stored {stored}, this scene {current}); "
                "use a new run folder")

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: model, optimiser, scheduler, scaler, RNGs, step."""
        self._flush_losses()
        return {
            "version": 1,
            "step": self.step,
            "geometry": self.geometry,
            "fingerprint": self.fingerprint,
            "model": self.field.state_dict(),
            "occupancy": self.occupancy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"numpy": self.rng.bit_generator.state, "torch": self.generator.get_state()},
            "losses": dict(self.last_losses),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint.pt`` (atomically) and ``train_config.json`` into the run folder, if any."""
        if self.run_dir is None:
            return None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"version": 1, "config": asdict(self.cfg), "geometry": self.geometry,
                "fingerprint": self.fingerprint}
        write_json_atomic(self.run_dir / CONFIG_NAME, meta, indent=2)
        path = self.run_dir / CHECKPOINT_NAME
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (same scene, same config)."""
        path = Path(path)
        try:  # weights only: a crafted checkpoint.pt cannot run code (the state holds tensors and plain types)
            state = torch.load(path, map_location=self.device, weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated, corrupted, or not a checkpoint of this project
            raise TrainError(f"cannot read the checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''} "
                             "(truncated or not written by `backend train`; use --restart to start over)") from None
        if not isinstance(state, dict) or not {"model", "occupancy", "optimizer", "step", "rng"} <= set(state):
            raise TrainError(f"{path} is not a checkpoint of `backend train` (use --restart to start over)")
        self._check_fingerprint(state.get("fingerprint"), self.fingerprint, path)
        self.field.load_state_dict(state["model"])
        # a hash grid may have switched table layout on load (a tiny-cuda-nn run on a torch grid): new Parameters
        params = list(self.field.parameters())
        if len(self.optimizer.param_groups) == 1 and len(self.optimizer.param_groups[0]["params"]) == len(params):
            self.optimizer.param_groups[0]["params"] = params
        self.occupancy.load_state_dict(state["occupancy"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # a checkpoint of an unfused Adam (older runs) runs fused on
            group["fused"] = self._fused_adam()
        for p in self.optimizer.param_groups[0]["params"]:  # Adam moments saved flat (tcnn) vs [rows, F] (torch)
            for k, v in self.optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.numel() == p.numel() and v.shape != p.shape:
                    self.optimizer.state[p][k] = v.reshape(p.shape)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        try:
            self.generator.set_state(state["rng"]["torch"].cpu())
        except (RuntimeError, ValueError):  # saved by a generator of another device type (CPU <-> CUDA)
            self.generator.manual_seed(self.cfg.seed * 1_000_003 + int(state["step"]))
        self.step = int(state["step"])
        self.last_losses = dict(state.get("losses", {}))

    # -- training -------------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train up to ``cfg.iterations`` steps (from the checkpoint's step when ``resume`` and one exists)."""
        if resume and self.run_dir is not None and (self.run_dir / CHECKPOINT_NAME).exists() and self.step == 0:
            cfg_path = self.run_dir / CONFIG_NAME
            if cfg_path.exists():
                self._check_fingerprint(json.loads(cfg_path.read_text()).get("fingerprint"), self.fingerprint,
                                        cfg_path)
            self.load_checkpoint(self.run_dir / CHECKPOINT_NAME)
        t0 = time.perf_counter()
        start = self.step
        total = self.cfg.iterations
        stopped = False
        self.field.train()
        prefetch = None
        workers = self._prefetch_workers()
        threads = self.training_threads()
        threads.__enter__()
        try:
            if workers > 0 and self.step < total:
                prefetch = Prefetcher(self.prepare_step, self.step, total, depth=self.prefetch_depth, workers=workers)
        except BaseException:
            threads.__exit__(None, None, None)
            raise
        try:
            while self.step < total:
                if self.should_stop is not None and self.should_stop():
                    stopped = True
                    break
                batch = prefetch.get(self.step) if prefetch is not None else self.prepare_step(self.step)
                self._pending_losses = self._run_step(batch)  # tensors: no host sync until logged
                self.step += 1
                every = self.cfg.checkpoint_every
                if self.run_dir is not None and every > 0 and self.step % every == 0 and self.step < total:
                    self.save_checkpoint()
                if self.progress is not None and (self.step % max(self.cfg.progress_every, 1) == 0 or self.step == total):
                    done = self.step - start
                    eta = (time.perf_counter() - t0) / max(done, 1) * (total - self.step)
                    self._flush_losses()
                    self.progress(TrainProgress(self.step, total, dict(self.last_losses), eta))
        except KeyboardInterrupt:  # keep what was computed (up to the last finished step): the next run resumes
            self.save_checkpoint()
            raise
        finally:
            if prefetch is not None:
                self.prefetch_waited_s = prefetch.waited_s
                self.prefetch_waits = list(prefetch.waits)
                prefetch.close()
            threads.__exit__(None, None, None)
        self._flush_losses()
        self.save_checkpoint()
        return TrainResult(iterations=self.step, losses=dict(self.last_losses), stopped=stopped,
                           seconds=time.perf_counter() - t0, geometry=self.geometry)

    def _flush_losses(self) -> None:
        """Turn the latest step's loss tensors into floats (one host sync), into :attr:`last_losses`."""
        if self._pending_losses is not None:
            self.last_losses = {k: float(v) for k, v in self._pending_losses.items()}
            self._pending_losses = None

    def step_rng(self, step: int) -> np.random.Generator:
        """The generator of one step's host draws (view, pixels, pairs, stencils): seeded by ``(seed, step)``,
        so a step's batch does not depend on which thread made it, on the prefetch depth, or on a resume."""
        return np.random.default_rng([self.cfg.seed, step])

    def _sample_pixels(self, view: int, rng: np.random.Generator | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng if rng is None else rng
        h, w = self.scene.height, self.scene.width
        n = min(self.cfg.rays_per_step, h * w)
        pix = np.sort(rng.choice(h * w, size=n, replace=False))
        rows, cols = pix // w, pix % w
        uv = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
        return rows, cols, uv

    def _leaf_labels_of(self, view: int) -> np.ndarray:
        """Finest-level mask label of every pixel of a view, int64 [H, W] (-1 = none); cached."""
        if view not in self._leaf_labels:
            m = self.masks[view]
            tree = mask_tree(m.reshape(m.shape[0], -1), p_in=self.cfg.p_in, p_iou=self.cfg.p_iou)
            self._leaf_labels[view] = leaf_label_map(tree).reshape(self.scene.height, self.scene.width)
        return self._leaf_labels[view]

    def _image_tree(self, view: int) -> MaskTree:
        """Mask tree of a view's full-resolution masks (cached; :attr:`TrainConfig.image_mask_trees`)."""
        if view not in self._trees:
            m = self.masks[view]
            hw = self.scene.height * self.scene.width
            min_size = max(1, int(np.ceil(6 * hw / min(self.cfg.rays_per_step, hw))))
            self._trees[view] = mask_tree(m.reshape(m.shape[0], -1), p_in=self.cfg.p_in, p_iou=self.cfg.p_iou,
                                          min_size=min_size, max_size=hw - min_size)
        return self._trees[view]

    def _stencil_runs_of(self, view: int) -> StencilRuns:
        """All depth-continuity runs of a view's leaf labels, grouped by label (per-image precomputation, cached)."""
        if view not in self._runs:
            self._runs[view] = stencil_runs(self._leaf_labels_of(view))
        return self._runs[view]

    def _step_pairs(self, view: int, rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator | None = None):
        """Masks at the sampled pixels and Algorithm 1's pairs for one step."""
        rng = self.rng if rng is None else rng
        cfg = self.cfg
        if cfg.image_mask_trees:
            full = self._image_tree(view)
            tree = MaskTree(masks=full.masks[:, rows * self.scene.width + cols], parent=full.parent,
                            kept=full.kept, depth=full.depth)
            sampled_masks = tree.masks[:-1]
        else:  # np.take on the flat pixel index: the same array, 4x faster than [:, rows, cols] (issue #24)
            m = self.masks[view]
            sampled_masks = np.take(m.reshape(m.shape[0], -1), rows * self.scene.width + cols, axis=1)
            tree = mask_tree(sampled_masks, p_in=cfg.p_in, p_iou=cfg.p_iou)
        pairs = sample_hierarchical_pairs(tree, rng, n_pos=cfg.n_pos, n_neg=cfg.n_neg,
                                          reuse_negatives=cfg.reuse_negatives)
        return sampled_masks, pairs

    def prepare_step(self, step: int) -> StepBatch:
        """The host work of step ``step`` (issue #16): view, pixels, mask tree and pairs (:meth:`_step_pairs`), the
        kNN pixel graph (and boundary prior), level groups and depth-continuity stencils. Depends only on
        ``step`` and the per-image caches, so :meth:`fit` runs it ahead on worker threads
        (:class:`backend.method.prefetch.Prefetcher`)."""
        cfg = self.cfg
        rng = self.step_rng(step)
        t0 = time.perf_counter()
        view = int(rng.integers(self.scene.num_views))
        rows, cols, uv = self._sample_pixels(view, rng)
        t1 = time.perf_counter()
        sampled_masks, pairs = self._step_pairs(view, rows, cols, rng)
        groups = level_groups(pairs)
        t2 = time.perf_counter()
        stencils = None
        if (self.geometry == "nerf" and cfg.depth_continuity_weight > 0 and step >= cfg.depth_continuity_start):
            stencils = sample_stencils_from_runs(self._stencil_runs_of(view), rng, per_mask=cfg.stencils_per_mask)
            if len(stencils) > cfg.max_stencils:
                stencils = stencils[np.sort(rng.choice(len(stencils), cfg.max_stencils, replace=False))]
            if len(stencils) == 0:
                stencils = None
        t3 = time.perf_counter()
        graph = prior = None
        if len(pairs) and cfg.loss.use_ultrametric:
            graph = knn_pixel_graph(uv, k=cfg.loss.knn)
            if cfg.loss.boundary_prior:
                prior = mask_boundary_prior(graph[0], graph[1], sampled_masks)
        t4 = time.perf_counter()
        return StepBatch(step=step, view=view, rows=rows, cols=cols, uv=uv, sampled_masks=sampled_masks, pairs=pairs,
                         groups=groups, graph=graph, prior=prior, stencils=stencils,
                         timings={"sample": t1 - t0, "tree_pairs": t2 - t1, "stencils": t3 - t2, "graph": t4 - t3})

    def train_step(self, batch: StepBatch | None = None) -> dict[str, float]:
        """One optimisation step on one random view (host work from ``batch`` or made now); returns the loss
        terms as floats (one host sync; :meth:`fit` keeps them as tensors until it logs)."""
        out = self._run_step(self.prepare_step(self.step) if batch is None else batch)
        return {k: float(v) for k, v in out.items()}

    def _run_step(self, batch: StepBatch) -> dict[str, Tensor | float]:
        """The device part of a step: render / query, losses, backward, optimiser; losses as detached tensors."""
        cfg = self.cfg
        if batch.step != self.step:
            raise TrainError(f"batch of step {batch.step} given at step {self.step}")
        view, rows, cols, uv, pairs = batch.view, batch.rows, batch.cols, batch.uv, batch.pairs
        if self.geometry == "nerf":
            if self.step >= cfg.occupancy_warmup and (self.step - cfg.occupancy_warmup) % cfg.occupancy_every == 0:
                self.occupancy.update(lambda x: self.field.density(x)[0], generator=self.generator)

        mark = self.stage_hook or _no_mark
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            if self.geometry == "depth":
                terms, features = self._depth_mode_terms(view, rows, cols, uv)
            else:
                terms, features = self._nerf_mode_terms(view, rows, cols, uv, batch.stencils)
            mark("field forward + norm")
            if len(pairs):
                fl = feature_losses(features.float(), uv, pairs, cfg.loss, batch.sampled_masks, graph=batch.graph,
                                    prior=batch.prior, groups=batch.groups, mark=self.stage_hook)
                terms.ultrametric, terms.euclidean = fl.get("ultrametric"), fl.get("euclidean")
        total = terms.weighted_total(cfg.loss_weights())
        if torch.is_tensor(total) and total.requires_grad:
            self.scaler.scale(total).backward()
            mark("backward")
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        mark("optimiser")
        out: dict[str, Tensor | float] = {k: v.detach() for k, v in terms.items()}
        out["total"] = total.detach() if torch.is_tensor(total) else float(total)
        return out

    def _depth_mode_terms(self, view: int, rows: np.ndarray, cols: np.ndarray,
                          uv: np.ndarray) -> tuple[LossTerms, Tensor]:
        """Loss terms and unit features [P, D] of the sampled pixels, from the given depth."""
        d = self.scene.depth[view, rows, cols].astype(np.float64)
        fg = d > 0
        feats = self.field.unit_background()[None, :].expand(len(uv), -1)
        terms = LossTerms()
        if fg.any():
            pts = unproject(uv[fg], d[fg], self.scene.K[view], self.scene.c2w[view])
            raw = self.field.raw_features(torch.as_tensor(pts, dtype=torch.float32, device=self.device))
            idx = torch.as_tensor(np.flatnonzero(fg), device=self.device)
            feats = feats.index_put((idx,), F.normalize(raw.float(), dim=-1))
            terms.norm = norm_loss(raw.float())
        return terms, feats

    def _nerf_mode_terms(self, view: int, rows: np.ndarray, cols: np.ndarray, uv: np.ndarray,
                         stencils: np.ndarray | None) -> tuple[LossTerms, Tensor]:
        """Loss terms and unit features [P, D] of the sampled pixels, by volume rendering."""
        cfg = self.cfg
        w = self.scene.width
        n_main = len(uv)
        if stencils is not None:
            st_flat = stencils.reshape(-1)
            uv_all = np.concatenate([uv, np.stack([st_flat % w + 0.5, st_flat // w + 0.5], 1)], 0)
        else:
            uv_all = uv
        o, d, ps = camera_rays(uv_all, self.scene.K[view], self.scene.c2w[view])
        dev = self.device
        out = render_rays(self.field, torch.from_numpy(o).to(dev), torch.from_numpy(d).to(dev),
                          num_samples=cfg.num_samples, occupancy=self.occupancy, perturb=True,
                          generator=self.generator, background_rgb=self._bg_rgb,
                          planar_scale=torch.from_numpy(ps).to(dev))
        target = torch.from_numpy(self.scene.rgb[view, rows, cols].astype(np.float32) / 255.0).to(dev)
        if self.scene.alpha is not None and cfg.composite_alpha:
            a = torch.from_numpy(self.scene.alpha[view, rows, cols].astype(np.float32) / 255.0).to(dev)[:, None]
            target = target * a + self._bg_rgb * (1.0 - a)
        terms = LossTerms(rgb=F.mse_loss(out.rgb[:n_main].float(), target))
        if self.scene.depth is not None and cfg.depth_weight > 0:
            gt_host = self.scene.depth[view, rows, cols].astype(np.float32)
            fg_idx = np.flatnonzero(gt_host > 0)  # on the host: no bool(fg.any()) / boolean-mask sync
            if len(fg_idx):
                idx = torch.from_numpy(fg_idx).to(dev, non_blocking=True)
                gt = torch.from_numpy(gt_host[fg_idx]).to(dev, non_blocking=True)
                terms.depth = (out.depth[:n_main][idx] - gt).abs().mean()
        if stencils is not None:
            sd = out.depth[n_main:].reshape(-1, stencils.shape[1]).float()
            dtheta = 1.0 / float(self.scene.K[view][0, 0]) if cfg.depth_continuity_true_angle else 1.0
            terms.depth_continuity = depth_continuity_loss(sd, dtheta, cfg.depth_continuity_threshold)
        if out.raw_features is not None and len(out.raw_features):
            terms.norm = norm_loss(out.raw_features.float())
        return terms, out.features[:n_main]

    # -- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _features_at(self, points: np.ndarray) -> np.ndarray:
        """Unit features at world points, in chunks. Shape: [P, 3] -> float32 [P, D]."""
        out = []
        for i in range(0, len(points), self.cfg.render_chunk):
            p = torch.as_tensor(points[i:i + self.cfg.render_chunk], dtype=torch.float32, device=self.device)
            out.append(F.normalize(self.field.raw_features(p).float(), dim=-1).cpu().numpy())
        if not out:
            return np.zeros((0, self.cfg.field.feature_dim), np.float32)
        return np.concatenate(out, 0).astype(np.float32)

    @torch.no_grad()
    def _render_pixels(self, uv: np.ndarray, K: np.ndarray, c2w: np.ndarray):
        """Volume-render the rays through pixel positions ``uv`` [P, 2] (``nerf`` mode), in bounded chunks."""
        o, dr, ps = camera_rays(uv, K, c2w)
        dev = self.device
        ray_chunk = max(64, self.cfg.render_chunk * 16 // max(self.cfg.num_samples, 1))
        return render_rays_chunked(self.field, torch.from_numpy(o).to(dev), torch.from_numpy(dr).to(dev),
                                   chunk=ray_chunk, planar_scale=torch.from_numpy(ps).to(dev),
                                   num_samples=self.cfg.num_samples, occupancy=self.occupancy,
                                   background_rgb=self._bg_rgb)

    def render_view(self, c2w: np.ndarray, K: np.ndarray, h: int, w: int,
                    depth: np.ndarray | None = None) -> ViewRender:
        """Render a view (features always; rgb/depth from the NeRF in ``nerf`` mode).

        In ``depth`` mode ``depth`` [H, W] (planar, normalised units, 0 = background) is required: features are
        queried at its unprojected points and the background gets the background feature.
        """
        self.field.eval()
        c2w = np.asarray(c2w, np.float64)
        K = np.asarray(K, np.float64)
        if c2w.shape != (4, 4) or K.shape != (3, 3):
            raise TrainError(f"c2w must be [4,4] and K [3,3], got {c2w.shape} {K.shape}")
        if depth is not None and np.asarray(depth).shape != (h, w):
            raise TrainError(f"depth must be [{h}, {w}], got {np.asarray(depth).shape}")
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        uv = np.stack([jj.reshape(-1) + 0.5, ii.reshape(-1) + 0.5], 1).astype(np.float64)
        dim = self.cfg.field.feature_dim
        if self.geometry == "depth":
            if depth is None:
                raise DepthRequiredError("this field was trained in depth mode: render_view needs the view's depth")
            d = np.asarray(depth, np.float64).reshape(-1)
            fg = d > 0
            feats = np.broadcast_to(self.field.unit_background().float().cpu().numpy(), (h * w, dim)).copy()
            feats[fg] = self._features_at(unproject(uv[fg], d[fg], K, c2w))
            self.field.train()
            return ViewRender(rgb=None, depth=np.where(fg, d, 0).reshape(h, w).astype(np.float32),
                              opacity=fg.reshape(h, w).astype(np.float32),
                              features=feats.reshape(h, w, dim).astype(np.float32))
        out = self._render_pixels(uv, K, c2w)
        self.field.train()
        opacity = out.opacity.float().cpu().numpy()
        dep = np.where(opacity > 0.5, out.depth.float().cpu().numpy(), 0.0)
        return ViewRender(rgb=out.rgb.float().clamp(0, 1).cpu().numpy().reshape(h, w, 3).astype(np.float32),
                          depth=dep.reshape(h, w).astype(np.float32),
                          opacity=opacity.reshape(h, w).astype(np.float32),
                          features=out.features.float().cpu().numpy().reshape(h, w, dim).astype(np.float32))

    @torch.no_grad()
    def sampled_feature_points(self, view: int, sample: Callable[[int], np.ndarray | None] | None = None,
                               should_stop: Callable[[], bool] | None = None, block: int = 65536
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`feature_points` of one view with its foreground pixels subsampled *before* their features are
        kept, in blocks of ``block`` pixels: memory follows the kept points, not the image (a 1024x1024 view of
        256-d features held ~4 GB as full-view arrays).

        ``sample(n)`` gives the sorted indices to keep among the view's ``n`` foreground pixels (row-major), or
        None for all; the points are those :meth:`feature_points` returns at the same indices. ``should_stop()`` is
        looked at between blocks (True raises ``InterruptedError``).
        """
        v = int(view)
        h, w = self.scene.height, self.scene.width
        c2w, K = np.asarray(self.scene.c2w[v], np.float64), np.asarray(self.scene.K[v], np.float64)
        dim = self.cfg.field.feature_dim

        def check() -> None:
            if should_stop is not None and should_stop():
                raise InterruptedError("cancelled while computing a view's feature points")

        def uv_of(idx: np.ndarray) -> np.ndarray:
            ii, jj = np.divmod(idx, w)
            return np.stack([jj + 0.5, ii + 0.5], 1).astype(np.float64)

        self.field.eval()
        try:
            if self.geometry == "depth":
                d = np.asarray(self.scene.depth[v], np.float64).reshape(-1)
                idx = np.flatnonzero(d > 0)
                if sample is not None and len(idx):
                    picked = sample(len(idx))
                    idx = idx if picked is None else idx[picked]
                feats = np.zeros((len(idx), dim), np.float32)
                for i in range(0, len(idx), block):
                    check()
                    part = idx[i:i + block]
                    feats[i:i + len(part)] = self._features_at(unproject(uv_of(part), d[part], K, c2w))
                depth32 = d[idx].astype(np.float32)
            else:
                fg_idx, fg_depth, fg_feats = [], [], []
                for i in range(0, h * w, block):
                    check()
                    part = np.arange(i, min(i + block, h * w))
                    out = self._render_pixels(uv_of(part), K, c2w)
                    opacity = out.opacity.float().cpu().numpy()
                    dep = np.where(opacity > 0.5, out.depth.float().cpu().numpy(), 0.0).astype(np.float32)
                    fg = dep > 0
                    fg_idx.append(part[fg])
                    fg_depth.append(dep[fg])
                    fg_feats.append(out.features.float().cpu().numpy()[fg].astype(np.float32))
                    del out
                idx, depth32 = np.concatenate(fg_idx), np.concatenate(fg_depth)
                feats = np.concatenate(fg_feats, 0) if fg_feats else np.zeros((0, dim), np.float32)
                del fg_feats
                if sample is not None and len(idx):
                    picked = sample(len(idx))
                    if picked is not None:
                        idx, depth32, feats = idx[picked], depth32[picked], feats[picked]
        finally:
            self.field.train()
        pts = unproject(uv_of(idx), depth32.astype(np.float64), K, c2w).astype(np.float32)
        cols = np.asarray(self.scene.rgb[v]).reshape(h * w, -1)[idx, :3].astype(np.uint8)
        return pts, np.ascontiguousarray(feats, np.float32), cols

    def feature_points(self, view_indices: list[int] | np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Foreground point cloud of training views: depth (given or rendered) unprojected, with features.

        Returns ``points`` float32 [P, 3] (normalised units), ``features`` float32 [P, D] unit rows, ``colors``
        uint8 [P, 3] (the views' pixels). ``view_indices`` None means all views.
        """
        views = range(self.scene.num_views) if view_indices is None else view_indices
        pts, feats, cols = [], [], []
        h, w = self.scene.height, self.scene.width
        for v in views:
            v = int(v)
            c2w, K = self.scene.c2w[v], self.scene.K[v]
            given = self.scene.depth[v] if self.geometry == "depth" else None
            r = self.render_view(c2w, K, h, w, depth=given)
            fg = r.depth > 0
            ii, jj = np.nonzero(fg)
            uv = np.stack([jj + 0.5, ii + 0.5], 1).astype(np.float64)
            pts.append(unproject(uv, r.depth[fg].astype(np.float64), K, c2w).astype(np.float32))
            feats.append(r.features[fg])
            cols.append(self.scene.rgb[v][fg])
        dim = self.cfg.field.feature_dim
        if not pts:
            return np.zeros((0, 3), np.float32), np.zeros((0, dim), np.float32), np.zeros((0, 3), np.uint8)
        return (np.concatenate(pts, 0), np.concatenate(feats, 0).astype(np.float32),
                np.concatenate(cols, 0).astype(np.uint8))
