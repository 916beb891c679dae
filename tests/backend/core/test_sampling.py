"""Hierarchical pair sampling (Algorithm 1) and depth stencils."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core.mask_tree import leaf_label_map, mask_tree
from backend.core.sampling import PairSet, draw_members, sample_depth_stencils, sample_hierarchical_pairs


def random_box_masks(rng: np.random.Generator, h: int, w: int, m: int) -> np.ndarray:
    masks = np.zeros((m, h, w), bool)
    for i in range(m):
        r0, c0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        masks[i, r0:rng.integers(r0 + 2, h + 1), c0:rng.integers(c0 + 2, w + 1)] = True
    return masks.reshape(m, -1)


def check_pairs(tree, ps: PairSet, n_pos: int, n_neg: int) -> None:
    inside = tree.masks[ps.node]
    rows = np.arange(len(ps))
    # every first pixel lies in the pair's node
    assert inside[rows, ps.first].all()
    pos, neg = ps.positive, ~ps.positive
    # positives: both pixels in the node's mask
    assert inside[rows[pos], ps.second[pos]].all()
    # negatives: second pixel in parent \ node
    par = tree.masks[tree.parent[ps.node]]
    assert par[rows[neg], ps.second[neg]].all()
    assert not inside[rows[neg], ps.second[neg]].any()
    # level = depth of the node; the root is never sampled
    np.testing.assert_array_equal(ps.level, tree.depth[ps.node])
    assert (ps.node != tree.root).all() and (ps.level >= 1).all()
    nodes = np.arange(tree.root)
    np.testing.assert_array_equal(np.bincount(ps.node[pos], minlength=tree.root), np.full(tree.root, n_pos))
    np.testing.assert_array_equal(np.bincount(ps.node[neg], minlength=tree.root), np.full(tree.root, n_neg))
    assert len(nodes) * (n_pos + n_neg) == len(ps)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 30), st.sampled_from([(64, 64), (8, 32), (3, 1)]))
def test_pairs_follow_the_tree(seed, m, counts):
    rng = np.random.default_rng(seed)
    masks = random_box_masks(rng, 16, 16, m)
    tree = mask_tree(masks)
    n_pos, n_neg = counts
    ps = sample_hierarchical_pairs(tree, rng, n_pos=n_pos, n_neg=n_neg)
    check_pairs(tree, ps, n_pos, n_neg)
    assert ps.pairs.shape == (len(ps), 2) and ps.pairs.dtype == np.int64


def test_nested_levels_and_negative_pixels():
    # 1D image of 30 pixels: A = [0, 10) inside B = [0, 20); root = everything
    m = np.zeros((2, 30), bool)
    m[0, :20] = True
    m[1, :10] = True
    tree = mask_tree(m)
    ps = sample_hierarchical_pairs(tree, np.random.default_rng(1), n_pos=200, n_neg=200)
    a = ps.node == 1
    assert (ps.level[a] == 2).all() and (ps.level[ps.node == 0] == 1).all()
    neg_a = a & ~ps.positive
    assert (ps.second[neg_a] >= 10).all() and (ps.second[neg_a] < 20).all()  # B \ A
    neg_b = (ps.node == 0) & ~ps.positive
    assert (ps.second[neg_b] >= 20).all()  # root \ B
    # uniform draws: every pixel of A appears among A's positives (200 x 2 draws over 10 pixels)
    assert set(ps.first[a & ps.positive]) | set(ps.second[a & ps.positive]) == set(range(10))


def test_seeded_and_deterministic():
    masks = random_box_masks(np.random.default_rng(0), 20, 20, 15)
    tree = mask_tree(masks)
    a = sample_hierarchical_pairs(tree, np.random.default_rng(42))
    b = sample_hierarchical_pairs(tree, np.random.default_rng(42))
    c = sample_hierarchical_pairs(tree, np.random.default_rng(43))
    assert np.array_equal(a.pairs, b.pairs) and not np.array_equal(a.pairs, c.pairs)


def test_no_masks_gives_empty_pairs():
    tree = mask_tree(np.zeros((0, 16), bool))
    ps = sample_hierarchical_pairs(tree, np.random.default_rng(0))
    assert len(ps) == 0 and ps.pairs.shape == (0, 2)
    with pytest.raises(ValueError):
        sample_hierarchical_pairs(tree, np.random.default_rng(0), n_pos=-1)
    with pytest.raises(ValueError, match="entries"):
        PairSet(np.zeros(2, np.int64), np.zeros(1, np.int64), np.zeros(2, bool), np.zeros(2, np.int64),
                np.zeros(2, np.int64))


def test_draw_members_uniform():
    rows = np.zeros((2, 8), bool)
    rows[0, [1, 4, 6]] = True
    rows[1, 7] = True
    d = draw_members(rows, 30000, np.random.default_rng(0))
    counts = np.bincount(d[0], minlength=8)[[1, 4, 6]]
    assert np.abs(counts / 30000 - 1 / 3).max() < 0.02
    assert (d[1] == 7).all()
    with pytest.raises(ValueError, match="at least one member"):
        draw_members(np.zeros((1, 4), bool), 3, np.random.default_rng(0))


def test_depth_stencils_inside_one_leaf():
    rng = np.random.default_rng(5)
    h, w = 24, 30
    masks = random_box_masks(rng, h, w, 12)
    tree = mask_tree(masks)
    labels = leaf_label_map(tree).reshape(h, w)
    st_ = sample_depth_stencils(labels, rng, per_mask=16, length=4)
    assert st_.ndim == 2 and st_.shape[1] == 4 and len(st_) > 0
    lab = labels.reshape(-1)[st_]
    assert (lab >= 0).all() and (lab == lab[:, :1]).all()  # one finest-level mask per stencil
    step = np.diff(st_, axis=1)
    assert ((step == 1).all(axis=1) | (step == w).all(axis=1)).all()  # a row or a column run
    rows = st_ // w
    horiz = (step == 1).all(axis=1)
    assert (rows[horiz] == rows[horiz, :1]).all()  # row runs don't wrap around the image edge
    assert np.bincount(lab[:, 0]).max() <= 16
    assert len(np.unique(st_, axis=0)) == len(st_)  # without replacement


def test_depth_stencils_counts_and_edge_cases():
    lab = np.full((6, 6), -1)
    lab[0:6, 0:4] = 0  # 6 row runs + 4 * 3 column runs = 18 candidates -> 16 drawn
    lab[0:2, 5] = 1  # too small for any 4-run
    st_ = sample_depth_stencils(lab, np.random.default_rng(0), per_mask=16)
    assert st_.shape == (16, 4)
    assert sample_depth_stencils(np.full((3, 3), -1), np.random.default_rng(0)).shape == (0, 4)
    assert sample_depth_stencils(np.zeros((2, 2), int), np.random.default_rng(0)).shape == (0, 4)
    with pytest.raises(ValueError):
        sample_depth_stencils(np.zeros(5, int), np.random.default_rng(0))


def test_reuse_negatives_as_parent_positives():
    m = np.zeros((3, 40), bool)
    m[0, :30] = True
    m[1, :10] = True
    m[2, 12:20] = True
    tree = mask_tree(m, min_size=1)
    ps = sample_hierarchical_pairs(tree, np.random.default_rng(0), n_pos=8, n_neg=8, reuse_negatives=True)
    negs = {(int(a), int(b)) for a, b, p, n in zip(ps.first, ps.second, ps.positive, ps.node) if not p and n in (1, 2)}
    parent_pos = {(int(a), int(b)) for a, b, p, n in zip(ps.first, ps.second, ps.positive, ps.node) if p and n == 0}
    assert parent_pos <= negs and len(parent_pos) > 1
    assert (ps.level[ps.node == 0] == 1).all()
