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
    iterations: int = 0
    """Training iterations of a preset (0 for other choices); equal to ``backend.method.config.PRESETS``."""


#: Training presets, from the paper's configuration down to the CPU demo. Times: measured with
#: ``scripts/measure_stage_times.py`` on the 2-core CPU development machine under a load average of ~17 (shared
#: with other work; an idle machine is faster); GPU times are not measured (no GPU was available).
PRESETS: tuple[Choice, ...] = (
    Choice("paper", "Paper (20k steps)", "The paper's settings: 20,000 iterations, 2^20-entry hash grids, "
           "256-d features (GPU; not measured here)", 20_000),
    Choice("default", "Default (5k steps)", "The paper's model and grids with 5,000 iterations (GPU; not measured "
           "there). On 2 busy CPU cores 2.3x slower a step than cpu (0.09 s at 8 views of 100 px): about 10 min of "
           "training for the add-on's default render; use cpu there", 5000),
    Choice("fast", "Fast (1.5k steps)", "1,500 iterations, 2^17-entry grids, 128-d features (GPU, a quick look)",
           1500),
    Choice("cpu", "CPU (1.5k steps, small)", "1,500 iterations, 2^15-entry density grid, 8-level dense 64^3 "
           "feature grid, 32-d features, coarser results (the demo's preset). The add-on's default job (32 views at "
           "200 px, table set) measured on 2 busy CPU cores (load 17): 2.6 min (render 46 s, masks 3 s, training "
           "81 s at 0.05 s a step, segmentation 24 s)", 1500),
)
PRESET_NAMES: tuple[str, ...] = tuple(c.name for c in PRESETS)
#: Preset of a job submitted without one (the service usually runs on a GPU).
DEFAULT_JOB_PRESET = "default"
#: Preset of ``backend train`` without ``--preset`` (runs anywhere, also without a GPU).
DEFAULT_TRAIN_PRESET = "cpu"
#: The add-on's preset choice "from the server": :func:`preset_for_device` of the device the server reports.
AUTO_PRESET = "auto"


def preset_for_device(device: str) -> str:
    """The preset that fits a server's device: ``cpu`` on a CPU (or unknown) device, else ``default``.

    >>> preset_for_device("cpu"), preset_for_device("cuda:0"), preset_for_device("")
    ('cpu', 'default', 'cpu')
    """
    d = device.strip().lower()
    return "cpu" if d in ("", "cpu") else DEFAULT_JOB_PRESET


def choose_preset(chosen: str, device: str) -> tuple[str, str]:
    """The preset a job runs with and a warning ('' when none): ``chosen`` (a preset name, or
    :data:`AUTO_PRESET` for :func:`preset_for_device`) on a server whose device is ``device``.

    >>> choose_preset("auto", "cpu")
    ('cpu', '')
    >>> choose_preset("default", "cpu")[1][:40]
    'preset default is meant for a GPU; this '
    """
    if chosen == AUTO_PRESET:
        return preset_for_device(device), ""
    if chosen not in PRESET_NAMES:
        raise ValueError(f"unknown preset {chosen!r}; presets: {AUTO_PRESET}, {', '.join(PRESET_NAMES)}")
    if chosen != "cpu" and preset_for_device(device) == "cpu":
        return chosen, (f"preset {chosen} is meant for a GPU; this server runs on {device or 'an unknown device'} "
                        f"(preset cpu fits it)")
    return chosen, ""


def preset_iterations(name: str) -> int:
    """Training iterations of the preset ``name``; ValueError names the presets when it is unknown."""
    for c in PRESETS:
        if c.name == name:
            return c.iterations
    raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESET_NAMES)}")

#: 2D mask sources a job may ask for (``noisy-gt``, an evaluation aid that reads ground truth, is CLI-only).
MASK_SOURCES: tuple[Choice, ...] = (
    Choice("classical", "Classical", "Multi-level watershed masks computed on the server from colour, and from depth "
           "jumps and surface creases when the scene carries depth (a Blender render always does); needs no weights"),
    Choice("classical-colour", "Classical (colour only)", "The same watershed masks from colour alone, as SAM "
           "sees an image (the default before depth was used); needs no weights"),
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
