"""The job service's entry point: :func:`run_job` turns a submitted scene and its
:class:`backend.wire.protocol.JobOptions` into a :class:`backend.wire.protocol.JobResult`.

``backend serve`` (:mod:`backend.service_cli`) injects it into the server, which never imports the method.
"""

from __future__ import annotations

from pathlib import Path

from backend.core.scene import Scene
from backend.method.config import PipelineConfig, train_config
from backend.method.masks.base import MaskConfig
from backend.method.pipeline import (
    Progress,
    ShouldStop,
    build_result,
    make_view_masks,
    normalise_scene,
    segment_field,
    train_field,
)
from backend.wire.protocol import JobOptions, JobResult, ProgressEvent

#: Admission-control model of the pipeline's peak memory (bytes), per stage, from a job's declared size.
#: Calibrated on QA's measurements of the unbounded pipeline (one 1024x1024 view: ~6 GB, 2048x2048: ~13.7 GB,
#: dominated by the 2D masks stage) and on the arrays each stage holds; an estimate, on the safe side.
BASE_BYTES = 1 * 2**30  # interpreter, torch, the field and its optimiser
SCENE_BYTES_PER_PIXEL = 16  # rgb, depth and the normalised copy, all views, for the whole job
STORED_MASKS_PER_VIEW = 64  # bool masks kept per view (computed sources)
MASK_WORK_BYTES_PER_PIXEL = {"classical": 3000, "sam": 3000, "noisy-gt": 64, "gt": 64, "given": 0}
SEGMENT_BYTES_PER_PIXEL = 600  # one view rendered at a time: uv, rays, features
CLOUD_BYTES_PER_POINT = 2 * (12 + 3 + 4 * 64) + 200  # fused cloud (2x max_points before the final cut) + tree


def estimate_peak_bytes(size, options: JobOptions) -> dict[str, int]:
    """Peak bytes of :func:`run_job` by stage for a :class:`backend.service.server.JobSize` (views, height,
    width, masks sent) and its options: what the server's admission control compares with its budget."""
    px_view = size.height * size.width
    stored_masks = size.masks * px_view if size.masks else size.views * STORED_MASKS_PER_VIEW * px_view
    resident = BASE_BYTES + size.pixels * SCENE_BYTES_PER_PIXEL + stored_masks
    source = "given" if options.mask_source == "given" and size.masks else options.mask_source
    return {
        "masks": resident + px_view * MASK_WORK_BYTES_PER_PIXEL.get(source, 3000),
        "training": resident + 2**29,
        "segmentation": resident + px_view * SEGMENT_BYTES_PER_PIXEL + options.max_points * CLOUD_BYTES_PER_POINT,
    }


def pipeline_config_from_options(options: JobOptions, device: str) -> PipelineConfig:
    """The pipeline configuration of a submitted job: the protocol's options use the preset table's names."""
    cfg = PipelineConfig(preset=options.preset, iterations=options.iterations,
                         geometry=options.geometry, device=options.device or device, seed=int(options.seed),
                         masks=MaskConfig(source=options.mask_source), max_points=int(options.max_points))
    return cfg


def run_job(scene: Scene, options: JobOptions, progress: Progress, should_stop: ShouldStop, workdir: Path,
            device: str = "cpu") -> JobResult:
    """Segment a submitted (world-unit) scene: masks, training, 3D tree, labels at the requested thresholds."""
    workdir = Path(workdir)
    cfg = pipeline_config_from_options(options, device)

    def checked(event: ProgressEvent) -> None:
        """Every stage reports progress at least once per view or step: that is where a cancel is seen."""
        if should_stop():
            raise InterruptedError(f"cancelled during {event.stage}")
        progress(event)

    scene = normalise_scene(scene)
    masks = make_view_masks(scene, cfg, cache_dir=workdir / "masks", progress=checked)
    if should_stop():
        raise InterruptedError("cancelled")
    # The training stage starts here (building the field and its pixel tables counts as training, also in the
    # per-stage peak memory the process executor measures).
    checked(ProgressEvent(stage="training", step=0, total=int(train_config(cfg).iterations), message="preparing"))
    trainer = train_field(scene, masks, cfg, workdir / "train", progress=checked, should_stop=should_stop)
    if should_stop():
        raise InterruptedError("cancelled")
    seg = segment_field(trainer, scene, cfg, checked, should_stop=should_stop)
    if should_stop():
        raise InterruptedError("cancelled")
    return build_result(seg, scene, list(options.thresholds), cfg.segment)
