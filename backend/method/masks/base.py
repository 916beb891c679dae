"""One entry point for per-view 2D masks: :func:`make_masks` dispatches to a provider and caches.

Every provider returns, for each view of a scene, a bool array ``[M_i, H, W]`` of overlapping,
multi-granular masks (SAM "segment everything"-like). Providers (:data:`PROVIDERS`):

- ``classical`` (default): weight-free watershed hierarchy of each image (:mod:`backend.method.masks.classical`);
- ``sam``: segment-anything's automatic generator with a user checkpoint (:mod:`backend.method.masks.sam`);
- ``given``: masks carried by the scene or stored next to the dataset (:mod:`backend.method.masks.given`);
- ``noisy-gt``: evaluation only, ground truth with SAM-like noise (:mod:`backend.method.masks.noisy_gt`).

Cache: with ``cache_dir``, results of every source except ``given`` (which only reads files) are
stored as ``<cache_dir>/<source>-<key>.npz`` (bit-packed, compressed); the key hashes the scene's
images (rgb, alpha, depth, view names), the source's settings, the split and data folder, and for
``sam`` the checkpoint's path, size and modification time. A second call with the same inputs loads
the file instead of recomputing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from backend.method.masks import classical, given, noisy_gt, sam
from backend.method.masks.classical import ClassicalConfig
from backend.method.masks.errors import MaskSourceError
from backend.method.masks.given import GivenConfig
from backend.method.masks.noisy_gt import NoisyGtConfig
from backend.method.masks.sam import SamConfig
from backend.core.scene import Scene
from backend.wire.files import atomic_path

__all__ = ["MaskConfig", "MaskSourceError", "PROVIDERS", "make_masks", "cache_key", "save_masks", "load_masks"]

#: Bump when a provider's output changes for the same settings, so old cache files are ignored.
CACHE_VERSION = 2

Progress = Callable[[int, int], None]
#: ``provider(scene, source_config, data_dir, split, progress) -> list of bool [M_i, H, W]``.
Provider = Callable[[Scene, object, "Path | None", str, "Progress | None"], list]

#: Sources that share another source's settings (``classical-colour`` is ``classical`` reading colour alone).
SETTINGS_OF: dict[str, str] = {"classical-colour": "classical"}

#: Mask sources by name; the settings of source ``s`` are ``MaskConfig.<s with '-' -> '_'>`` (or those of
#: ``SETTINGS_OF[s]``).
PROVIDERS: dict[str, Provider] = {
    "classical": classical.masks_for_scene,
    "classical-colour": classical.colour_masks_for_scene,
    "sam": sam.masks_for_scene,
    "given": given.masks_for_scene,
    "noisy-gt": noisy_gt.masks_for_scene,
}


@dataclass
class MaskConfig:
    """Which source makes the 2D masks, and each source's settings."""

    source: str = "classical"
    """One of :data:`PROVIDERS`: ``classical`` (default, no weights), ``sam``, ``given``, ``noisy-gt`` (evaluation)."""
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    """Settings of the ``classical`` source."""
    sam: SamConfig = field(default_factory=SamConfig)
    """Settings of the ``sam`` source (checkpoint path, generator thresholds)."""
    given: GivenConfig = field(default_factory=GivenConfig)
    """Settings of the ``given`` source (folder)."""
    noisy_gt: NoisyGtConfig = field(default_factory=NoisyGtConfig)
    """Settings of the ``noisy-gt`` source (seed, noise rates)."""

    def source_config(self) -> object:
        """The settings dataclass of the selected source."""
        if self.source not in PROVIDERS:
            raise MaskSourceError(f"unknown mask source {self.source!r}; choose one of {sorted(PROVIDERS)}")
        return getattr(self, SETTINGS_OF.get(self.source, self.source).replace("-", "_"))

    def ground_truth_read(self, geometry: str | None = None) -> list[str]:
        """What the source reads beyond the posed colour images, stated next to every figure: ``[]`` for a
        source that sees colour only (``sam``; ``classical`` in nerf geometry); ``noisy-gt`` reads the
        ground-truth hierarchy; ``classical`` reads the rendered depth in ``depth`` geometry (exact geometry, the
        depth every row is given) unless ``use_depth=False``, always with ``use_depth=True``, and the alpha
        foreground when asked; ``sam`` reads the alpha when ``foreground_only`` (composites the images onto white
        and clips its masks to the alpha foreground)."""
        if self.source == "noisy-gt":
            return ["ground-truth ids and hierarchy"]
        if self.source in ("classical", "classical-colour"):
            c = self.classical
            depth = self.source == "classical" and (c.use_depth is True or (c.use_depth is None
                                                                             and geometry == "depth"))
            return [name for name, on in (("alpha foreground", c.use_alpha),
                                          ("rendered depth (jumps and normal creases)", depth)) if on]
        if self.source == "given":
            return ["masks supplied with the data (their origin is not known)"]
        if self.source == "sam" and self.sam.foreground_only:
            return ["alpha foreground (composited onto white, masks clipped to it)"]
        return []

    def reads(self) -> set[str]:
        """Which scene channels beyond colour the source reads: a subset of ``{"alpha", "depth"}``."""
        out = set()
        if self.source in ("classical", "classical-colour"):
            out |= {"alpha"} if self.classical.use_alpha else set()
        if self.source == "classical":
            out |= {"depth"} if self.classical.use_depth is True else set()
        if self.source == "sam" and self.sam.foreground_only:
            out.add("alpha")
        return out


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cache_key(scene: Scene, config: MaskConfig, data_dir: Path | None = None, split: str = "train") -> str:
    """Hex digest identifying the masks of ``scene`` under ``config`` (see the module docstring)."""
    h = hashlib.sha256()
    settings = {"version": CACHE_VERSION, "source": config.source, "split": split,
                "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
                "settings": dataclasses.asdict(config.source_config()), "names": list(scene.names)}
    if config.source == "sam" and config.sam.checkpoint is not None:
        ckpt = Path(config.sam.checkpoint).expanduser()
        st = ckpt.stat() if ckpt.is_file() else None
        settings["checkpoint"] = [str(ckpt.resolve()), st.st_size if st else None, st.st_mtime_ns if st else None]
    h.update(json.dumps(settings, sort_keys=True, default=_json_default).encode())
    for name in ("rgb", "alpha", "depth"):
        arr = getattr(scene, name)
        h.update(name.encode())
        if arr is not None:
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:32]


