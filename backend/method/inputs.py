"""What a prediction reads: the channels of a rendered dataset beyond posed colour that a run's masks and training
use, stripped from the scene unless the run declares them.

A Blender-HS folder carries exact ground truth next to the images: depth, the alpha of transparent film (the
exact silhouette) and the id maps. The paper trains from posed RGB and SAM masks (Sec. 4.1, 5.4), so a
prediction scored under its protocol must not read any of them. The rule, one place for every caller:

- ``depth`` geometry (exact geometry, what the Blender add-on has) reads the rendered depth: it IS the geometry;
- ``nerf`` geometry reads the depth only with depth supervision (``depth_weight > 0``, opt-in);
- the alpha is read only with ``composite_alpha`` (training) or a mask source that asks for it;
- a mask source's own reads (:meth:`backend.method.masks.base.MaskConfig.ground_truth_read`).

Whatever is not declared is removed from the scene before masks are made and the field is trained, so it cannot
leak; :func:`ground_truth_read` is what run.json and eval.md state.
"""

from __future__ import annotations

import dataclasses

from backend.core.scene import Scene
from backend.method.config import PipelineConfig, train_config


def run_geometry(scene: Scene, cfg: PipelineConfig) -> str:
    """The geometry mode a run trains in (``auto`` resolved on the scene as loaded)."""
    from backend.method.trainer import resolve_geometry

    return resolve_geometry(train_config(cfg).geometry, scene)


def training_reads(cfg: PipelineConfig, geometry: str) -> list[str]:
    """What training reads beyond posed colour and the masks, in words."""
    tc = train_config(cfg)
    out = []
    if geometry == "depth":
        out.append("rendered depth (exact geometry: features are trained at the unprojected surface points)")
    elif tc.depth_weight > 0:
        out.append(f"rendered depth (L1 depth supervision, weight {tc.depth_weight:g})")
    if geometry == "nerf" and tc.composite_alpha:
        out.append("alpha (transparent pixels composited onto the background colour)")
    return out


def declared_channels(cfg: PipelineConfig, geometry: str) -> set[str]:
    """The scene channels (``alpha``, ``depth``) the run may read."""
    tc = train_config(cfg)
    out = set(cfg.masks.reads())
    if geometry == "depth" or tc.depth_weight > 0:
        out.add("depth")
    if geometry == "nerf" and tc.composite_alpha:
        out.add("alpha")
    return out


def visible_scene(scene: Scene, cfg: PipelineConfig) -> Scene:
    """``scene`` with the channels the run does not declare removed (depth, alpha; ids never reach a Scene)."""
    keep = declared_channels(cfg, run_geometry(scene, cfg))
    return dataclasses.replace(scene, depth=scene.depth if "depth" in keep else None,
                               alpha=scene.alpha if "alpha" in keep else None)


def ground_truth_read(cfg: PipelineConfig, geometry: str) -> dict[str, list[str]]:
    """What the run's masks and its training read beyond posed colour (run.json, eval.md)."""
    return {"masks": cfg.masks.ground_truth_read(geometry), "training": training_reads(cfg, geometry)}


def describe_reads(reads: dict[str, list[str]]) -> str:
    """One line: ``masks: colour only; training: rendered depth (...)``."""
    return "; ".join(f"{k}: {', '.join(v) if v else 'colour only'}" for k, v in reads.items())
