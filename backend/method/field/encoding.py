"""Multi-resolution hash-grid encoding (Instant-NGP, Müller et al. 2022), as used by the ultrametric field.

the paper, Sec. 4.1 and 5.4: the feature branch uses a hash grid with 17 levels, 4 features per level and a 2^20-entry table
(these are :class:`HashGridConfig`'s defaults); the released code gives the feature branch its own coarser grid
(maximum resolution 64).

One interface, two back-ends:

- ``tcnn``: tiny-cuda-nn's fused ``HashGrid`` encoding, used when it is importable and the device is CUDA
  (never required; the import is guarded).
- ``torch``: :class:`TorchHashGrid`, a vectorised pure-PyTorch version of the same encoding: all levels at once,
  trilinear interpolation over the 8 cell corners, the Instant-NGP spatial hash
  ``(x * 1) xor (y * 2654435761) xor (z * 805459861) mod T`` for fine levels, and dense indexing for the coarse
  levels whose ``(N_l + 1)^3`` vertices fit in the table.

Level ``l`` has resolution ``N_l = floor(N_min * b^l)`` with ``b = exp((ln N_max - ln N_min) / (L - 1))``.
Input ``x`` is in ``[0, 1]^3`` (values outside are clamped); output ``[B, L * F]`` (level-major).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: Instant-NGP's spatial-hash primes (the first is 1: the x coordinate is not scrambled).
HASH_PRIMES = (1, 2654435761, 805459861)


class EncoderUnavailableError(RuntimeError):
    """The requested encoder back-end (e.g. ``tcnn``) cannot be used on this machine/device."""


@dataclass(frozen=True)
class HashGridConfig:
    """Hash-grid encoder settings (defaults: the paper's feature grid, the paper, Sec. 4.1 and 5.4)."""

    num_levels: int = 17
    """Number of resolution levels ``L``."""
    features_per_level: int = 4
    """Features stored per table entry ``F``."""
    log2_hashmap_size: int = 20
    """log2 of the per-level table size ``T`` (2^20 in the paper)."""
    base_resolution: int = 16
    """Coarsest grid resolution ``N_min``."""
    max_resolution: int = 2048
    """Finest grid resolution ``N_max`` (the released feature branch uses 64)."""
    init_scale: float = 1e-4
    """Table entries are initialised uniformly in ``[-init_scale, init_scale]`` (Instant-NGP)."""
    backend: str = "auto"
    """``auto`` (tcnn on CUDA when importable, else torch), ``tcnn`` (required) or ``torch``."""

    def __post_init__(self) -> None:
        if self.num_levels < 1 or self.features_per_level < 1:
            raise ValueError("num_levels and features_per_level must be >= 1")
        if not 4 <= self.log2_hashmap_size <= 26:
            raise ValueError(f"log2_hashmap_size must be in [4, 26], got {self.log2_hashmap_size}")
        if self.base_resolution < 1 or self.max_resolution < self.base_resolution:
            raise ValueError("need 1 <= base_resolution <= max_resolution")
        if self.backend not in ("auto", "tcnn", "torch"):
            raise ValueError(f"backend must be auto, tcnn or torch, got {self.backend!r}")

    @property
    def output_dim(self) -> int:
        """``L * F``."""
        return self.num_levels * self.features_per_level

    @property
    def per_level_scale(self) -> float:
        """Growth factor ``b`` between consecutive levels."""
        if self.num_levels == 1:
            return 1.0
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.num_levels - 1))

    def resolutions(self) -> list[int]:
        """``N_l`` for every level."""
        b = self.per_level_scale
        return [int(math.floor(self.base_resolution * b ** lvl + 1e-6)) for lvl in range(self.num_levels)]


