"""The in-memory scene every backend stage shares: posed images, optional depth and masks.

Conventions (the NeRF-synthetic / Blender ones, used everywhere in the project):

- ``c2w`` (``T_world_cam``): camera-to-world, OpenGL axes (camera looks down -Z, +Y up, +X right),
  in *normalised* scene units once :func:`normalise` has run (content inside [-0.5, 0.5]^3).
- ``K``: pixel intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; pixel ``(row i, col j)`` has its
  centre at ``u = j + 0.5, v = i + 0.5``; image rows grow downwards (so camera +Y is image -v).
- ``depth``: planar depth, the distance along the camera's viewing axis (camera -Z), in the same
  units as ``c2w``; 0 marks background (no surface).
- ``masks``: per view a boolean stack ``[M_i, H, W]`` of (overlapping, multi-granular) 2D masks.

No I/O here: loaders live in :mod:`backend.method.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Scene:
    """Posed multi-view images of one scene.

    Shapes: ``rgb`` uint8 ``[N, H, W, 3]``; ``alpha`` uint8 ``[N, H, W]`` or None;
    ``c2w`` float32 ``[N, 4, 4]``; ``K`` float32 ``[N, 3, 3]``; ``depth`` float32 ``[N, H, W]`` or None;
    ``masks`` a list of N bool arrays ``[M_i, H, W]`` or None.
    """

    rgb: np.ndarray
    c2w: np.ndarray
    K: np.ndarray
    alpha: np.ndarray | None = None
    depth: np.ndarray | None = None
    masks: list[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)
    #: normalised = (world - offset) * scale; kept so results convert back to Blender units.
    scale: float = 1.0
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))

    @property
    def num_views(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[2])

    def validate(self) -> None:
        """Raise :class:`SceneError` with an actionable message when arrays disagree."""
        n = self.num_views
        if self.rgb.ndim != 4 or self.rgb.shape[-1] != 3 or self.rgb.dtype != np.uint8:
            raise SceneError(f"rgb must be uint8 [N,H,W,3], got {self.rgb.dtype} {self.rgb.shape}")
        if n == 0:
            raise SceneError("the scene has no views")
        if self.c2w.shape != (n, 4, 4):
            raise SceneError(f"c2w must be [{n},4,4], got {self.c2w.shape}")
        if self.K.shape != (n, 3, 3):
            raise SceneError(f"K must be [{n},3,3], got {self.K.shape}")
        if not np.isfinite(self.c2w).all():
            bad = sorted(set(np.nonzero(~np.isfinite(self.c2w))[0].tolist()))
            raise SceneError(f"camera poses contain NaN/inf (views {bad[:5]})")
        if not np.isfinite(self.K).all() or (self.K[:, 0, 0] <= 0).any() or (self.K[:, 1, 1] <= 0).any():
            raise SceneError("intrinsics must be finite with positive focal lengths")
        hw = (n, self.height, self.width)
        if self.alpha is not None and self.alpha.shape != hw:
            raise SceneError(f"alpha must be {hw}, got {self.alpha.shape}")
        if self.depth is not None:
            if self.depth.shape != hw:
                raise SceneError(f"depth must be {hw}, got {self.depth.shape}")
            if not np.isfinite(self.depth).all() or (self.depth < 0).any():
                raise SceneError("depth must be finite and >= 0 (0 = background)")
        if self.masks is not None:
            if len(self.masks) != n:
                raise SceneError(f"masks given for {len(self.masks)} views, scene has {n}")
            for i, m in enumerate(self.masks):
                if m.ndim != 3 or m.shape[1:] != hw[1:] or m.dtype != np.bool_:
                    raise SceneError(f"masks of view {i} must be bool [M,{hw[1]},{hw[2]}], got {m.dtype} {m.shape}")
        if self.names and len(self.names) != n:
            raise SceneError(f"{len(self.names)} names for {n} views")

    def subset(self, views: list[int] | np.ndarray) -> "Scene":
        """The same scene restricted to some views (same normalisation)."""
        idx = np.asarray(views, dtype=np.int64)
        return replace(
            self,
            rgb=self.rgb[idx],
            c2w=self.c2w[idx],
            K=self.K[idx],
            alpha=None if self.alpha is None else self.alpha[idx],
            depth=None if self.depth is None else self.depth[idx],
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            names=[self.names[i] for i in idx] if self.names else [],
        )


class SceneError(ValueError):
    """A scene's arrays are missing, inconsistent or not finite."""


