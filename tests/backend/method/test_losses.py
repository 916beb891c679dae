"""Loss values on tiny analytic cases, level-wise matching, gradients, depth continuity, norm loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.method.losses import (
    ContrastiveLossConfig,
    contrastive_loss,
    depth_continuity_loss,
    feature_losses,
    hierarchical_contrastive_loss,
    norm_loss,
)
from backend.core.mask_tree import mask_tree
from backend.core.sampling import PairSet, sample_hierarchical_pairs


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_contrastive_loss_analytic():
    tau = 0.1
    d_pos = torch.tensor([0.0, 0.2, 0.5])
    d_neg = torch.tensor([1.0, 0.2, 0.3])
    want = np.mean([softplus((p - n) / tau) for p, n in zip(d_pos.tolist(), d_neg.tolist())])
    assert contrastive_loss(d_pos, d_neg, tau).item() == pytest.approx(want, rel=1e-6)
    assert contrastive_loss(torch.tensor([0.2]), torch.tensor([0.2]), tau).item() == pytest.approx(math.log(2))
    # 4 negatives per positive: 5-way cross-entropy
    d_neg4 = torch.tensor([[0.5, 0.6, 0.7, 0.8]], dtype=torch.float64)
    logits = -np.array([0.1, 0.5, 0.6, 0.7, 0.8]) / tau
    want4 = -logits[0] + math.log(np.exp(logits).sum())
    got4 = contrastive_loss(torch.tensor([0.1], dtype=torch.float64), d_neg4, tau).item()
    assert got4 == pytest.approx(want4, rel=1e-6)


def test_contrastive_loss_direction():
    # the loss must decrease as positives get closer and negatives farther
    d_pos = torch.tensor([0.4], requires_grad=True)
    d_neg = torch.tensor([0.5], requires_grad=True)
    contrastive_loss(d_pos, d_neg).backward()
    assert d_pos.grad.item() > 0 and d_neg.grad.item() < 0
    with pytest.raises(ValueError):
        contrastive_loss(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        contrastive_loss(torch.zeros(2), torch.zeros(2), 0.0)


def make_pairs(positive, level, node):
    n = len(positive)
    return PairSet(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), np.array(positive, bool),
                   np.array(level, np.int64), np.array(node, np.int64))


def test_hierarchical_loss_matches_within_levels_only():
    tau = 0.1
    # interleaved order: level 2 positive, level 1 negative, level 1 positive, level 2 negative
    # node ids deliberately cross levels (level 1: nodes 0 and 7; level 2: nodes 5 and 2), so only the level
    # decides the matching
    ps = make_pairs([True, False, True, False], [2, 1, 1, 2], [5, 7, 0, 2])
    d = torch.tensor([0.1, 0.9, 0.3, 0.4])
    want = (softplus((0.1 - 0.4) / tau) + softplus((0.3 - 0.9) / tau)) / 2
    assert hierarchical_contrastive_loss(d, ps, tau).item() == pytest.approx(want, rel=1e-6)
    # mixing levels (positive 0.1 with negative 0.9, 0.3 with 0.4) would give a different value
    mixed = (softplus((0.1 - 0.9) / tau) + softplus((0.3 - 0.4) / tau)) / 2
    assert abs(want - mixed) > 0.1


def test_level_weighting_gives_each_level_one_vote():
    tau = 0.1
    # level 1: one positive/negative pair; level 2: two pairs
    ps = make_pairs([True, False, True, True, False, False], [1, 1, 2, 2, 2, 2], [0, 0, 1, 2, 1, 2])
    d = torch.tensor([0.2, 0.6, 0.1, 0.3, 0.5, 0.2])
    l1 = softplus((0.2 - 0.6) / tau)
    l2 = [softplus((0.1 - 0.5) / tau), softplus((0.3 - 0.2) / tau)]
    by_pairs = hierarchical_contrastive_loss(d, ps, tau).item()
    by_levels = hierarchical_contrastive_loss(d, ps, tau, level_weighting="levels").item()
    assert by_pairs == pytest.approx((l1 + sum(l2)) / 3, rel=1e-6)
    assert by_levels == pytest.approx((l1 + sum(l2) / 2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="level_weighting"):
        hierarchical_contrastive_loss(d, ps, tau, level_weighting="nodes")


def test_hierarchical_loss_ratio_and_skips():
    tau = 0.1
    # level 1: one positive, two negatives (2:1); level 3: only negatives -> skipped
    ps = make_pairs([True, False, False, False], [1, 1, 1, 3], [0, 0, 0, 2])
    d = torch.tensor([0.2, 0.5, 0.7, 0.0], dtype=torch.float64)
    logits = -np.array([0.2, 0.5, 0.7]) / tau
    want = -logits[0] + math.log(np.exp(logits).sum())
    assert hierarchical_contrastive_loss(d, ps, tau).item() == pytest.approx(want, rel=1e-6)
    bad = make_pairs([True, True, False, False, False], [1] * 5, [0] * 5)
    with pytest.raises(ValueError, match="evenly"):
        hierarchical_contrastive_loss(torch.zeros(5), bad, tau)
    none = make_pairs([False, False], [1, 2], [0, 1])
    d0 = torch.zeros(2, requires_grad=True)
    z = hierarchical_contrastive_loss(d0, none, tau)
    assert z.item() == 0.0 and z.requires_grad
    with pytest.raises(ValueError, match="one per pair"):
        hierarchical_contrastive_loss(torch.zeros(3), none, tau)


def synthetic_image(seed: int = 0, h: int = 24, w: int = 24, p: int = 300):
    """Two nested boxes plus a separate box on an image; P sampled pixels with their masks."""
    rng = np.random.default_rng(seed)
    full = np.zeros((3, h, w), bool)
    full[0, 2:20, 2:14] = True
    full[1, 4:12, 4:12] = True
    full[2, 4:20, 16:22] = True
    pix = rng.choice(h * w, size=p, replace=False)
    uv = np.stack([pix % w + 0.5, pix // w + 0.5], 1) + rng.uniform(-0.01, 0.01, (p, 2))
    masks = full.reshape(3, -1)[:, pix]
    return rng, uv, masks


@pytest.mark.parametrize("boundary_prior", [False, True])
def test_feature_losses_keys_gradients_and_training_signal(boundary_prior):
    rng, uv, masks = synthetic_image()
    tree = mask_tree(masks)
    pairs = sample_hierarchical_pairs(tree, rng, n_pos=32, n_neg=32)
    cfg = ContrastiveLossConfig(boundary_prior=boundary_prior)
    raw = torch.tensor(rng.normal(size=(len(uv), 16)), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.05)
    first = None
    for _ in range(30):  # real optimisation steps: the loss must go down
        feats = torch.nn.functional.normalize(raw, dim=1)
        losses = feature_losses(feats, uv, pairs, cfg, masks)
        assert set(losses) == {"ultrametric", "euclidean"}
        total = sum(losses.values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        assert torch.isfinite(raw.grad).all()
        opt.step()
    assert total.item() < 0.8 * first


def test_feature_losses_config_switches():
    rng, uv, masks = synthetic_image(1)
    pairs = sample_hierarchical_pairs(mask_tree(masks), rng, n_pos=8, n_neg=8)
    feats = torch.nn.functional.normalize(torch.randn(len(uv), 8), dim=1)
    only_u = feature_losses(feats, uv, pairs, ContrastiveLossConfig(use_euclidean=False), masks)
    only_e = feature_losses(feats, uv, pairs, ContrastiveLossConfig(use_ultrametric=False), masks)
    doubled = feature_losses(feats, uv, pairs, ContrastiveLossConfig(use_ultrametric=False, alpha=2.0), masks)
    assert set(only_u) == {"ultrametric"} and set(only_e) == {"euclidean"}
    assert doubled["euclidean"].item() == pytest.approx(2 * only_e["euclidean"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="masks"):
        feature_losses(feats, uv, pairs, ContrastiveLossConfig(boundary_prior=True), None)


def test_hierarchical_embedding_beats_random_features():
    # features built from mask membership (one weighted indicator per tree node, root included) encode the
    # hierarchy: both terms must be far lower than for random features
    rng, uv, masks = synthetic_image(2)
    tree = mask_tree(masks)
    pairs = sample_hierarchical_pairs(tree, rng, n_pos=16, n_neg=16)
    emb = torch.tensor(tree.masks.T, dtype=torch.float64)
    perfect = torch.nn.functional.normalize(emb, dim=1)
    random = torch.nn.functional.normalize(torch.randn(len(uv), 4, dtype=torch.float64), dim=1)
    cfg = ContrastiveLossConfig(boundary_prior=True)
    good = feature_losses(perfect, uv, pairs, cfg, masks)
    bad = feature_losses(random, uv, pairs, cfg, masks)
    for key in ("ultrametric", "euclidean"):
        assert good[key].item() < 0.5 * bad[key].item()


def test_depth_continuity_analytic():
    # linear and quadratic profiles: zero third difference
    poly = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.1, 1.4, 1.9]], dtype=torch.float64)
    assert depth_continuity_loss(poly, dtheta=0.01, threshold=0.0).item() == pytest.approx(0.0, abs=1e-6)
    d = torch.tensor([[1.0, 1.0, 1.0, 2.0]])  # 3rd difference -1, max 2
    dtheta, t, eps = 0.5, 0.1, 1e-2
    want = 1.0 / ((2.0 + eps) * dtheta) ** 3 - t
    assert depth_continuity_loss(d, dtheta, t, eps).item() == pytest.approx(want, rel=1e-6)
    # below threshold -> 0; sign of the difference does not matter
    assert depth_continuity_loss(d, 1.0, threshold=10.0).item() == 0.0
    assert depth_continuity_loss(d.flip(1), dtheta, t, eps).item() == pytest.approx(want, rel=1e-6)
    # released code form: dtheta = 1, t = 0.1
    released = max(1.0 / (2.0 + 1e-2) ** 3 - 0.1, 0.0)
    assert depth_continuity_loss(d, 1.0).item() == pytest.approx(released, rel=1e-6)


def test_depth_continuity_gradient_and_errors():
    d = torch.tensor([[1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    depth_continuity_loss(d, 0.5).backward()
    g = d.grad
    assert g[1].abs().sum() == 0  # flat stencil: no gradient
    # d/d(d3) of |d0 - 3d1 + 3d2 - d3| / c with a detached max: the gradient pattern is (1, -3, 3, -1) * sign
    ratio = (g[0] / g[0, 0]).tolist()
    assert ratio == pytest.approx([1.0, -3.0, 3.0, -1.0])
    assert depth_continuity_loss(torch.zeros(0, 4), 0.1).item() == 0.0
    with pytest.raises(ValueError):
        depth_continuity_loss(torch.zeros(3, 3), 0.1)
    with pytest.raises(ValueError, match="dtheta"):
        depth_continuity_loss(torch.zeros(3, 4), 0.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=2, max_size=2).filter(lambda v: abs(v[0]) + abs(v[1]) > 1e-3))
def test_norm_loss(vec):
    f = torch.tensor([vec], dtype=torch.float64)
    want = (math.hypot(*vec) - 1.0) ** 2
    assert norm_loss(f).item() == pytest.approx(want, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Issue #24: the cheaper loss math computes what the former formula computed (values and gradients)
# ----------------------------------------------------------------------------------------------------------------
def _reference_hierarchical(distances, groups, tau, weighting):
    """The former per-level loop of hierarchical_contrastive_loss (Eq. 3 within each level)."""
    terms = []
    for pos, neg in groups:
        logits = -torch.cat([distances[torch.as_tensor(pos)][:, None],
                             distances[torch.as_tensor(neg)].reshape(len(pos), -1)], 1) / tau
        terms.append(torch.logsumexp(logits, dim=1) - logits[:, 0])
    if weighting == "levels":
        return torch.stack([t.mean() for t in terms]).mean()
    return torch.cat(terms).mean()


def _reference_feature_losses(features, uv, pairs, cfg, masks):
    """The former feature_losses: each term normalises the rows itself, the contrastive loss loops over levels."""
    from backend.core.graphs import knn_pixel_graph, mask_boundary_prior
    from backend.method.losses import level_groups
    from backend.method.ultrametric import edge_lengths, ultrametric_distance

    groups = level_groups(pairs)
    src, dst = knn_pixel_graph(uv, k=cfg.knn)
    prior = mask_boundary_prior(src, dst, masks) if cfg.boundary_prior else None
    du = ultrametric_distance(features, src, dst, pairs.pairs, metric=cfg.metric, boundary_prior=prior)
    de = edge_lengths(features, pairs.first, pairs.second, metric=cfg.metric)
    return {"ultrametric": _reference_hierarchical(du, groups, cfg.temperature, cfg.level_weighting),
            "euclidean": cfg.alpha * _reference_hierarchical(de, groups, cfg.temperature, cfg.level_weighting)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric,weighting", [("cosine", "pairs"), ("cosine", "levels"), ("euclidean", "pairs")])
def test_feature_losses_equal_the_former_formula_with_gradients(seed, metric, weighting):
    rng, uv, masks = synthetic_image(seed)
    pairs = sample_hierarchical_pairs(mask_tree(masks), rng, n_pos=16, n_neg=16)
    cfg = ContrastiveLossConfig(metric=metric, level_weighting=weighting, boundary_prior=seed != 1)
    raw = rng.normal(size=(len(uv), 12))
    grads = []
    values = []
    for fn in (feature_losses, _reference_feature_losses):
        x = torch.tensor(raw, dtype=torch.float32, requires_grad=True)
        feats = torch.nn.functional.normalize(x, dim=1) if seed != 2 else x * 0.7  # unit rows, and not unit
        out = fn(feats, uv, pairs, cfg, masks)
        sum(out.values()).backward()
        values.append({k: v.item() for k, v in out.items()})
        grads.append(x.grad.clone())
    assert set(values[0]) == set(values[1]) == {"ultrametric", "euclidean"}
    for k in values[1]:  # the same forward values (the shared normalisation is the same op on the same rows)
        assert values[0][k] == pytest.approx(values[1][k], rel=1e-6, abs=1e-7), k
    assert grads[1].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_hierarchical_loss_one_gather_equals_level_loop_bitwise():
    # n_pos = n_neg: one ratio for every level -> the one-gather path; 2:1 on one level -> the per-level fallback
    rng = np.random.default_rng(5)
    level = np.repeat([1, 1, 2, 2, 3, 3], 10)
    positive = np.tile(np.repeat([True, False], 10), 3)
    node = np.repeat([0, 0, 1, 1, 2, 2], 10)
    pairs = make_pairs(positive.tolist(), level.tolist(), node.tolist())
    d = torch.tensor(rng.uniform(0, 2, len(pairs)), dtype=torch.float32, requires_grad=True)
    from backend.method.losses import level_groups

    groups = level_groups(pairs)
    for weighting in ("pairs", "levels"):
        got = hierarchical_contrastive_loss(d, pairs, 0.1, weighting)
        ref = _reference_hierarchical(d, groups, 0.1, weighting)
        assert got.item() == ref.item()  # bitwise: the same rows in the same order
        g1, = torch.autograd.grad(got, d)
        g2, = torch.autograd.grad(ref, d)
        torch.testing.assert_close(g1, g2, rtol=0, atol=0)
    mixed = pairs.subset(np.flatnonzero(~((level == 3) & positive & (np.arange(len(level)) % 10 >= 5))))
    mgroups = level_groups(mixed)
    assert {len(n) // len(p) for p, n in mgroups} == {1, 2}
    dm = d.detach()[: len(mixed)]
    assert hierarchical_contrastive_loss(dm, mixed, 0.1).item() == pytest.approx(
        _reference_hierarchical(dm, mgroups, 0.1, "pairs").item(), rel=1e-7)
