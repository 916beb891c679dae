"""Masks from segment-anything's automatic generator ("segment everything"), checkpoint by path.

The model is built from an architecture in :data:`ARCHS` (``vit_h`` / ``vit_l`` / ``vit_b`` through
``segment_anything.build_sam``'s builders, or ``tiny`` for tests), then the checkpoint's state dict
is loaded (on CPU first, ``weights_only``), so a mismatched file fails with a clear message.
torch and segment-anything are imported only when this source is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from backend.method.masks.errors import MaskSourceError
from backend.core.scene import Scene


@dataclass
class SamConfig:
    """Checkpoint, architecture, device and the automatic generator's parameters."""

    checkpoint: Path | None = None
    """Path of a SAM checkpoint (e.g. ``sam_vit_h_4b8939.pth``); required."""
    arch: str = "auto"
    """Architecture in :data:`ARCHS`; ``auto`` reads ``vit_h``/``vit_l``/``vit_b`` from the file name."""
    device: str = "auto"
    """Torch device; ``auto`` = ``cuda`` when available, else ``cpu``."""
    points_per_side: int = 32
    """Grid of point prompts per side (points_per_side^2 prompts per image)."""
    points_per_batch: int = 64
    """Prompts run through the decoder at once (memory vs speed)."""
    pred_iou_thresh: float = 0.88
    """Keep masks whose predicted IoU exceeds this (0 disables the filter)."""
    stability_score_thresh: float = 0.95
    """Keep masks whose stability score exceeds this (0 disables the filter)."""
    stability_score_offset: float = 1.0
    """Logit offset used to compute the stability score."""
    box_nms_thresh: float = 0.7
    """Box IoU above which duplicate masks are suppressed."""
    crop_n_layers: int = 0
    """Extra layers of image crops (0 = whole image only)."""
    crop_nms_thresh: float = 0.7
    """Box NMS between crops."""
    crop_n_points_downscale_factor: int = 1
    """Points per side shrink by this factor in each crop layer."""
    min_mask_region_area: int = 0
    """Remove holes/islands under this many pixels (needs opencv; 0 = off)."""
    foreground_only: bool = False
    """With alpha: composite on white before SAM and clip masks to the alpha foreground. This reads the images'
    alpha (ground truth in a rendered dataset), so it is off by default and declared when on
    (:meth:`backend.method.masks.base.MaskConfig.ground_truth_read`)."""
    foreground_alpha: int = 128
    """Pixels with alpha below this (0-255) are background when ``foreground_only``."""
    min_area_frac: float = 1e-3
    """Drop masks smaller than this fraction of the image (after clipping)."""


