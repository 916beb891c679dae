"""Conversions between :class:`backend.core.scene.Scene` and the wire :class:`backend.wire.protocol.Submit`."""

from __future__ import annotations

import numpy as np

from backend.wire.protocol import JobOptions, Submit, new_job_id
from backend.core.scene import Scene


def submit_from_scene(scene: Scene, options: JobOptions | None = None, job: str | None = None) -> Submit:
    """The submit message for ``scene`` (alpha, when present, travels as the 4th rgb channel)."""
    rgb = scene.rgb if scene.alpha is None else np.concatenate([scene.rgb, scene.alpha[..., None]], axis=-1)
    return Submit(
        job=job or new_job_id(),
        rgb=np.ascontiguousarray(rgb, np.uint8),
        c2w=np.ascontiguousarray(scene.c2w, np.float32),
        intrinsics=np.ascontiguousarray(scene.K, np.float32),
        depth=None if scene.depth is None else np.ascontiguousarray(scene.depth, np.float32),
        masks=None if scene.masks is None else [np.ascontiguousarray(m, np.bool_) for m in scene.masks],
        names=list(scene.names),
        scale=float(scene.scale),
        offset=tuple(float(x) for x in np.asarray(scene.offset).reshape(3)),
        options=options or JobOptions(),
    )


def scene_from_submit(msg: Submit) -> Scene:
    """The scene of a (validated) submit; raises :class:`backend.core.scene.SceneError` if inconsistent."""
    n = msg.rgb.shape[0]
    rgb, alpha = msg.rgb, None
    if rgb.shape[-1] == 4:
        alpha = np.ascontiguousarray(rgb[..., 3])
        rgb = np.ascontiguousarray(rgb[..., :3])
    K = msg.intrinsics.astype(np.float32)
    if K.ndim == 2:
        K = np.broadcast_to(K, (n, 3, 3)).copy()
    scene = Scene(
        rgb=rgb, c2w=msg.c2w, K=K, alpha=alpha, depth=msg.depth, masks=msg.masks,
        names=list(msg.names), scale=float(msg.scale), offset=np.asarray(msg.offset, np.float32),
    )
    scene.validate()
    return scene