def normalisation(c2w: np.ndarray, bounds: np.ndarray | None = None, radius: float = 1.5) -> tuple[np.ndarray, float]:
    """Offset and scale that put the content in [-0.5, 0.5]^3 (or the cameras at ``radius``).

    With scene ``bounds`` ([2, 3] min/max, world units) the content's box is centred and its longest
    side scaled to 1; without, the camera centres' mean is the centre and their mean distance is
    scaled to ``radius`` (the official convention: cameras at 1.5, content in the unit box).
    """
    centres = c2w[:, :3, 3].astype(np.float64)
    if bounds is not None:
        lo, hi = np.asarray(bounds, np.float64)
        offset = (lo + hi) / 2
        scale = 1.0 / max(float((hi - lo).max()), 1e-9)
    else:
        offset = centres.mean(0)
        scale = radius / max(float(np.linalg.norm(centres - offset, axis=1).mean()), 1e-9)
    return offset.astype(np.float32), float(scale)


#: The unit box holds the framed content's box grown this many times about its centre (and no more of the scene).
FRAME_GROWTH = 2.0


def unit_box_bounds(scene_bounds: np.ndarray, frame_bounds: np.ndarray | None,
                    growth: float = FRAME_GROWTH) -> np.ndarray:
    """The bounds ([2, 3] min/max, world units) the unit box is fitted to: everything that renders
    (``scene_bounds``) cut to ``growth`` times the box of what the cameras are framed on (``frame_bounds``: the
    content without backdrops and enclosing structure), about its centre. A 100 m ground plane under a 2 m
    bedroom would otherwise make the box 100 m wide and the feature grid's cells 1.5 m; surfaces beyond the cut
    still get features (positions are clamped to the box), they only share the outermost cells.

    >>> unit_box_bounds(np.array([[-50.0, -50, -0.2], [50, 50, 2]]), np.array([[-1.0, -1, 0], [1, 1, 1.6]])).tolist()
    [[-2.0, -2.0, -0.2], [2.0, 2.0, 2.0]]
    >>> unit_box_bounds(np.array([[-3.0, -2, 0], [3, 2, 2.7]]), np.array([[-2.5, -1.5, 0], [2.5, 1.5, 1.8]])).tolist()
    [[-3.0, -2.0, 0.0], [3.0, 2.0, 2.7]]
    """
    sb = np.asarray(scene_bounds, np.float64)
    if frame_bounds is None:
        return sb
    fb = np.asarray(frame_bounds, np.float64)
    centre, half = fb.mean(axis=0), 0.5 * (fb[1] - fb[0]) * float(growth)
    lo, hi = np.maximum(sb[0], centre - half), np.minimum(sb[1], centre + half)
    if np.any(hi <= lo):  # the frame lies outside what renders (inconsistent metadata): keep the scene's box
        return sb
    return np.stack([lo, hi])


def normalise(scene: Scene, offset: np.ndarray, scale: float) -> Scene:
    """Apply ``normalised = (world - offset) * scale`` to poses and depth (intrinsics unchanged)."""
    c2w = scene.c2w.astype(np.float32).copy()
    c2w[:, :3, 3] = (c2w[:, :3, 3] - offset) * scale
    depth = None if scene.depth is None else (scene.depth * scale).astype(np.float32)
    # Compose with any earlier normalisation: world = x / scale_total + offset_total.
    total_offset = scene.offset + np.asarray(offset, np.float32) / scene.scale
    return replace(scene, c2w=c2w, depth=depth, scale=scene.scale * scale, offset=total_offset.astype(np.float32))
