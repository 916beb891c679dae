"""Request building and response parsing for the add-on (bpy-free; tested with plain pytest).

:func:`build_submit` turns rendered views (what :func:`dataset_tools.render.render_views` returns) into
the wire ``Submit``; :func:`parse_result` checks a ``Result`` (or a saved ``result.npz``) and returns a
:class:`SegmentationResult` the importer can use without further checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.wire import presets
from backend.wire import protocol as P
from backend.wire import result_files
from backend.wire.tree_cut import TreeError, validate_tree


@dataclass(frozen=True)
class SegmentOptions:
    """What the panel asks of the server (mirrors :class:`protocol.JobOptions`)."""

    preset: str = presets.DEFAULT_JOB_PRESET
    mask_source: str = "classical"
    geometry: str = "auto"
    max_points: int = presets.DEFAULT_MAX_POINTS
    iterations: int | None = None
    seed: int = 0

    def job_options(self) -> P.JobOptions:
        opts = P.JobOptions(preset=self.preset, mask_source=self.mask_source, geometry=self.geometry,
                            max_points=int(self.max_points), iterations=self.iterations, seed=int(self.seed))
        opts.validate()
        return opts


def build_submit(rgba: np.ndarray, c2w: np.ndarray, K: np.ndarray, depth: np.ndarray | None = None,
                 options: SegmentOptions | P.JobOptions | None = None, job: str | None = None,
                 names: list[str] | None = None, client_token: str | None = None) -> P.Submit:
    """The ``Submit`` for rendered views, validated.

    Shapes: ``rgba`` uint8 [N, H, W, 3|4] (alpha = foreground); ``c2w`` [N, 4, 4] camera-to-world
    (OpenGL/Blender axes, world units); ``K`` [3, 3] or [N, 3, 3] pixels; ``depth`` [N, H, W] planar,
    world units, 0 = background. Poses and depth travel in world units (``scale`` 1, ``offset`` 0);
    the server normalises and returns points in world units. Raises ``protocol.ProtocolError``.
    """
    if isinstance(options, SegmentOptions) or options is None:
        options = (options or SegmentOptions()).job_options()
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    n = rgba.shape[0]
    msg = P.Submit(
        job=job or P.new_job_id(),
        rgb=rgba,
        c2w=np.ascontiguousarray(c2w, dtype=np.float32),
        intrinsics=np.ascontiguousarray(K, dtype=np.float32),
        depth=None if depth is None else np.ascontiguousarray(depth, dtype=np.float32),
        names=list(names) if names else [f"view_{i:03d}" for i in range(n)],
        options=options,
        client_token=client_token,
    )
    msg.validate()
    return msg


#: How a result's exported levels were chosen (``hierarchy.levels_chosen_by.rule``), as the Result panel says it.
LEVEL_RULES = {"persistent": "read off the tree (from parts to the whole scene)", "fixed": "at fixed thresholds",
               "requested": "at the requested thresholds"}


class ResultError(ValueError):
    """A result lacks what the add-on needs (points) or is inconsistent."""


@dataclass
class SegmentationResult:
    """A checked result. Shapes: ``points`` float32 [N, 3] world units; ``colors`` uint8 [N, 3];
    ``parents`` int32 [M] / ``altitudes`` float32 [M] the single-linkage tree (None when absent);
    ``labels`` int32 [T, N] at ``thresholds`` float32 [T] (may be T = 0)."""

    points: np.ndarray
    colors: np.ndarray
    parents: np.ndarray | None
    altitudes: np.ndarray | None
    labels: np.ndarray
    thresholds: np.ndarray
    job: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def has_tree(self) -> bool:
        return self.parents is not None

    def levels_note(self) -> str:
        """One line for the Result panel: how many exported levels there are, how the server chose them (the
        result's ``hierarchy.levels_chosen_by``) and which one the result opened on ('' without levels)."""
        n = int(self.thresholds.size)
        if not n:
            return ""
        info = (self.meta.get("hierarchy") or {}).get("levels_chosen_by") or {}
        how = LEVEL_RULES.get(info.get("rule") if isinstance(info, dict) else None, "as sent")
        return f"{n} levels {how}; opened at {presets.default_cut_index(n) + 1} of {n}"

    def default_threshold(self) -> float:
        """A middle threshold to show first: the median returned one, else the tree's median merge."""
        if self.thresholds.size:
            return float(self.thresholds[presets.default_cut_index(len(self.thresholds))])
        if self.has_tree and self.altitudes.size > self.n_points:
            return float(np.median(self.altitudes[self.n_points:]))
        return 0.0


def parse_result(arrays: dict[str, np.ndarray], meta: dict | None = None, job: str = "") -> SegmentationResult:
    """Check the arrays of a result (names of ``protocol.ResultArrays``) and build a
    :class:`SegmentationResult`. Raises :class:`ResultError`."""
    try:
        P.JobResult(arrays=dict(arrays), meta=dict(meta or {})).validate(P.Limits(max_total_bytes=2**40))
    except P.ProtocolError as e:
        raise ResultError(f"invalid result: {e.message}") from None
    R = P.ResultArrays
    if R.POINTS not in arrays:
        raise ResultError("the result has no points")
    points = np.ascontiguousarray(arrays[R.POINTS], np.float32)
    n = points.shape[0]
    colors = arrays.get(R.COLORS)
    colors = np.full((n, 3), 200, np.uint8) if colors is None else np.ascontiguousarray(colors, np.uint8)
    parents = altitudes = None
    if R.PARENTS in arrays:
        parents = np.ascontiguousarray(arrays[R.PARENTS], np.int32)
        altitudes = np.ascontiguousarray(arrays[R.ALTITUDES], np.float32)
        try:
            validate_tree(parents, altitudes, n)
        except TreeError as e:
            raise ResultError(f"invalid segmentation tree: {e}") from None
    thresholds = np.ascontiguousarray(arrays.get(R.THRESHOLDS, np.zeros(0, np.float32)), np.float32)
    labels = arrays.get(R.LABELS)
    if labels is None:
        labels = np.zeros((0, n), np.int32)
        if thresholds.size:
            thresholds = np.zeros(0, np.float32)
    elif thresholds.size != labels.shape[0]:
        if R.THRESHOLDS in arrays:
            raise ResultError(f"{labels.shape[0]} label rows for {thresholds.size} thresholds")
        thresholds = np.arange(labels.shape[0], dtype=np.float32)  # unnamed levels
    if parents is None and labels.shape[0] == 0:
        raise ResultError("the result has neither a tree nor labels to segment the points with")
    return SegmentationResult(points=points, colors=colors, parents=parents, altitudes=altitudes,
                              labels=np.ascontiguousarray(labels, np.int32), thresholds=thresholds,
                              job=job, meta=dict(meta or {}))


def result_from_message(msg: P.Result) -> SegmentationResult:
    return parse_result(msg.arrays, msg.meta, msg.job)


def load_result_file(path: str | Path) -> SegmentationResult:
    """Read a saved result: ``result.npz`` as written by the backend (``meta`` inside as a JSON string,
    or a ``result.json`` beside it). ``path`` may be the file or its folder. Never unpickles."""
    try:
        saved = result_files.read_result_npz(Path(path))
    except FileNotFoundError:
        raise ResultError(f"no result file at {path}") from None
    except (OSError, ValueError) as e:
        raise ResultError(f"cannot read the result at {path}: {e}") from None
    return parse_result(saved.arrays, saved.meta, job=str(saved.meta.get("job", "")))
