"""Admission control's model of a job's peak memory (bytes) per stage, from what a submit declares (views, height,
width, masks sent) and its options: pure arithmetic, calibrated by measurement.

Measured with ``python bench/bench_job_memory.py`` (the real job in its own process, as ``backend serve`` runs it;
peak RSS per stage, ``VmHWM`` reset at each stage change), on full-frame scenes (every pixel on a surface: the most
points a view gives) and the ``default`` preset (256-d features), CPU, Python 3.13, torch 2.14. The terms:

- ``PROCESS_BYTES``: the job's process once it has imported torch, Open3D and the method (0.77-0.85 GiB).
- the scene (received buffers and the normalised copy), the masks kept for training, the field and its optimiser:
  resident from their stage to the end of the job.
- masks: one view's mask computation at a time.
- training: the field (by preset) plus per-pixel tables of every view (pixel graphs, mask trees); with ``nerf``
  geometry the ray batch's samples (a constant of the preset).
- segmentation: the larger of (a) fusion: up to ``2 x max_points`` sampled points with their features (and view
  directions) and
  Open3D's copies, plus one view's arrays (``nerf``: its rendered foreground features), and (b) the tree: up to
  ``max_points`` points, their kNN graph and the feature distances (taken in 64 MiB chunks).

The estimate must never be below the measurement (a job the server admits must not take it past its budget) and
should be at most 1.5x above it; ``tests/backend/service/test_job_memory.py`` asserts both on a real server.
Presets other than ``default`` / ``paper`` scale the feature terms with their feature size and keep the default's
constants (a bound: their grids are smaller).
"""

from __future__ import annotations

GiB = 2**30
MiB = 2**20

PROCESS_BYTES = int(0.86 * GiB)
SCENE_BYTES_PER_PIXEL = 40  # rgb 3 + depth 4 received, their normalised copies, the view's pixel coordinates
STORED_MASKS_PER_VIEW = 16  # bool masks kept per view for training (computed sources)
MASK_WORK_BYTES_PER_PIXEL = {"classical": 400, "classical-colour": 400, "sam": 3000, "noisy-gt": 64, "gt": 64, "given": 0}
START_BYTES_PER_PIXEL = 48  # every view's surface points (float64) while the scene is normalised
START_BYTES_PER_VIEW_PIXEL = 700  # one view's unprojection temporaries
FIELD_BYTES = int(0.45 * GiB)  # the field and its optimiser (default preset; hash grids of 2^20 entries)
TRAIN_BYTES_PER_PIXEL = 750  # pixel graphs, mask trees and sampling tables of every view
NERF_TRAIN_BYTES = int(3.1 * GiB)  # nerf geometry: the ray batch's samples through the grids, with gradients
NERF_RENDER_BYTES = int(1.6 * GiB)  # nerf geometry: rendering a block of rays (no gradients)
FUSION_COPIES = 5.0  # the sampled points' rows, and Open3D's tensors of them while voxelising
TREE_BYTES_PER_POINT = 1500  # kNN graph (k = 16, int64 both ways), bridges, edge lengths, the tree
TREE_FIXED_BYTES = 200 * MiB  # feature-distance chunks and the tree's work arrays
FEATURE_DIM = {"paper": 256, "default": 256, "fast": 128, "cpu": 32}


def estimate_peak_bytes(size, options) -> dict[str, int]:
    """Peak bytes by stage (``starting``, ``masks``, ``training``, ``segmentation``) of
    :func:`backend.method.job.run_job` for a :class:`backend.service.server.JobSize` and
    :class:`backend.wire.protocol.JobOptions`.

    >>> from types import SimpleNamespace as S
    >>> size = S(views=1, height=64, width=64, masks=0, depth=True, pixels=64 * 64)
    >>> opts = S(preset="default", mask_source="classical", geometry="auto", max_points=200_000)
    >>> {k: round(v / 2**30, 2) for k, v in estimate_peak_bytes(size, opts).items()}
    {'starting': 0.86, 'masks': 0.86, 'training': 1.31, 'segmentation': 1.52}
    """
    px_view = size.height * size.width
    pixels = size.views * px_view
    dim = FEATURE_DIM.get(options.preset, 256)
    nerf = options.geometry == "nerf" or (options.geometry == "auto" and not getattr(size, "depth", True))
    scene = PROCESS_BYTES + pixels * SCENE_BYTES_PER_PIXEL
    source = "given" if options.mask_source == "given" and size.masks else options.mask_source
    stored_masks = size.masks * px_view if size.masks else size.views * STORED_MASKS_PER_VIEW * px_view
    masks = scene + stored_masks + px_view * MASK_WORK_BYTES_PER_PIXEL.get(source, 3000)
    resident = scene + stored_masks + FIELD_BYTES
    resident += pixels * TRAIN_BYTES_PER_PIXEL  # the trainer's tables stay until the job ends
    training = resident + (NERF_TRAIN_BYTES if nerf else 0)
    row = 4 * dim + 28  # a sampled point: feature, position, colour, view direction
    n_in = min(2 * int(options.max_points), pixels)  # points fused (each view sampled to 2 max_points / views)
    n_cloud = min(int(options.max_points), n_in)
    view = (NERF_RENDER_BYTES + px_view * (row + 48)) if nerf else px_view * 48
    fusion = int(n_in * row * FUSION_COPIES) + view
    tree = n_cloud * (row + TREE_BYTES_PER_POINT) + TREE_FIXED_BYTES
    segmentation = resident + max(fusion, tree)
    starting = scene + pixels * START_BYTES_PER_PIXEL + px_view * START_BYTES_PER_VIEW_PIXEL
    return {"starting": int(starting), "masks": int(masks), "training": int(training),
            "segmentation": int(segmentation)}
