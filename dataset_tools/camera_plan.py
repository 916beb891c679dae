"""Plan the cameras of a prepared scene (bpy edge): what is content and structure, ray casters over the
scene, then :func:`dataset_tools.placement.plan`.

Content is what the cameras frame (``RenderConfig.frame``): by default every rendered object except
backdrops and enclosing structure (:func:`dataset_tools.framing.structure_mask`); ``*`` frames everything
(and keeps the plain orbit); named collections or objects are the content, and the rest that is structure
still counts for the room test.
"""

from __future__ import annotations

import numpy as np

from . import framing
from .cameras import intrinsics
from .config import RenderConfig
from .placement import Placement, plan
from .view_scoring import SceneModel
from .raycast import scene_caster


def scene_model(prep, config: RenderConfig) -> SceneModel:
    """The :class:`SceneModel` of a :class:`dataset_tools.render.PreparedScene`."""
    ids = np.array(list(prep.objects_by_id), dtype=np.int64)
    boxes = np.asarray(prep.boxes, dtype=np.float64)
    framed = np.asarray(prep.framed, dtype=bool)
    structure = framing.structure_mask(boxes) & ~framed if len(boxes) else np.zeros(0, dtype=bool)
    return SceneModel(ids=ids, boxes=boxes, content=framed.copy(), structure=structure)


def content_ids(prep, config: RenderConfig) -> list[int]:
    """Leaf ids of the content objects (what coverage counts)."""
    m = scene_model(prep, config)
    return [int(i) for i in m.content_ids]


def plan_cameras(prep, config: RenderConfig, counts: dict[str, int]) -> Placement:
    """Cameras for every split in ``counts`` (views per split) with ``config.placement``."""
    model = scene_model(prep, config)
    framed_all = tuple(config.frame) == (framing.FRAME_ALL,)
    structure_ids = {int(i) for i in model.ids[model.structure]}
    structure_cast = None
    if structure_ids and not framed_all and config.placement != "orbit":
        structure_cast = scene_caster(prep.objects_by_id, prep.depsgraph, only=structure_ids)
    built: list = []

    def cast(origins, dirs):  # the whole scene's BVH, built on first use (the plain orbit never casts)
        if not built:
            built.append(scene_caster(prep.objects_by_id, prep.depsgraph))
        return built[0](origins, dirs)

    K = intrinsics(config.width, config.height, config.camera_angle_x)
    return plan(cast, structure_cast, model, counts, K, config.width, config.height, config.camera_angle_x,
                config.seed, config.placement, prep.centre, prep.radius, config.hemisphere, config.rotations,
                framed_all=framed_all, margin=config.margin)
