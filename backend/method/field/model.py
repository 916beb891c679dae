"""The ultrametric feature field: a NeRF (density + colour) plus a feature branch (the paper, Sec. 4.1 and 5.4).

- Geometry: hash grid (:mod:`backend.method.field.encoding`) -> small MLP -> density ``sigma`` (truncated exp) and a
  geometry feature; colour MLP on (geometry feature, encoded view direction) -> RGB in [0, 1].
- Features, as the released code does it: an own, coarser hash grid (max resolution 64) on DETACHED positions,
  an MLP to 128 then a linear layer to ``feature_dim`` (256 in the paper). The renderer composites them with
  weights from DETACHED densities, so the feature losses never move geometry. Rendered features are L2-normalised;
  the background contributes a learned constant vector weighted by ``1 - opacity``; raw (pre-normalisation)
  features get the norm loss ``(||f|| - 1)^2``.

Positions are in normalised scene units: content inside ``[-bound, bound]^3`` (``bound = 0.5`` by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.method.field.encoding import HashGridConfig, make_encoder


@dataclass(frozen=True)
class UltrametricFieldConfig:
    """Architecture of :class:`UltrametricField` (defaults follow the paper, Sec. 4.1 and 5.4 and the released code)."""

    bound: float = 0.5
    """Half side of the scene box ``[-bound, bound]^3`` the grids cover (normalised units)."""
    density_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        num_levels=16, features_per_level=2, log2_hashmap_size=19, max_resolution=2048))
    """Hash grid of the density/colour NeRF (Instant-NGP defaults)."""
    feature_grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(max_resolution=64))
    """Hash grid of the feature branch: 17 levels x 4 features, 2^20 table, coarse (max resolution 64)."""
    hidden_dim: int = 64
    """Width of the density MLP's hidden layer."""
    geo_feat_dim: int = 15
    """Geometry feature passed from the density MLP to the colour MLP."""
    color_hidden_dim: int = 64
    """Width of the colour MLP's hidden layers (two layers)."""
    dir_frequencies: int = 4
    """Sin/cos frequencies of the view-direction encoding."""
    feature_hidden_dim: int = 128
    """Width of the feature MLP's hidden layer ("MLP to 128")."""
    feature_hidden_layers: int = 1
    """Number of hidden layers of the feature MLP (the paper and code: three, the ``paper`` preset's; one measured
    better at CPU iteration counts, docs/quality.md)."""
    feature_dim: int = 256
    """Output feature dimension ``D``."""
    learn_background: bool = False
    """False: the authors' code's constant background feature ``ones / sqrt(D)``; True learns it (measured no better
    in 3D, docs/quality.md)."""
    density_bias: float = -1.0
    """Added to the density MLP's output before the exponential (starts the field mostly empty)."""

    def __post_init__(self) -> None:
        if self.bound <= 0:
            raise ValueError("bound must be > 0")
        if self.feature_dim < 2:
            raise ValueError("feature_dim must be >= 2")


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` with the gradient's exponent clamped at 15 (Instant-NGP's density activation)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """Density activation: ``exp`` forward, gradient of ``exp(min(x, 15))``."""
    return _TruncExp.apply(x.float().clamp(max=30.0))


def frequency_encoding(d: Tensor, n_freq: int) -> Tensor:
    """``[d, sin(2^k pi d), cos(2^k pi d)]_{k < n_freq}``. Shape: [B, 3] -> [B, 3 + 6 n_freq]."""
    out = [d]
    for k in range(n_freq):
        out += [torch.sin((2.0 ** k) * torch.pi * d), torch.cos((2.0 ** k) * torch.pi * d)]
    return torch.cat(out, dim=-1)


def _mlp(n_in: int, hidden: int, n_layers: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


@dataclass
class FieldOutput:
    """Per-sample field values. Shapes: ``sigma`` [B]; ``rgb`` [B, 3]; ``features`` [B, D] (raw, not normalised)."""

    sigma: Tensor
    rgb: Tensor
    features: Tensor


class UltrametricField(nn.Module):
    """NeRF density + colour and the (geometry-detached) feature branch."""

    def __init__(self, cfg: UltrametricFieldConfig | None = None, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg = cfg or UltrametricFieldConfig()
        self.density_encoder = make_encoder(cfg.density_grid, device)
        self.density_net = _mlp(cfg.density_grid.output_dim, cfg.hidden_dim, 1, 1 + cfg.geo_feat_dim)
        dir_dim = 3 + 6 * cfg.dir_frequencies
        self.color_net = _mlp(cfg.geo_feat_dim + dir_dim, cfg.color_hidden_dim, 2, 3)
        self.feature_encoder = make_encoder(cfg.feature_grid, device)
        self.feature_net = _mlp(cfg.feature_grid.output_dim, cfg.feature_hidden_dim, cfg.feature_hidden_layers,
                                cfg.feature_dim)
        if cfg.learn_background:
            g = torch.Generator().manual_seed(0)
            bg = torch.randn(cfg.feature_dim, generator=g)
            self.background_feature = nn.Parameter(bg / bg.norm())
        else:
            self.register_buffer("background_feature", torch.ones(cfg.feature_dim) / cfg.feature_dim ** 0.5)
        self.to(device)

    def normalise_points(self, x: Tensor) -> Tensor:
        """World (normalised-scene) points to grid coordinates in ``[0, 1]^3``. Shape: [B, 3] -> [B, 3]."""
        return ((x.float() + self.cfg.bound) / (2 * self.cfg.bound)).clamp(0.0, 1.0)

    def density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density and geometry feature at points ``x``. Shape: [B, 3] -> ([B], [B, geo_feat_dim])."""
        h = self.density_net(self.density_encoder(self.normalise_points(x)))
        sigma = trunc_exp(h[:, 0] + self.cfg.density_bias)
        return sigma, h[:, 1:]

    def color(self, geo_feat: Tensor, dirs: Tensor) -> Tensor:
        """Colour from geometry features and unit view directions. Shape: [B, G], [B, 3] -> [B, 3] in [0, 1]."""
        d = frequency_encoding(dirs.float(), self.cfg.dir_frequencies)
        return torch.sigmoid(self.color_net(torch.cat([geo_feat.float(), d], dim=-1)).float())

    def raw_features(self, x: Tensor) -> Tensor:
        """Raw (unnormalised) features at DETACHED points ``x``. Shape: [B, 3] -> float32 [B, D]."""
        return self.feature_net(self.feature_encoder(self.normalise_points(x.detach()))).float()

    def unit_background(self) -> Tensor:
        """The background feature, L2-normalised. Shape: [D]."""
        return F.normalize(self.background_feature.float(), dim=0)

    def forward(self, x: Tensor, dirs: Tensor) -> FieldOutput:
        sigma, geo = self.density(x)
        return FieldOutput(sigma=sigma, rgb=self.color(geo, dirs), features=self.raw_features(x))


def scaled_config(cfg: UltrametricFieldConfig, log2_hashmap_size: int, feature_dim: int | None = None,
                  density_max_resolution: int | None = None) -> UltrametricFieldConfig:
    """A smaller variant of ``cfg`` (both tables at ``2^log2_hashmap_size``; used by the presets)."""
    dg = replace(cfg.density_grid, log2_hashmap_size=log2_hashmap_size,
                 max_resolution=density_max_resolution or cfg.density_grid.max_resolution)
    fg = replace(cfg.feature_grid, log2_hashmap_size=min(log2_hashmap_size, cfg.feature_grid.log2_hashmap_size))
    return replace(cfg, density_grid=dg, feature_grid=fg, feature_dim=feature_dim or cfg.feature_dim)
