"""Tests for backend/linkage_tree.py: single-linkage trees, cuts, 2D segmentation, label propagation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from backend.core import linkage_tree
from backend.core import graphs, segment
from backend.core.linkage_tree import SingleLinkageTree, TreeInputError


def brute_force_cut(n, src, dst, w, t, max_segments=200):
    """Reference: scipy connected components of {edges with weight < t}, then the same ranking rule
    written out with a full sort (independent of linkage_tree.rank_segments)."""
    m = w < t
    _, lab = connected_components(coo_matrix((np.ones(int(m.sum())), (src[m], dst[m])), shape=(n, n)),
                                  directed=False)
    ids = np.unique(lab)
    sizes = np.array([(lab == i).sum() for i in ids])
    first = np.array([np.flatnonzero(lab == i)[0] for i in ids])
    ranked = sorted(range(len(ids)), key=lambda j: (-sizes[j], first[j]))
    out = np.full(n, -1, np.int64)
    for r, j in enumerate(ranked[:max_segments]):
        out[lab == ids[j]] = r
    return out


@st.composite
def weighted_graphs(draw):
    n = draw(st.integers(1, 30))
    e = draw(st.integers(0, 60)) if n > 1 else 0
    src = np.array(draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e)), np.int64)
    dst = np.array(draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e)), np.int64)
    keep = src != dst
    # Few distinct values so ties are frequent.
    w = np.array(draw(st.lists(st.sampled_from([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.9]), min_size=e, max_size=e)))
    return n, src[keep], dst[keep], w[keep]


# --- graphs -----------------------------------------------------------------------------------------------------


def test_grid_graph_4_counts_and_adjacency():
    src, dst = graphs.grid_graph_4(3, 4)
    assert src.size == 3 * 3 + 2 * 4
    i, j = np.divmod(src, 4)
    i2, j2 = np.divmod(dst, 4)
    assert np.all(np.abs(i - i2) + np.abs(j - j2) == 1)
    assert len(set(zip(src.tolist(), dst.tolist()))) == src.size
    with pytest.raises(graphs.GraphInputError):
        graphs.grid_graph_4(0, 3)


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(1)
    pts = rng.random((60, 3))
    src, dst = graphs.knn_graph(pts, k=4)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :4]
    expected = {(min(a, b), max(a, b)) for a in range(60) for b in nn[a]}
    assert set(zip(src.tolist(), dst.tolist())) == expected
    assert np.all(src < dst)


def test_knn_graph_small_and_duplicate_points():
    src, dst = graphs.knn_graph(np.zeros((3, 3)), k=16)  # fewer points than k, all duplicates
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2), (1, 2)]
    assert graphs.knn_graph(np.zeros((1, 3)))[0].size == 0
    with pytest.raises(graphs.GraphInputError):
        graphs.knn_graph(np.full((4, 3), np.nan))


# --- trees ------------------------------------------------------------------------------------------------------


def test_tree_on_known_graph():
    # 2x3 grid: 0-1 (0.1), 1-2 (0.4), 3-4 (0.2), 4-5 (0.3), verticals 0-3 (0.9), 1-4 (0.5), 2-5 (0.6)
    src, dst = graphs.grid_graph_4(2, 3)
    w = np.array([0.1, 0.4, 0.2, 0.3, 0.9, 0.5, 0.6])
    tree = linkage_tree.single_linkage_tree(6, src, dst, w)
    assert tree.num_nodes == 11
    np.testing.assert_allclose(tree.altitudes[6:], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert linkage_tree.attribute_area(tree)[-1] == 6
    assert linkage_tree.cut(tree, 0.25).tolist() == [0, 0, 2, 1, 1, 3]  # size ties: smaller first vertex first
    assert linkage_tree.cut(tree, 0.45).tolist() == [0, 0, 0, 1, 1, 1]
    assert linkage_tree.cut(tree, 0.55).tolist() == [0] * 6
    assert linkage_tree.cut(tree, 0.1).tolist() == [0, 1, 2, 3, 4, 5]  # strict: the 0.1 edge is not < 0.1


def test_leaf_runs_are_contiguous():
    rng = np.random.default_rng(0)
    src, dst = graphs.grid_graph_4(8, 9)
    tree = linkage_tree.single_linkage_tree(72, src, dst, rng.random(src.size))
    start, area, order = linkage_tree.attribute_leaf_start(tree), linkage_tree.attribute_area(tree), linkage_tree.leaf_order(tree)
    assert sorted(order.tolist()) == list(range(72))
    # Every leaf's run position lies inside every ancestor's run.
    for leaf in range(72):
        n = leaf
        while True:
            assert start[n] <= start[leaf] < start[n] + area[n]
            if tree.parents[n] == n:
                break
            n = tree.parents[n]


def test_non_binary_tree_layout():
    # node 3 holds leaf 0 alone; the root 4 holds leaves 1, 2 and node 3
    tree = SingleLinkageTree(np.array([3, 4, 4, 4, 4]), np.array([0, 0, 0, 0.1, 0.5]), 3)
    start, area = linkage_tree.attribute_leaf_start(tree), linkage_tree.attribute_area(tree)
    assert area.tolist() == [1, 1, 1, 1, 3]
    assert sorted(start[:3].tolist()) == [0, 1, 2] and start[3] == start[0]
    assert linkage_tree.cut(tree, 0.3).tolist() == [0, 1, 2]
    assert linkage_tree.cut(tree, 0.6).tolist() == [0, 0, 0]


def test_disconnected_graph_joined_under_inf():
    tree = linkage_tree.single_linkage_tree(5, np.array([0, 1, 3]), np.array([1, 2, 4]), np.array([0.5, 0.2, 0.1]))
    assert np.isinf(tree.altitudes[-1]) and np.isfinite(tree.altitudes[:-1]).all()
    assert linkage_tree.cut(tree, 1e9).tolist() == [0, 0, 0, 1, 1]
    isolated = linkage_tree.single_linkage_tree(3, np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    assert linkage_tree.cut_many(isolated, [0.0, 5.0]).tolist() == [[0, 1, 2], [0, 1, 2]]


def test_bad_inputs_raise():
    with pytest.raises(TreeInputError):
        linkage_tree.single_linkage_tree(3, np.array([0]), np.array([3]), np.array([0.1]))
    with pytest.raises(TreeInputError):
        linkage_tree.single_linkage_tree(3, np.array([0]), np.array([1]), np.array([np.nan]))
    with pytest.raises(TreeInputError):
        SingleLinkageTree(np.array([3, 3, 4, 4, 4]), np.array([0, 0, 0, 0.6, 0.5]), 3)  # altitude decreases
    with pytest.raises(TreeInputError):
        SingleLinkageTree(np.array([0, 3, 4, 4, 4]), np.zeros(5), 3)  # parent not above child
    tree = linkage_tree.single_linkage_tree(2, np.array([0]), np.array([1]), np.array([0.3]))
    with pytest.raises(TreeInputError):
        linkage_tree.cut_many(tree, np.array([np.nan]))


# --- cuts -------------------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(weighted_graphs(), st.integers(1, 8))
def test_cuts_equal_brute_force_components(graph, max_segments):
    n, src, dst, w = graph
    tree = linkage_tree.single_linkage_tree(n, src, dst, w)
    thresholds = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.22, 0.25, 0.3, 0.31, 0.5, 0.9, 1.0])
    labels = linkage_tree.cut_many(tree, thresholds, max_segments=max_segments)
    for t, lab in zip(thresholds, labels):
        np.testing.assert_array_equal(lab, brute_force_cut(n, src, dst, w, t, max_segments))


@settings(max_examples=100, deadline=None)
@given(weighted_graphs())
def test_cuts_are_nested(graph):
    n, src, dst, w = graph
    tree = linkage_tree.single_linkage_tree(n, src, dst, w)
    labels = linkage_tree.cut_many(tree, np.linspace(0.0, 1.0, 21), max_segments=10**6)
    for fine, coarse in zip(labels[:-1], labels[1:]):
        # every fine segment maps into exactly one coarse segment
        pairs = np.unique(np.stack([fine, coarse], 1), axis=0)
        assert len(pairs) == len(np.unique(fine))
        assert len(np.unique(coarse)) <= len(np.unique(fine))


def test_max_segments_keeps_largest():
    # chains of sizes 5, 1, 3, 2 (vertex blocks), joined only by heavy edges
    sizes = [5, 1, 3, 2]
    src, dst, w, base = [], [], [], 0
    for s in sizes:
        src += list(range(base, base + s - 1))
        dst += list(range(base + 1, base + s))
        w += [0.1] * (s - 1)
        base += s
    src += [4, 5, 8]
    dst += [5, 6, 9]
    w += [0.9, 0.9, 0.9]
    tree = linkage_tree.single_linkage_tree(11, np.array(src), np.array(dst), np.array(w))
    lab = linkage_tree.cut(tree, 0.5, max_segments=2)
    assert lab.tolist() == [0] * 5 + [-1] + [1] * 3 + [-1] * 2
    lab_all = linkage_tree.cut(tree, 0.5, max_segments=200)
    assert lab_all.tolist() == [0] * 5 + [3] + [1] * 3 + [2] * 2
    assert (linkage_tree.cut(tree, 0.5, max_segments=0) == -1).all()


def test_rank_segments_matches_full_sort():
    rng = np.random.default_rng(3)
    for _ in range(50):
        k = int(rng.integers(1, 40))
        sizes = rng.integers(1, 5, k)
        first = rng.permutation(1000)[:k]
        m = int(rng.integers(0, 45))
        ranked = sorted(range(k), key=lambda j: (-sizes[j], first[j]))
        expected = np.full(k, -1)
        for r, j in enumerate(ranked[:m]):
            expected[j] = r
        np.testing.assert_array_equal(linkage_tree.rank_segments(sizes, first, m), expected)


def test_cut_many_matches_single_cuts_on_knn_cloud():
    rng = np.random.default_rng(5)
    pts = rng.random((3000, 3))
    feats = np.sin(pts @ rng.normal(size=(3, 8)) * 6)
    src, dst = graphs.knn_graph(pts, k=8)
    w = graphs.feature_distances(feats, src, dst)
    tree = linkage_tree.single_linkage_tree(3000, src, dst, w)
    th = np.linspace(0.001, 0.2, 12)
    labels = linkage_tree.cut_many(tree, th, max_segments=50)
    for t, lab in zip(th, labels):
        _, raw = connected_components(
            coo_matrix((np.ones(int((w < t).sum())), (src[w < t], dst[w < t])), shape=(3000, 3000)), directed=False)
        np.testing.assert_array_equal(lab, linkage_tree.relabel_by_size(raw, 50))
    assert len(np.unique(labels[len(th) // 2])) > 3  # non-trivial


# --- 2D segmentation and propagation ----------------------------------------------------------------------------


def test_segment_feature_map_piecewise_constant():
    f = np.zeros((6, 8, 3))
    f[:, :4] = [1, 0, 0]
    f[:, 4:] = [0, 1, 0]
    f[4:, 4:] = [0, 0.8, 0.6]  # cos with [0,1,0] = 0.8 -> distance 0.2
    valid = np.ones((6, 8), bool)
    valid[0, 0] = False
    labels = segment.segment_feature_map(f, [0.1, 0.5, 1.5], valid=valid)
    assert labels.shape == (3, 6, 8)
    assert (labels[:, 0, 0] == -1).all()
    assert len(np.unique(labels[0][valid])) == 3
    assert len(np.unique(labels[1][valid])) == 2
    assert len(np.unique(labels[2][valid])) == 1
    assert labels[1, 5, 7] == labels[1, 0, 7] != labels[1, 0, 1]


def test_propagate_labels_mode_and_gate():
    pts = np.array([[0, 0, 0], [1e-3, 0, 0], [2e-3, 0, 0], [3e-3, 0, 0], [4e-3, 0, 0], [1.0, 0, 0]])
    lab = np.array([2, 2, 2, 9, 9, 5])
    q = np.array([[3.5e-3, 0, 0], [0.9, 0, 0], [1.0, 0, 0]])
    out = segment.propagate_labels(pts, lab, q, k=5, max_distance=5e-3)
    # mode of {9,9,2,2,2}; the second is gated (nearest point too far); the third sits on the lone 5 but its
    # k = 5 vote still reaches the 9s (the gate only looks at the nearest point)
    assert out.tolist() == [2, -1, 9]
    assert segment.propagate_labels(pts, lab, q, k=1).tolist() == [9, -1, 5]
    # unlabelled points do not vote
    lab2 = np.array([-1, -1, -1, 9, 9, 5])
    assert segment.propagate_labels(pts, lab2, q[:1], k=5).tolist() == [9]
    assert segment.propagate_labels(pts, np.full(6, -1), q).tolist() == [-1, -1, -1]
    with pytest.raises(segment.SegmentInputError):
        segment.propagate_labels(pts, lab[:3], q)
