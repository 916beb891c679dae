"""Volume rendering of the ultrametric field along rays (NeRF quadrature, the paper, Sec. 4.1 and 5.4).

For samples ``t_1 < ... < t_N`` on a ray with spacing ``delta_k``::

    alpha_k = 1 - exp(-sigma_k delta_k),   T_k = prod_{j<k} (1 - alpha_j),   w_k = T_k alpha_k
    C(r) = sum_k w_k c_k + (1 - O) c_bg,   O = sum_k w_k,   depth = sum_k w_k t_k / O

Features are composited with weights from DETACHED densities, plus the learned background feature weighted by
``1 - O``, then L2-normalised (released code). Samples outside the scene box, or in empty occupancy-grid cells,
are never evaluated (density 0); colours and features are evaluated only at those samples whose transmittance
``T_k`` exceeds ``transmittance_eps`` (early ray termination behind opaque surfaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.method.field.model import UltrametricField
from backend.method.field.occupancy import OccupancyGrid


@dataclass
class RenderOutput:
    """Rendered values per ray. Shapes: ``rgb`` [R, 3] or None; ``depth``, ``opacity`` [R]; ``features``
    [R, D] unit rows or None; ``raw_features`` [S, D] raw features of the S evaluated samples (norm loss) or None;
    ``weights`` [R, N]; ``t`` [R, N]. ``depth`` is the distance along the ray, or planar when ``planar_scale``
    was given; rays that hit nothing have depth 0."""

    rgb: Tensor | None
    depth: Tensor
    opacity: Tensor
    features: Tensor | None
    raw_features: Tensor | None
    weights: Tensor
    t: Tensor


def ray_aabb(origins: Tensor, dirs: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances of rays through the box ``[-bound, bound]^3`` (slab method).

    Shape: ``origins``, ``dirs`` [R, 3] -> ``near``, ``far`` [R], ``hit`` bool [R] (``far > near``, ``far > 0``).
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0 = (-bound - origins) * inv
    t1 = (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near


def sample_along_rays(near: Tensor, far: Tensor, num_samples: int, perturb: bool = False,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Stratified samples in ``[near, far]``: bin midpoints, or a uniform point per bin when ``perturb``.

    Shape: ``near``, ``far`` [R] -> ``t`` [R, N], ``delta`` [R, N] (the bin width).
    """
    r = near.shape[0]
    width = ((far - near).clamp_min(0.0) / num_samples)[:, None]
    k = torch.arange(num_samples, device=near.device, dtype=near.dtype)[None, :]
    if perturb:
        dev = generator.device if generator is not None else near.device  # a device generator: no copy
        u = torch.rand((r, num_samples), generator=generator, device=dev).to(near.device, near.dtype)
    else:
        u = torch.full((r, num_samples), 0.5, device=near.device, dtype=near.dtype)
    return near[:, None] + (k + u) * width, width.expand(r, num_samples)


def transmittance(sigma: Tensor, delta: Tensor) -> Tensor:
    """``T_k = exp(-sum_{j<k} sigma_j delta_j)``. Shape: [R, N], [R, N] -> [R, N]."""
    sd = sigma * delta
    return torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(sd[:, :1]), sd[:, :-1]], dim=1), dim=1))


def compositing_weights(sigma: Tensor, delta: Tensor) -> Tensor:
    """NeRF weights ``w_k = T_k (1 - exp(-sigma_k delta_k))``. Shape: [R, N], [R, N] -> [R, N]."""
    return transmittance(sigma, delta) * (1.0 - torch.exp(-sigma * delta))


