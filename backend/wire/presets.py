"""The one vocabulary of presets, mask sources and geometry modes, shared by every surface: the ``backend``
CLI, the job protocol (:class:`backend.wire.protocol.JobOptions`), the Blender add-on's preferences and
the trainer's preset table (:data:`backend.method.config.PRESETS`, which has exactly these names).

Standard library only. Each description says truthfully what the preset runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Choice:
    """One named choice: its identifier, a short label and a one-line truthful description."""

    name: str
    label: str
    description: str


#: Training presets, from the paper's configuration down to the CPU demo.
PRESETS: tuple[Choice, ...] = (
    Choice("paper", "Paper (20k steps)", "The paper's settings: 20,000 iterations, 2^20-entry hash grids, "
           "256-d features (GPU)"),
    Choice("default", "Default (5k steps)", "The paper's model and grids with 5,000 iterations (GPU, a few minutes)"),
    Choice("fast", "Fast (1.5k steps)", "1,500 iterations, 2^17-entry grids, 128-d features (GPU, a quick look)"),
    Choice("cpu", "CPU (1.5k steps, small)", "1,500 iterations, 2^15-entry density grid, 8-level dense 64^3 feature grid, "
           "32-d features: a few minutes on 2 CPU cores, coarser results (the demo's preset)"),
)
PRESET_NAMES: tuple[str, ...] = tuple(c.name for c in PRESETS)
#: Preset of a job submitted without one (the service usually runs on a GPU).
DEFAULT_JOB_PRESET = "default"
#: Preset of ``backend train`` without ``--preset`` (runs anywhere, also without a GPU).
DEFAULT_TRAIN_PRESET = "cpu"

#: 2D mask sources a job may ask for (``noisy-gt``, an evaluation aid that reads ground truth, is CLI-only).
MASK_SOURCES: tuple[Choice, ...] = (
    Choice("classical", "Classical", "Multi-level watershed masks computed on the server; needs no weights"),
    Choice("sam", "SAM", "Segment Anything automatic masks (the server needs a checkpoint)"),
    Choice("given", "Given", "Masks sent with the scene"),
)
MASK_SOURCE_NAMES: tuple[str, ...] = tuple(c.name for c in MASK_SOURCES)

#: Geometry modes: given depth as exact geometry, or density learned from colour (NeRF).
GEOMETRIES: tuple[str, ...] = ("auto", "depth", "nerf")

#: Most points in a returned point cloud unless a job asks otherwise.
DEFAULT_MAX_POINTS = 200_000
#: Cut thresholds (feature distance ``1 - cos``) of the labels a result carries when none are asked for: the released
#: code's Euclidean cuts 0.1, 0.2, ..., 0.5 between unit features as ``e^2 / 2``, within the range the evaluation
#: scores (finer than 0.005 gives hundreds of fragments, coarser than 0.125 mostly one segment).
DEFAULT_EXPORT_THRESHOLDS: tuple[float, ...] = (0.005, 0.02, 0.045, 0.08, 0.125)


def default_cut_index(count: int) -> int:
    """Index of the exported cut the add-on shows first (the middle one); the evaluation scores the same one.

    >>> default_cut_index(5)
    2
    """
    return max(int(count), 0) // 2


def describe(choices: tuple[Choice, ...]) -> str:
    """``name: description`` lines for ``--help`` texts.

    >>> describe((Choice("a", "A", "first"),))
    'a: first'
    """
    return "; ".join(f"{c.name}: {c.description}" for c in choices)
