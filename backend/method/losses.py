"""Losses of the ultrametric feature field: contrastive (Eq. 3-4), depth continuity (Eq. 5), feature norm.

Free functions on tensors; the trainer only calls them and weights the results.

Sign convention of Eq. 3. As printed, Eq. 3 simplifies to ``(d_n - d_p) / tau`` (linear, and minimised by
*growing* positive distances), an evident typo. We implement the stated intent ("binary cross entropy on
distances between positive and negative pairs", following SimCLR) and the released code: a cross-entropy whose
logits are the *negated* distances,

    l(s_p, s_n) = -log( e^{-d_p/tau} / (e^{-d_p/tau} + e^{-d_n/tau}) ) = softplus((d_p - d_n) / tau),

which pulls positives together and pushes negatives apart. With ``r`` negatives per positive (the 4:1 variant) it
is the ``(1 + r)``-way cross-entropy with the positive as the target class.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from backend.core.sampling import PairSet
from backend.core.graphs import knn_pixel_graph, mask_boundary_prior
from backend.method.ultrametric import edge_lengths, ultrametric_distance


@dataclass(frozen=True)
class ContrastiveLossConfig:
    """Feature-field contrastive loss (Eq. 3-4) settings; defaults are the paper's."""

    temperature: float = 0.1
    """``tau`` of Eq. 3 (paper and code: 0.1)."""
    alpha: float = 1.0
    """Weight of the Euclidean (direct-distance) term in Eq. 4 (paper: 1)."""
    knn: int = 10
    """Neighbours per sampled pixel in the image-space graph of the ultrametric term (paper: 10)."""
    metric: str = "cosine"
    """Feature distance of edges and pairs: ``"cosine"`` (``1 - cos``, the released code) or ``"euclidean"``."""
    use_ultrametric: bool = True
    """Include the ultrametric term (ablation "without ultrametric training": False)."""
    use_euclidean: bool = True
    """Include the Euclidean (direct feature distance) term of Eq. 4."""
    boundary_prior: bool = True
    """Add +10 to graph edges crossing a mask boundary when building the tree (the released code, not in the paper's
    text; needs masks). Measured (docs/quality.md): 3D NC_mean +1.2 / -0.5, 2D +9 / -3 on the bundled scenes."""
    level_weighting: str = "pairs"
    """How levels are combined: ``"pairs"`` (mean over all pairs, so levels with many masks weigh more) or
    ``"levels"`` (mean of each level's mean: coarse levels, with few masks, weigh as much as fine ones)."""


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def contrastive_loss(d_pos: Tensor, d_neg: Tensor, temperature: float = 0.1) -> Tensor:
    """Eq. 3 (see the module docstring for the sign), averaged over positives.

    ``d_neg`` is ``[Q]`` (one negative per positive) or ``[Q, r]`` (``r`` negatives per positive; the
    ``(1 + r)``-way cross-entropy). An empty batch gives a zero that still has a graph.

    Shape: ``d_pos`` [Q], ``d_neg`` [Q] or [Q, r] -> scalar.

    >>> round(contrastive_loss(torch.tensor([0.3]), torch.tensor([0.3])).item(), 6)  # log 2
    0.693147
    """
    _check_temperature(temperature)
    if d_pos.ndim != 1 or d_neg.ndim not in (1, 2) or d_neg.shape[0] != d_pos.shape[0]:
        raise ValueError(f"expected d_pos [Q] and d_neg [Q] or [Q, r], got {tuple(d_pos.shape)}, "
                         f"{tuple(d_neg.shape)}")
    if d_pos.numel() == 0:
        return d_pos.sum() + d_neg.sum()
    logits = -torch.cat([d_pos[:, None], d_neg.reshape(len(d_pos), -1)], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def level_groups(pairs: PairSet) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level: indices of its positives and negatives, each sorted by (node, original order) (host work; the
    trainer computes it in the step producer and passes it to :func:`feature_losses`)."""
    groups = []
    for lev in np.unique(pairs.level):  # loop over hierarchy depth only
        at = pairs.level == lev
        pos = np.flatnonzero(at & pairs.positive)
        neg = np.flatnonzero(at & ~pairs.positive)
        if len(pos) == 0 or len(neg) == 0:
            continue
        pos = pos[np.argsort(pairs.node[pos], kind="stable")]
        neg = neg[np.argsort(pairs.node[neg], kind="stable")]
        if len(neg) % len(pos):
            raise ValueError(f"level {lev}: {len(neg)} negatives cannot be split evenly among {len(pos)} positives")
        groups.append((pos, neg))
    return groups


_level_groups = level_groups  # the former private name


def hierarchical_contrastive_loss(distances: Tensor, pairs: PairSet, temperature: float = 0.1,
                                  level_weighting: str = "pairs",
                                  groups: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Tensor:
    """Eq. 3 computed within each level of the hierarchy (Sec. 4.1): positives never meet other levels' negatives.

    Within a level, positives and negatives are each ordered by node (stable), and positive ``i`` is matched
    with negatives ``r*i .. r*i + r - 1`` where ``r = #neg / #pos`` of that level must be an integer; with the
    output of :func:`backend.core.sampling.sample_hierarchical_pairs` this pairs positives and negatives of the same
    mask. Levels without positives or without negatives are skipped. The result is the mean over all matched
    positives (all levels) with ``level_weighting="pairs"``, or the mean of the per-level means with ``"levels"``.

    ``groups``: :func:`level_groups` of ``pairs`` when already computed.

    Shape: ``distances`` [Q] (one per pair of ``pairs``) -> scalar.
    """
    _check_temperature(temperature)
    if level_weighting not in ("pairs", "levels"):
        raise ValueError(f"level_weighting must be 'pairs' or 'levels', got {level_weighting!r}")
    if distances.shape != (len(pairs),):
        raise ValueError(f"distances must be [{len(pairs)}] (one per pair), got {tuple(distances.shape)}")
    groups = level_groups(pairs) if groups is None else groups
    if not groups:
        return distances.sum() * 0.0
    ratios = {len(neg) // len(pos) for pos, neg in groups}
    if level_weighting == "pairs" and len(ratios) == 1:
        # One ratio r for every level (always with n_pos = n_neg): all levels in one gather, in level order, so
        # the rows and their mean are those of the per-level loop below (issue #24: ~16 ops instead of ~16 per
        # level)
        r = ratios.pop()
        pos = np.concatenate([p for p, _ in groups])
        neg = np.concatenate([n for _, n in groups])
        return _matched_terms(distances, pos, neg, r, temperature).mean()
    terms = [_matched_terms(distances, pos, neg, len(neg) // len(pos), temperature) for pos, neg in groups]
    if level_weighting == "levels":
        return torch.stack([t.mean() for t in terms]).mean()
    return torch.cat(terms).mean()


def _matched_terms(distances: Tensor, pos: np.ndarray, neg: np.ndarray, r: int, temperature: float) -> Tensor:
    """Eq. 3 for positives ``pos`` [Q] each matched with ``r`` consecutive negatives of ``neg`` [Q r]. -> [Q]."""
    pos_t = torch.as_tensor(pos, device=distances.device)
    neg_t = torch.as_tensor(neg, device=distances.device)
    logits = -torch.cat([distances[pos_t][:, None], distances[neg_t].reshape(len(pos), r)], 1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def pair_distances(features: Tensor, pairs: PairSet, metric: str = "cosine", assume_normalized: bool = False) -> Tensor:
    """Direct (non-ultrametric) feature distance of each pair, the "Euclidean" term's distance.

    Shape: ``features`` [P, D] -> [Q].
    """
    return edge_lengths(features, pairs.first, pairs.second, metric=metric, assume_normalized=assume_normalized)


def feature_losses(features: Tensor, uv: np.ndarray, pairs: PairSet,
                   cfg: ContrastiveLossConfig = ContrastiveLossConfig(), masks: np.ndarray | None = None,
                   graph: tuple[np.ndarray, np.ndarray] | None = None, prior: np.ndarray | None = None,
                   groups: list[tuple[np.ndarray, np.ndarray]] | None = None,
                   mark: Callable[[str], None] | None = None) -> dict[str, Tensor]:
    """Eq. 4 for one image: ``L_feat = l_ultra + alpha * l_euclid``, each term level-wise (Eq. 3).

    The ultrametric term builds the kNN pixel graph of ``uv`` (``cfg.knn``), ONE tree for all pairs, and the
    minimax distances (Eq. 1-2, :func:`backend.method.ultrametric.ultrametric_distance`); the Euclidean term uses the
    direct pair distances. The ``"euclidean"`` entry is already multiplied by ``cfg.alpha``, so
    ``sum(result.values())`` is ``L_feat``.

    Shape: ``features`` [P, D] (unit rows, as rendered), ``uv`` float [P, 2] pixel positions, ``masks`` bool
    [M, P] (needed only for ``cfg.boundary_prior``) -> dict with keys ``"ultrametric"`` and/or ``"euclidean"``.

    Host work computed ahead (the trainer's step producer, issue #16) can be passed: ``graph`` (the kNN pixel
    graph of ``uv``), ``prior`` (its boundary prior) and ``groups`` (:func:`level_groups` of ``pairs``); the
    result is the same as without them. ``mark(name)``, when given, is called after each term (``loss:
    ultrametric``, ``loss: euclidean``; the trainer's per-stage profile).

    With the cosine metric the rows are normalised ONCE for both terms (issue #24; each term normalised them
    again before): the same values, gradients equal up to float rounding.
    """
    if features.ndim != 2 or len(uv) != features.shape[0]:
        raise ValueError(f"features [P, D] and uv [P, 2] must agree, got {tuple(features.shape)} and "
                         f"{np.shape(uv)}")
    out: dict[str, Tensor] = {}
    if groups is None:
        groups = level_groups(pairs)
    unit = cfg.metric == "cosine"
    if unit:  # edge_lengths' own normalisation, done once here
        features = torch.nn.functional.normalize(features, dim=-1, eps=1e-8)
    if cfg.use_ultrametric:
        src, dst = knn_pixel_graph(uv, k=cfg.knn) if graph is None else graph
        if not cfg.boundary_prior:
            prior = None
        elif prior is None:
            if masks is None:
                raise ValueError("cfg.boundary_prior needs the masks [M, P] of the sampled pixels")
            prior = mask_boundary_prior(src, dst, masks)
        d = ultrametric_distance(features, src, dst, pairs.pairs, metric=cfg.metric, boundary_prior=prior,
                                 assume_normalized=unit)
        out["ultrametric"] = hierarchical_contrastive_loss(d, pairs, cfg.temperature, cfg.level_weighting, groups)
        if mark is not None:
            mark("loss: ultrametric")
    if cfg.use_euclidean:
        d = pair_distances(features, pairs, cfg.metric, assume_normalized=unit)
        out["euclidean"] = cfg.alpha * hierarchical_contrastive_loss(d, pairs, cfg.temperature, cfg.level_weighting,
                                                                     groups)
        if mark is not None:
            mark("loss: euclidean")
    return out


@dataclass
class LossTerms:
    """The loss terms of one training step (unweighted; None = not computed this step). The trainer weights
    them with :class:`backend.method.config.TrainConfig` fields (:meth:`weighted_total`)."""

    ultrametric: Tensor | None = None
    """Eq. 3 on ultrametric distances (Eq. 1-2)."""
    euclidean: Tensor | None = None
    """Eq. 3 on direct distances, already times ``alpha`` (Eq. 4)."""
    norm: Tensor | None = None
    """``(||f|| - 1)^2`` on raw features (released code)."""
    rgb: Tensor | None = None
    """Colour MSE (``nerf`` geometry)."""
    depth: Tensor | None = None
    """L1 depth supervision (``nerf`` geometry with given depth)."""
    depth_continuity: Tensor | None = None
    """Eq. 5 (``nerf`` geometry)."""

    def items(self) -> list[tuple[str, Tensor]]:
        """``(name, value)`` of the computed terms."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def weighted_total(self, weights: dict[str, float]) -> Tensor | float:
        """``sum(weights[name] * term)`` over the computed terms (0.0 when none was computed)."""
        return sum((weights[name] * value.float() for name, value in self.items()), 0.0)


@dataclass(frozen=True)
class DepthContinuityConfig:
    """Depth continuity loss (Eq. 5) settings."""

    per_mask: int = 16
    """Stencils sampled per finest-level mask (paper: 16 patches per mask)."""
    length: int = 4
    """Pixels per stencil (4: the third finite difference)."""
    start_step: int = 5000
    """Iteration from which the loss is used (supplementary A.1: 5,000; main text: halfway)."""
    threshold: float = 0.1
    """``t`` of Eq. 5; the paper gives no value, 0.1 is the released code's (used there with ``dtheta = 1``)."""
    eps: float = 1e-2
    """Added to the maximum depth before cubing (released code), guards background depth 0."""


def depth_continuity_loss(depth: Tensor, dtheta: float, threshold: float = 0.1, eps: float = 1e-2) -> Tensor:
    """Eq. 5: hinge on the normalised third finite difference of depth along 4-pixel stencils, averaged.

    ``l = max( |d0 - 3 d1 + 3 d2 - d3| / ((max(d0..d3) + eps) * dtheta)^3 - t, 0 )``. The absolute value is
    needed (the printed equation would reward negative differences; the released code takes it), the
    denominator is detached (as released) so the loss cannot shrink by pushing depth away, and ``eps`` guards
    background pixels of depth 0. ``dtheta`` is the angle between adjacent rays; ``dtheta = 1``,
    ``threshold = 0.1`` reproduces the released code exactly. Linear and quadratic depth profiles give 0.

    Shape: ``depth`` [S, 4] -> scalar (0 with a graph for ``S = 0``).

    >>> depth_continuity_loss(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), dtheta=1.0).item()
    0.0
    """
    if depth.ndim != 2 or depth.shape[1] != 4:
        raise ValueError(f"depth must be [S, 4], got {tuple(depth.shape)}")
    if not dtheta > 0:
        raise ValueError(f"dtheta must be > 0, got {dtheta}")
    if depth.shape[0] == 0:
        return depth.sum() * 0.0
    third = depth[:, 0] - 3.0 * depth[:, 1] + 3.0 * depth[:, 2] - depth[:, 3]
    scale = ((depth.detach().amax(dim=1) + eps) * dtheta) ** 3
    return torch.clamp(third.abs() / scale - threshold, min=0.0).mean()


def norm_loss(raw_features: Tensor) -> Tensor:
    """Feature-norm regulariser of the released code: mean of ``(||f|| - 1)^2`` over the raw (unnormalised) rows.

    Shape: ``raw_features`` [P, D] -> scalar.

    >>> norm_loss(torch.tensor([[3.0, 4.0], [0.6, 0.8]])).item()
    8.0
    """
    if raw_features.ndim != 2:
        raise ValueError(f"raw_features must be [P, D], got {tuple(raw_features.shape)}")
    return ((raw_features.norm(dim=-1) - 1.0) ** 2).mean()
