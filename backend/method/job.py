"""The job service's entry point: :func:`run_job` turns a submitted scene and its
:class:`backend.wire.protocol.JobOptions` into a :class:`backend.wire.protocol.JobResult`.

``backend serve`` (:mod:`backend.service_cli`) injects it into the server, which never imports the method.
"""

from __future__ import annotations

from pathlib import Path

from backend.core.scene import Scene
from backend.method.config import PipelineConfig, train_config
from backend.method.job_memory import estimate_peak_bytes  # noqa: F401 - admission control's estimate
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