def render_rays(field: UltrametricField, origins: Tensor, dirs: Tensor, num_samples: int = 64,
                occupancy: OccupancyGrid | None = None, perturb: bool = False,
                generator: torch.Generator | None = None, background_rgb: Tensor | None = None,
                with_rgb: bool = True, with_features: bool = True, planar_scale: Tensor | None = None,
                transmittance_eps: float = 1e-4) -> RenderOutput:
    """Render colour, depth, opacity and (unit) features of rays ``origins + t * dirs`` (``dirs`` unit length).

    ``background_rgb`` [3] fills ``1 - opacity`` (black when None); ``planar_scale`` [R] multiplies the ray
    distance into planar depth (``cos`` of the angle to the camera axis).
    """
    if origins.shape != dirs.shape or origins.ndim != 2 or origins.shape[1] != 3:
        raise ValueError(f"origins and dirs must both be [R, 3], got {tuple(origins.shape)} {tuple(dirs.shape)}")
    r = origins.shape[0]
    dev = origins.device
    near, far, hit = ray_aabb(origins, dirs, field.cfg.bound)
    t, delta = sample_along_rays(near, torch.where(hit, far, near), num_samples, perturb, generator)
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]  # [R, N, 3]
    active = hit[:, None].expand(r, num_samples)
    if occupancy is not None:
        active = active & occupancy.query(pts)
    flat_pts = pts.reshape(-1, 3)
    act_idx = active.reshape(-1).nonzero(as_tuple=True)[0]
    sigma = torch.zeros(r * num_samples, device=dev, dtype=torch.float32)
    geo = None
    if len(act_idx):
        s, geo = field.density(flat_pts[act_idx])
        sigma = sigma.index_put((act_idx,), s.float())
    sigma = sigma.reshape(r, num_samples)
    trans = transmittance(sigma, delta)
    weights = trans * (1.0 - torch.exp(-sigma * delta))
    # samples worth a colour/feature evaluation: evaluated density, not hidden behind opaque matter
    visible = active.reshape(-1) & (trans.detach().reshape(-1) > transmittance_eps)
    opacity = weights.sum(-1)
    depth = (weights * t).sum(-1) / opacity.clamp_min(1e-10)
    depth = torch.where(opacity > 1e-10, depth, torch.zeros_like(depth))
    if planar_scale is not None:
        depth = depth * planar_scale

    rgb = None
    if with_rgb:
        col = torch.zeros(r * num_samples, 3, device=dev, dtype=torch.float32)
        if geo is not None:
            keep = visible[act_idx]
            idx = act_idx[keep]
            if len(idx):
                ray_dirs = dirs[:, None, :].expand(r, num_samples, 3).reshape(-1, 3)
                col = col.index_put((idx,), field.color(geo[keep], ray_dirs[idx]).float())
        rgb = (weights[..., None] * col.reshape(r, num_samples, 3)).sum(1)
        bg = background_rgb if background_rgb is not None else torch.zeros(3, device=dev)
        rgb = rgb + (1.0 - opacity)[:, None] * bg.to(dev, rgb.dtype)

    features = raw = None
    if with_features:
        w_d = weights.detach().reshape(-1)
        idx = visible.nonzero(as_tuple=True)[0]
        acc = torch.zeros(r, field.cfg.feature_dim, device=dev, dtype=torch.float32)
        if len(idx):
            raw = field.raw_features(flat_pts[idx])
            acc = acc.index_add(0, idx // num_samples, raw * w_d[idx, None])
        else:
            raw = torch.zeros(0, field.cfg.feature_dim, device=dev)
        op_d = opacity.detach()
        acc = acc + (1.0 - op_d).clamp_min(0.0)[:, None] * field.background_feature.float()[None, :]
        features = F.normalize(acc, dim=-1)
    return RenderOutput(rgb=rgb, depth=depth, opacity=opacity, features=features, raw_features=raw,
                        weights=weights, t=t)


@torch.no_grad()
def render_rays_chunked(field: UltrametricField, origins: Tensor, dirs: Tensor, chunk: int = 4096,
                        planar_scale: Tensor | None = None, **kwargs) -> RenderOutput:
    """:func:`render_rays` without gradients, ``chunk`` rays at a time (bounded memory); ``weights``/``t`` and
    ``raw_features`` are dropped (empty) to save memory."""
    parts = []
    for i in range(0, origins.shape[0], chunk):
        ps = None if planar_scale is None else planar_scale[i:i + chunk]
        o = render_rays(field, origins[i:i + chunk], dirs[i:i + chunk], planar_scale=ps, **kwargs)
        parts.append(o)
    empty = torch.zeros(0, device=origins.device)

    def cat(name: str) -> Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if not vals or vals[0] is None else torch.cat(vals, 0)

    return RenderOutput(rgb=cat("rgb"), depth=cat("depth"), opacity=cat("opacity"), features=cat("features"),
                        raw_features=None, weights=empty, t=empty)
