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

Two table layouts (:data:`LAYOUTS`), one checkpoint format. ``ngp`` (the torch grid's own): vertex ``x * N_l``,
``N_l + 1`` vertices per axis. ``tcnn``: tiny-cuda-nn's geometry, reproduced exactly by :class:`TorchHashGrid`
(``layout="tcnn"``, :func:`tcnn_grid_layout`): scale ``s_l = N_min * b^l - 1`` (float32), vertex
``x * s_l + 0.5``, ``ceil(s_l) + 1`` vertices per axis, dense index modulo the level's size. Both encoders save
the same keys, ``table`` [rows, F] and ``_extra_state = {"layout": ...}``; tiny-cuda-nn's flat
``encoding.params`` is that table flattened row-major. So a run trained with tiny-cuda-nn loads into the torch grid
on any machine (the grid switches to the ``tcnn`` layout on load, same function), and the legacy key
``encoding.params`` converts on load too. The reverse (an ``ngp`` table into tiny-cuda-nn) has no exact
conversion: :class:`EncoderLayoutError` says to load it with ``backend="torch"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

#: Instant-NGP's spatial-hash primes (the first is 1: the x coordinate is not scrambled).
HASH_PRIMES = (1, 2654435761, 805459861)


#: Table layouts: the torch grid's own (``ngp``) and tiny-cuda-nn's (``tcnn``).
LAYOUTS = ("ngp", "tcnn")


class EncoderUnavailableError(RuntimeError):
    """The requested encoder back-end (e.g. ``tcnn``) cannot be used on this machine/device."""


class EncoderLayoutError(RuntimeError):
    """A saved hash-grid table cannot be loaded into this encoder (layout or size mismatch)."""


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


def tcnn_grid_layout(cfg: HashGridConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tiny-cuda-nn's per-level layout (``HashGrid``, ``encodings/grid.h``), for the same config.

    ``scale_l = exp2(l * log2(b)) * N_min - 1`` (float32, as on the GPU); ``res_l = ceil(scale_l) + 1`` vertices per
    axis; ``size_l = min(next_multiple(min(res_l^3, T), 8), T)`` table rows; dense when ``res_l^3 <= size_l``.
    The flat ``params`` vector of ``tcnn.Encoding`` is the concatenation over levels of ``[size_l, F]`` row-major.

    Shape: -> (float32 [L] scales, int64 [L] vertices per axis, int64 [L] sizes, bool [L] dense).

    >>> sc, res, size, dense = tcnn_grid_layout(HashGridConfig(num_levels=2, log2_hashmap_size=12,
    ...                                                         base_resolution=4, max_resolution=32))
    >>> sc.tolist(), res.tolist(), size.tolist(), dense.tolist()
    ([3.0, 31.0], [4, 32], [64, 4096], [True, False])
    """
    t = 1 << cfg.log2_hashmap_size
    log2_b = np.float32(np.log2(np.float32(cfg.per_level_scale)))
    lvl = np.arange(cfg.num_levels, dtype=np.float32)
    scale = (np.exp2(lvl * log2_b, dtype=np.float32) * np.float32(cfg.base_resolution) - np.float32(1.0)).astype(
        np.float32)
    res = np.ceil(scale).astype(np.int64) + 1
    verts = res.astype(np.float64) ** 3  # float: no int64 overflow at fine levels
    size = np.where(verts > t, t, np.minimum((np.minimum(verts, t).astype(np.int64) + 7) // 8 * 8, t))
    dense = verts <= size
    return scale, res, size.astype(np.int64), dense


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

    ``layout``: ``ngp`` (default) or ``tcnn`` (tiny-cuda-nn's geometry, bit-compatible tables: see the module
    docstring). Loading a state dict saved with the other layout (or tiny-cuda-nn's ``encoding.params``) switches
    the layout and resizes the table: the function is the one that was trained.

    Shape: ``x`` float [B, 3] in ``[0, 1]^3`` -> float32 [B, L * F]. Differentiable w.r.t. the table (and ``x``).
    """

    def __init__(self, cfg: HashGridConfig, device: torch.device | str | None = None, layout: str = "ngp"):
        super().__init__()
        self.cfg = cfg
        self.table = nn.Parameter(torch.zeros(0, cfg.features_per_level, device=device))
        self._set_layout(layout, device)
        with torch.no_grad():  # same draws as before the layouts existed: rand * 2 - 1, scaled
            self.table.copy_((torch.rand(self.table.shape, device=device) * 2 - 1) * cfg.init_scale)

    def _set_layout(self, layout: str, device: torch.device | str | None = None) -> None:
        """(Re)build the per-level buffers for ``layout`` and size the table for it (contents kept if same size)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        cfg = self.cfg
        device = self.table.device if device is None else device
        if layout == "tcnn":
            scale, res, size, dense = tcnn_grid_layout(cfg)
            verts = res  # vertices per axis
        else:
            res, size, dense = grid_layout(cfg)
            scale = res.astype(np.float32)
            verts = res + 1
        self.layout = layout
        offsets = np.concatenate([[0], np.cumsum(size)[:-1]])
        rows = int(size.sum())
        if self.table.shape[0] != rows:
            self.table = nn.Parameter(torch.zeros(rows, cfg.features_per_level, device=device,
                                                  dtype=self.table.dtype))
        self.register_buffer("resolution", torch.as_tensor(res, device=device), persistent=False)
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32, device=device), persistent=False)
        self.register_buffer("table_size", torch.as_tensor(size, device=device), persistent=False)
        self.register_buffer("dense", torch.as_tensor(dense, device=device), persistent=False)
        self.register_buffer("offset", torch.as_tensor(offsets, device=device), persistent=False)
        self.num_dense = int(dense.sum())
        if not dense[:self.num_dense].all():
            raise AssertionError("dense levels must be a prefix (resolutions increase)")
        r = verts[:self.num_dense, None]
        self.register_buffer("dense_stride", torch.as_tensor(r ** np.arange(3)[None, :], device=device),
                             persistent=False)  # [Ld, 3]: 1, R, R^2
        self.register_buffer("primes", torch.as_tensor(HASH_PRIMES, dtype=torch.int64, device=device),
                             persistent=False)

    # -- one checkpoint format for both encoders ---------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return {"layout": self.layout}

    def set_extra_state(self, state) -> None:  # the layout was applied in _load_from_state_dict
        pass

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        legacy = state_dict.pop(prefix + "encoding.params", None)  # a TcnnHashGrid saved before this format
        extra = state_dict.get(prefix + "_extra_state")
        layout = extra.get("layout", "ngp") if isinstance(extra, dict) else ("tcnn" if legacy is not None else "ngp")
        if legacy is not None:
            state_dict[prefix + "table"] = legacy.reshape(-1, self.cfg.features_per_level)
        if layout != self.layout:
            self._set_layout(layout)
        table = state_dict.get(prefix + "table")
        if table is not None and tuple(table.shape) != tuple(self.table.shape):
            raise EncoderLayoutError(
                f"hash grid table {prefix}table of shape {tuple(table.shape)} does not fit the {layout} layout of "
                f"this config ({tuple(self.table.shape)}): the checkpoint was made with another HashGridConfig")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if prefix + "_extra_state" in missing_keys:  # checkpoints from before the layout record: ngp
            missing_keys.remove(prefix + "_extra_state")

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
        if self.layout == "tcnn":  # tiny-cuda-nn: pos = x * scale + 0.5, floor, fraction
            pos = x[:, None, :] * self.scale[None, :, None] + 0.5
            fl = torch.floor(pos)
            base, frac = fl.long(), pos - fl
        else:
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
            d = (t[:, :, 2, :, None, None] + t[:, :, 1, None, :, None] + t[:, :, 0, None, None, :]).reshape(b, nd, 8)
            if self.layout == "tcnn":  # the +1 corner at x = 1 may pass the last vertex: tcnn wraps modulo the size
                d = torch.remainder(d, self.table_size[None, :nd, None])
            parts.append(d)
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
    """tiny-cuda-nn's fused hash grid with the same configuration; output cast to float32.

    Its state dict uses the shared format (``table`` [rows, F] + ``_extra_state = {"layout": "tcnn"}``), which
    :class:`TorchHashGrid` loads on any machine; the legacy ``encoding.params`` key loads too. A table saved with
    the ``ngp`` layout raises :class:`EncoderLayoutError` (no exact conversion exists).
    """

    def __init__(self, cfg: HashGridConfig, device: torch.device | str):
        super().__init__()
        import tinycudann as tcnn

        self.cfg = cfg
        self.layout = "tcnn"
        self.encoding = tcnn.Encoding(3, tcnn_encoding_config(cfg)).to(device)
        expected = int(tcnn_grid_layout(cfg)[2].sum()) * cfg.features_per_level
        if self.encoding.params.numel() != expected:  # pragma: no cover - a tiny-cuda-nn layout change
            raise EncoderLayoutError(f"tiny-cuda-nn allocated {self.encoding.params.numel()} hash-grid parameters, "
                                     f"the shared layout expects {expected}: update tcnn_grid_layout")
        self._register_state_dict_hook(_tcnn_save_hook)
        self._register_load_state_dict_pre_hook(self._tcnn_load_hook)

    def _tcnn_load_hook(self, state_dict, prefix, *args) -> None:
        extra = state_dict.pop(prefix + "_extra_state", None)
        layout = extra.get("layout", "ngp") if isinstance(extra, dict) else None
        table = state_dict.pop(prefix + "table", None)
        if table is None:
            return  # the legacy key encoding.params (or missing: strict loading reports it)
        if layout != "tcnn":
            raise EncoderLayoutError(
                f"{prefix}table was saved by the pure-torch hash grid (layout {layout or 'ngp'}), which "
                "tiny-cuda-nn cannot load exactly; load this run with the torch encoder "
                "(HashGridConfig(backend='torch'), e.g. `backend train ... --device cpu` or device auto without "
                "tinycudann) or retrain with tcnn")
        state_dict[prefix + "encoding.params"] = table.reshape(-1)

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[-1] != 3:
            raise ValueError(f"hash grid input must be [B, 3], got {tuple(x.shape)}")
        return self.encoding(x.float().clamp(0.0, 1.0).contiguous()).float()


def tcnn_encoding_config(cfg: HashGridConfig) -> dict:
    """The ``tcnn.Encoding`` config of ``cfg`` (the geometry :func:`tcnn_grid_layout` mirrors)."""
    return {"otype": "HashGrid", "n_levels": cfg.num_levels, "n_features_per_level": cfg.features_per_level,
            "log2_hashmap_size": cfg.log2_hashmap_size, "base_resolution": cfg.base_resolution,
            "per_level_scale": cfg.per_level_scale, "interpolation": "Linear"}


def _tcnn_save_hook(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """``encoding.params`` (flat) -> ``table`` [rows, F] + the layout record (the shared checkpoint format)."""
    flat = state_dict.pop(prefix + "encoding.params")
    state_dict[prefix + "table"] = flat.reshape(-1, module.cfg.features_per_level)
    state_dict[prefix + "_extra_state"] = {"layout": "tcnn"}


def convert_tcnn_params(params: Tensor | np.ndarray, cfg: HashGridConfig) -> Tensor:
    """tiny-cuda-nn's flat ``params`` -> the ``table`` [rows, F] of ``TorchHashGrid(cfg, layout="tcnn")``.

    Checks the size against :func:`tcnn_grid_layout`. Shape: [sum(size_l) * F] -> [sum(size_l), F].
    """
    t = torch.as_tensor(params).reshape(-1)
    rows = int(tcnn_grid_layout(cfg)[2].sum())
    if t.numel() != rows * cfg.features_per_level:
        raise EncoderLayoutError(f"{t.numel()} parameters do not fit the tcnn layout of this config "
                                 f"({rows} rows x {cfg.features_per_level} features)")
    return t.reshape(rows, cfg.features_per_level)


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


def make_encoder(cfg: HashGridConfig, device: torch.device | str = "cpu", layout: str = "ngp") -> nn.Module:
    """The hash-grid encoder for ``cfg`` on ``device``: ``x`` [B, 3] in [0, 1]^3 -> [B, L * F] float32.

    ``layout`` applies to the torch grid (``tcnn``: tiny-cuda-nn's geometry, e.g. to compare the two encoders);
    either grid loads a ``tcnn``-layout checkpoint.
    """
    if select_backend(cfg, device) == "tcnn":
        return TcnnHashGrid(cfg, device)
    return TorchHashGrid(cfg, device, layout=layout)