def _tiny() -> Any:
    """A very small randomly initialised SAM (img_size 256, 2-block ViT, 32-d prompts), for tests."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    img, patch, dim = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img, patch_size=patch, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
            out_chans=dim, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img // patch, img // patch),
                                     input_image_size=(img, img), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def _registry(name: str) -> Callable[[], Any]:
    def build() -> Any:
        from segment_anything.build_sam import sam_model_registry

        return sam_model_registry[name](checkpoint=None)

    return build


#: Architectures by name: a function building the (randomly initialised) model.
ARCHS: dict[str, Callable[[], Any]] = {
    "vit_h": _registry("vit_h"),
    "vit_l": _registry("vit_l"),
    "vit_b": _registry("vit_b"),
    "tiny": _tiny,
}


def detect_arch(checkpoint: Path) -> str:
    """``vit_h``/``vit_l``/``vit_b`` from a checkpoint file name (e.g. ``sam_vit_b_01ec64.pth``)."""
    found = set(re.findall(r"vit[_-]?([hlb])(?![a-z])", checkpoint.name.lower()))
    if len(found) != 1:
        raise MaskSourceError(f"cannot tell the SAM architecture from the file name {checkpoint.name!r}; "
                              f"set masks.sam.arch to one of {sorted(ARCHS)}")
    return f"vit_{found.pop()}"


def _require_sam() -> None:
    try:
        import segment_anything  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise MaskSourceError(f"mask source 'sam' needs torch and segment-anything ({e}); install them with "
                              "`pip install 'ultrametric-seg[sam]'`, or use masks.source='classical'") from None


def load_sam(config: SamConfig) -> Any:
    """The SAM model of ``config`` with its checkpoint loaded, in eval mode on the chosen device."""
    _require_sam()
    import torch

    if config.checkpoint is None:
        raise MaskSourceError("mask source 'sam' needs a checkpoint: pass --sam-checkpoint PATH to a SAM .pth file "
                              "(e.g. sam_vit_h_4b8939.pth from the segment-anything release; in Python: "
                              "masks.sam.checkpoint), or use --mask-source classical")
    path = Path(config.checkpoint).expanduser()
    if not path.is_file():
        raise MaskSourceError(f"SAM checkpoint {path} (--sam-checkpoint) does not exist; download it from the "
                              "segment-anything release, or use --mask-source classical")
    arch = detect_arch(path) if config.arch == "auto" else config.arch
    if arch not in ARCHS:
        raise MaskSourceError(f"unknown SAM architecture {arch!r}; choose one of {sorted(ARCHS)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt or foreign file
        raise MaskSourceError(f"cannot read SAM checkpoint {path}: {type(e).__name__}: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise MaskSourceError(f"SAM checkpoint {path} holds a {type(state).__name__}, not a state dict")
    model = ARCHS[arch]()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[:3]
        raise MaskSourceError(f"SAM checkpoint {path} does not match architecture {arch!r} ({' '.join(first)}); "
                              "set masks.sam.arch to the checkpoint's model type") from None
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def build_tiny_sam(seed: int, path: Path) -> Path:
    """Write the state dict of a randomly initialised ``tiny`` SAM (seeded) to ``path``; for tests."""
    _require_sam()
    import torch

    torch.manual_seed(seed)
    model = _tiny()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def generator_masks(generator: Any, rgb: np.ndarray, alpha: np.ndarray | None, config: SamConfig) -> np.ndarray:
    """Run a ``SamAutomaticMaskGenerator`` on one image: bool ``[M, H, W]``, largest first."""
    import torch

    h, w = rgb.shape[:2]
    image = rgb
    fg = None
    if alpha is not None and config.foreground_only:
        fg = alpha >= config.foreground_alpha
        a = alpha.astype(np.float32)[..., None] / 255.0
        image = (rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).round().astype(np.uint8)
    with torch.inference_mode():
        records = generator.generate(np.ascontiguousarray(image))
    masks = [np.asarray(r["segmentation"], bool) for r in records]
    if fg is not None:
        masks = [m & fg for m in masks]
    min_pixels = max(config.min_area_frac * h * w, 1)
    masks = [m for m in masks if m.sum() >= min_pixels]
    masks.sort(key=lambda m: -int(m.sum()))
    return np.stack(masks) if masks else np.zeros((0, h, w), bool)


def masks_for_scene(scene: Scene, config: SamConfig, data_dir: Path | None = None, split: str = "train",
                    progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """SAM "segment everything" masks of every view."""
    model = load_sam(config)
    if config.min_mask_region_area > 0:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise MaskSourceError("masks.sam.min_mask_region_area > 0 needs opencv (pip install "
                                  "opencv-python-headless); or set it to 0") from None
    from segment_anything import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(
        model,
        points_per_side=config.points_per_side,
        points_per_batch=config.points_per_batch,
        pred_iou_thresh=config.pred_iou_thresh,
        stability_score_thresh=config.stability_score_thresh,
        stability_score_offset=config.stability_score_offset,
        box_nms_thresh=config.box_nms_thresh,
        crop_n_layers=config.crop_n_layers,
        crop_nms_thresh=config.crop_nms_thresh,
        crop_n_points_downscale_factor=config.crop_n_points_downscale_factor,
        min_mask_region_area=config.min_mask_region_area,
    )
    out = []
    n = scene.num_views
    for i in range(n):
        alpha = None if scene.alpha is None else scene.alpha[i]
        out.append(generator_masks(generator, scene.rgb[i], alpha, config))
        if progress is not None:
            progress(i + 1, n)
    return out