def save_masks(path: Path, masks: list[np.ndarray]) -> None:
    """Write per-view bool ``[M_i, H, W]`` masks as one compressed, bit-packed ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"num_views": np.array(len(masks))}
    for i, m in enumerate(masks):
        arrays[f"shape_{i}"] = np.array(m.shape, np.int64)
        arrays[f"bits_{i}"] = np.packbits(m.reshape(m.shape[0], m.shape[1] * m.shape[2]), axis=1)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_masks(path: Path) -> list[np.ndarray]:
    """Read masks written by :func:`save_masks`."""
    with np.load(path) as z:
        out = []
        for i in range(int(z["num_views"])):
            m, h, w = (int(v) for v in z[f"shape_{i}"])
            bits = np.unpackbits(z[f"bits_{i}"], axis=1, count=h * w)
            out.append(bits.astype(bool).reshape(m, h, w))
    return out


def _check(scene: Scene, masks: list[np.ndarray], source: str) -> list[np.ndarray]:
    if len(masks) != scene.num_views:
        raise MaskSourceError(f"mask source {source!r} returned {len(masks)} views for a scene of {scene.num_views}")
    shape = (scene.height, scene.width)
    for i, m in enumerate(masks):
        if m.ndim != 3 or m.shape[1:] != shape or m.dtype != np.bool_:
            raise MaskSourceError(f"mask source {source!r}: view {i} gave {m.dtype} {m.shape}, "
                                  f"expected bool [M,{shape[0]},{shape[1]}]")
    return masks


def make_masks(scene: Scene, config: MaskConfig, data_dir: Path | None = None, split: str = "train",
               cache_dir: Path | None = None, progress: Progress | None = None) -> list[np.ndarray]:
    """Per-view masks of ``scene`` from ``config.source``: a list of N bool arrays ``[M_i, H, W]``.

    ``data_dir`` is the dataset folder (needed by ``noisy-gt``, and by ``given`` when reading files);
    ``split`` names the files' split; ``progress(done, total)`` is called after each view computed.
    With ``cache_dir`` the result is loaded from / saved to the cache (not for ``given``).
    """
    provider = PROVIDERS.get(config.source)
    if provider is None:
        raise MaskSourceError(f"unknown mask source {config.source!r}; choose one of {sorted(PROVIDERS)}")
    data_dir = None if data_dir is None else Path(data_dir)
    path = None
    if cache_dir is not None and config.source != "given":
        path = Path(cache_dir) / f"{config.source}-{cache_key(scene, config, data_dir, split)}.npz"
        if path.is_file():
            try:
                return _check(scene, load_masks(path), config.source)
            except (OSError, ValueError, KeyError):
                pass  # unreadable or stale entry: recompute and overwrite
    masks = _check(scene, provider(scene, config.source_config(), data_dir, split, progress), config.source)
    if path is not None:
        save_masks(path, masks)
    return masks