def grid_layout(cfg: HashGridConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-level table layout: resolutions ``N_l``, table sizes and whether the level is dense.

    A level is dense when its ``(N_l + 1)^3`` vertices fit in ``T = 2^log2_hashmap_size`` entries; its table then
    has exactly that many rows (rounded up to a multiple of 8, as Instant-NGP does); otherwise it has ``T`` rows
    and is indexed by the spatial hash.

    Shape: -> (int64 [L], int64 [L], bool [L]).

    >>> res, size, dense = grid_layout(HashGridConfig(num_levels=2, log2_hashmap_size=12, base_resolution=4,
    ...                                               max_resolution=32))
    >>> res.tolist(), size.tolist(), dense.tolist()
    ([4, 32], [128, 4096], [True, False])
    """
    res = np.array(cfg.resolutions(), dtype=np.int64)
    t = 1 << cfg.log2_hashmap_size
    verts = (res + 1) ** 3
    dense = verts <= t
    size = np.where(dense, (verts + 7) // 8 * 8, t)
    return res, size.astype(np.int64), dense


class _GatherRows(torch.autograd.Function):
    """``table[idx]`` with a deterministic, fast backward (``index_add_``; ``table[idx]`` accumulates
    non-deterministically on CPU and ``F.embedding`` sorts). Shape: [T, F], int64 [...] -> [..., F]."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.num_rows = table.shape[0]
        return table.index_select(0, idx.reshape(-1)).reshape(*idx.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        g = torch.zeros(ctx.num_rows, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        g.index_add_(0, idx.reshape(-1), grad.reshape(-1, grad.shape[-1]))
        return g, None


class TorchHashGrid(nn.Module):
    """Pure-PyTorch multi-resolution hash encoding, vectorised over levels and corners.

    Shape: ``x`` float [B, 3] in ``[0, 1]^3`` -> float32 [B, L * F]. Differentiable w.r.t. the table (and ``x``).
    """

    def __init__(self, cfg: HashGridConfig, device: torch.device | str | None = None):
        super().__init__()
        self.cfg = cfg
        res, size, dense = grid_layout(cfg)
        offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
        self.table = nn.Parameter(
            (torch.rand(int(size.sum()), cfg.features_per_level, device=device) * 2 - 1) * cfg.init_scale)
        self.register_buffer("resolution", torch.as_tensor(res, device=device), persistent=False)
        self.register_buffer("table_size", torch.as_tensor(size, device=device), persistent=False)
        self.register_buffer("dense", torch.as_tensor(dense, device=device), persistent=False)
        self.register_buffer("offset", torch.as_tensor(offsets, device=device), persistent=False)
        self.num_dense = int(dense.sum())
        if not dense[:self.num_dense].all():
            raise AssertionError("dense levels must be a prefix (resolutions increase)")
        r = res[:self.num_dense, None] + 1
        self.register_buffer("dense_stride", torch.as_tensor(r ** np.arange(3)[None, :], device=device),
                             persistent=False)  # [Ld, 3]: 1, R, R^2
        self.register_buffer("primes", torch.as_tensor(HASH_PRIMES, dtype=torch.int64, device=device),
                             persistent=False)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def corner_indices(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Table row and trilinear weight of each of the 8 corners at every level.

        Separable evaluation: per axis the two candidate coordinates ``base`` and ``base + 1`` are mapped once
        (times ``R^axis`` for dense levels, times the hash prime for hashed ones) and the 8 corners are formed by
        broadcasting (``+`` resp. ``xor``). Dense levels are the coarse prefix of the level list.
        Corner ``c`` has offsets ``(c & 1, c >> 1 & 1, c >> 2 & 1)``.

        Shape: ``x`` [B, 3] -> (int64 [B, L, 8], float [B, L, 8]).
        """
        x = x.float().clamp(0.0, 1.0)
        b = x.shape[0]
        pos = x[:, None, :] * self.resolution[None, :, None].float()  # [B, L, 3] in [0, N_l]
        base = torch.minimum(pos.long(), self.resolution[None, :, None] - 1)  # floor (pos >= 0)
        frac = pos - base.float()
        wts = torch.stack([1.0 - frac, frac], dim=-1)  # [B, L, 3, 2]
        w = (wts[:, :, 2, :, None, None] * wts[:, :, 1, None, :, None] * wts[:, :, 0, None, None, :]).reshape(
            b, -1, 8)
        cand = torch.stack([base, base + 1], dim=-1)  # [B, L, 3, 2]
        nd = self.num_dense
        parts = []
        if nd:
            t = cand[:, :nd] * self.dense_stride[None, :, :, None]  # x, y * R, z * R^2
            parts.append((t[:, :, 2, :, None, None] + t[:, :, 1, None, :, None] + t[:, :, 0, None, None, :])
                         .reshape(b, nd, 8))
        if nd < self.cfg.num_levels:
            t = cand[:, nd:] * self.primes[None, None, :, None]
            h = t[:, :, 2, :, None, None] ^ t[:, :, 1, None, :, None] ^ t[:, :, 0, None, None, :]
            parts.append((h & ((1 << self.cfg.log2_hashmap_size) - 1)).reshape(b, -1, 8))
        idx = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)) + self.offset[None, :, None]
        return idx, w

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"hash grid input must be [B, 3], got {tuple(x.shape)}")
        idx, w = self.corner_indices(x)
        feats = _GatherRows.apply(self.table, idx)  # [B, L, 8, F]
        out = (feats * w[..., None]).sum(2)  # [B, L, F]
        return out.reshape(x.shape[0], -1)


def tcnn_available() -> bool:
    """True when ``tinycudann`` imports (it needs a CUDA build; never a hard dependency)."""
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA build raising at import
        return False
    return True


class TcnnHashGrid(nn.Module):
    """tiny-cuda-nn's fused hash grid with the same configuration; output cast to float32."""

    def __init__(self, cfg: HashGridConfig, device: torch.device | str):
        super().__init__()
        import tinycudann as tcnn

        self.cfg = cfg
        self.encoding = tcnn.Encoding(3, {
            "otype": "HashGrid",
            "n_levels": cfg.num_levels,
            "n_features_per_level": cfg.features_per_level,
            "log2_hashmap_size": cfg.log2_hashmap_size,
            "base_resolution": cfg.base_resolution,
            "per_level_scale": cfg.per_level_scale,
        }).to(device)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"hash grid input must be [B, 3], got {tuple(x.shape)}")
        return self.encoding(x.float().clamp(0.0, 1.0).contiguous()).float()


def select_backend(cfg: HashGridConfig, device: torch.device | str) -> str:
    """Which back-end :func:`make_encoder` uses: ``tcnn`` or ``torch``.

    Raises :class:`EncoderUnavailableError` when ``cfg.backend == "tcnn"`` but tiny-cuda-nn is not importable or
    the device is not CUDA.
    """
    is_cuda = torch.device(device).type == "cuda"
    if cfg.backend == "torch":
        return "torch"
    ok = is_cuda and tcnn_available()
    if cfg.backend == "tcnn" and not ok:
        why = "the device is not CUDA" if not is_cuda else "tinycudann is not importable"
        raise EncoderUnavailableError(f"hash grid backend 'tcnn' requested but {why}")
    return "tcnn" if ok else "torch"


def make_encoder(cfg: HashGridConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The hash-grid encoder for ``cfg`` on ``device``: ``x`` [B, 3] in [0, 1]^3 -> [B, L * F] float32."""
    if select_backend(cfg, device) == "tcnn":
        return TcnnHashGrid(cfg, device)
    return TorchHashGrid(cfg, device)
