"""Ultrametric (minimax) distances: brute force, ultrametric inequality, gradients, kNN graph, boundary prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core.graphs import knn_pixel_graph, mask_boundary_crossings, mask_boundary_prior
from backend.core.linkage_tree import DISCONNECTED, SAME_VERTEX, single_linkage_tree
from backend.core.linkage_tree import bottleneck_edges as tree_bottleneck_edges
from backend.method.ultrametric import edge_lengths, ultrametric_distance, ultrametric_distance_and_edges


def bottleneck_edges(n, src, dst, w, pairs):
    return tree_bottleneck_edges(single_linkage_tree(n, src, dst, w), pairs)


def minimax_floyd_warshall(n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Brute-force minimax path distances (Floyd-Warshall with (min, max)); inf between components."""
    d = np.full((n, n), np.inf)
    np.fill_diagonal(d, 0.0)
    for s, t, x in zip(src, dst, w):
        d[s, t] = min(d[s, t], x)
        d[t, s] = min(d[t, s], x)
    for k in range(n):
        d = np.minimum(d, np.maximum(d[:, k:k + 1], d[k:k + 1, :]))
    return d


def all_pairs(n: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.stack([i.ravel(), j.ravel()], 1)


@st.composite
def random_graphs(draw):
    n = draw(st.integers(2, 9))
    m = draw(st.integers(0, 3 * n))
    src = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), dtype=np.int64)
    dst = np.array(draw(st.lists(st.integers(0, n - 1), min_size=m, max_size=m)), dtype=np.int64)
    keep = src != dst
    # few distinct weights: ties are frequent, the minimax value is still unique
    w = np.array(draw(st.lists(st.integers(0, 4), min_size=m, max_size=m)), dtype=np.float64)
    return n, src[keep], dst[keep], w[keep]


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_bottleneck_matches_floyd_warshall(graph):
    n, src, dst, w = graph
    pairs = all_pairs(n)
    e = bottleneck_edges(n, src, dst, w, pairs)
    w_ext = np.concatenate([w, [0.0, np.inf]])  # index -1 (same vertex) -> 0, -2 (disconnected) -> inf
    got = w_ext[np.where(e >= 0, e, len(w) + np.where(e == SAME_VERTEX, 0, 1))]
    want = minimax_floyd_warshall(n, src, dst, w)[pairs[:, 0], pairs[:, 1]]
    np.testing.assert_array_equal(got, want)
    assert (e[pairs[:, 0] == pairs[:, 1]] == SAME_VERTEX).all()
    assert ((e == DISCONNECTED) == np.isinf(want)).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 40), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_feature_distance_is_minimax_and_ultrametric(n, k, seed):
    rng = np.random.default_rng(seed)
    uv = rng.random((n, 2)) * 20
    feats = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(n, 5))), dim=1)
    src, dst = knn_pixel_graph(uv, k=k)
    pairs = all_pairs(n)
    d = ultrametric_distance(feats, src, dst, pairs).numpy().reshape(n, n)
    w = edge_lengths(feats, src, dst).numpy()
    np.testing.assert_allclose(d, minimax_floyd_warshall(n, src, dst, w), rtol=0, atol=1e-12)
    assert np.isfinite(d).all()  # connect=True joins components
    np.testing.assert_array_equal(d, d.T)
    # ultrametric inequality for every triple: d(x, z) <= max(d(x, y), d(y, z))
    bound = np.maximum(d[:, :, None], d[None, :, :])  # [x, y, z]
    assert (d[:, None, :] <= bound + 1e-12).all()


def test_euclidean_metric_and_disconnected_pairs():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0], [9.0, 9.0]])
    src, dst = np.array([0, 1]), np.array([1, 2])  # vertex 3 isolated
    d = ultrametric_distance(feats, src, dst, np.array([[0, 2], [1, 2], [0, 3], [3, 3]]), metric="euclidean")
    assert d[:2].tolist() == pytest.approx([5.0, 4.0])
    assert np.isinf(d[2].item()) and d[3].item() == 0.0
    with pytest.raises(ValueError, match="unknown metric"):
        ultrametric_distance(feats, src, dst, np.array([[0, 1]]), metric="manhattan")
    with pytest.raises(IndexError):
        ultrametric_distance(feats, src, dst, np.array([[0, 4]]))


@settings(max_examples=25, deadline=None)
@given(st.integers(4, 60), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_gradient_reaches_only_bottleneck_endpoints(n, q, seed):
    rng = np.random.default_rng(seed)
    uv = rng.random((n, 2)) * 30
    src, dst = knn_pixel_graph(uv, k=4)
    feats = torch.tensor(rng.normal(size=(n, 8)), requires_grad=True)
    pairs = rng.integers(0, n, size=(q, 2))
    d, edges = ultrametric_distance_and_edges(feats, src, dst, pairs)
    # random positive weights so that no two pair contributions cancel
    (d * torch.tensor(rng.random(q) + 0.5)).sum().backward()
    nonzero_rows = set(np.flatnonzero(feats.grad.abs().sum(1).numpy() > 0).tolist())
    used = edges[edges >= 0]
    endpoints = set(src[used].tolist()) | set(dst[used].tolist())
    assert nonzero_rows <= endpoints
    assert len(nonzero_rows) >= min(1, len(used))  # some gradient whenever some pair has a bottleneck


def test_gradient_single_pair_exact_rows():
    # path graph 0-1-2-3 with the longest edge (1, 2): the pair (0, 3) sends gradient to rows 1 and 2 only
    feats = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 0.99]], requires_grad=True)
    src, dst = np.array([0, 1, 2]), np.array([1, 2, 3])
    d = ultrametric_distance(feats, src, dst, np.array([[0, 3]]))
    d.sum().backward()
    rows = np.flatnonzero(feats.grad.abs().sum(1).numpy() > 0).tolist()
    assert rows == [1, 2]
    assert d.item() == pytest.approx(edge_lengths(feats.detach(), [1], [2]).item())


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(3)
    uv = rng.random((300, 2)) * 100  # continuous: kNN sets are unique
    k = 10
    src, dst = knn_pixel_graph(uv, k=k)
    assert (src < dst).all()
    assert len(np.unique(src * 300 + dst)) == len(src)
    d2 = ((uv[:, None] - uv[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nn = np.argsort(d2, axis=1)[:, :k]
    want = {(min(i, j), max(i, j)) for i in range(300) for j in nn[i]}
    got = set(zip(src.tolist(), dst.tolist()))
    assert want <= got
    assert len(got - want) <= 5  # only the few component-joining edges may be extra
    deg = np.bincount(np.concatenate([src, dst]), minlength=300)
    assert deg.min() >= k


def test_knn_graph_connects_far_clusters():
    uv = np.concatenate([np.random.default_rng(0).random((20, 2)), 1000 + np.random.default_rng(1).random((20, 2))])
    src, dst = knn_pixel_graph(uv, k=3)
    t = single_linkage_tree(40, src, dst, np.ones(len(src)))
    assert (t.mst_edge_map >= 0).all()  # no virtual merge: connected
    s2, d2 = knn_pixel_graph(uv, k=3, connect=False)
    feats = torch.randn(40, 4)
    assert np.isinf(ultrametric_distance(feats, s2, d2, np.array([[0, 39]])).item())


def test_mask_boundary_prior_values():
    masks = np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0]], bool)
    src, dst = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    assert mask_boundary_crossings(src, dst, masks).tolist() == [True, True, True, False]
    prior = mask_boundary_prior(src, dst, masks)
    assert prior.dtype == np.float64 and prior.tolist() == [10.0, 10.0, 10.0, 0.0]
    many = np.zeros((70, 5), bool)
    many[69, 3] = True  # more than 64 masks: the wide code path
    assert mask_boundary_crossings(src, dst, many).tolist() == [False, False, True, True]


def test_boundary_prior_changes_the_bottleneck():
    # 4-cycle 0-1-2-3-0; mask = {0, 1, 2}. Without the prior the path 0-3-2 (short features) wins;
    # with it, paths stay inside the mask (0-1-2) and the bottleneck no longer crosses the boundary.
    src, dst = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 3])
    lengths = np.array([0.5, 0.6, 0.1, 0.1])
    feats = torch.zeros(4, 2)
    masks = np.array([[1, 1, 1, 0]], bool)
    crossing = mask_boundary_crossings(src, dst, masks)
    e_plain = bottleneck_edges(4, src, dst, lengths, np.array([[0, 2]]))
    e_prior = bottleneck_edges(4, src, dst, lengths + mask_boundary_prior(src, dst, masks), np.array([[0, 2]]))
    assert crossing[e_plain].all() and not crossing[e_prior].any()
    assert lengths[e_prior[0]] == 0.6
    # ultrametric_distance accepts the float prior (added) or a bool flag (scaled by prior_weight)
    d1 = ultrametric_distance(feats, src, dst, np.array([[0, 2]]), metric="euclidean",
                              boundary_prior=mask_boundary_prior(src, dst, masks))
    d2 = ultrametric_distance(feats, src, dst, np.array([[0, 2]]), metric="euclidean", boundary_prior=crossing)
    assert d1.item() == d2.item()
    with pytest.raises(ValueError, match="one value per edge"):
        ultrametric_distance(feats, src, dst, np.array([[0, 2]]), boundary_prior=np.zeros(3))


@pytest.mark.parametrize("num_masks", [0, 1, 7, 8, 9, 64, 65, 120, 130])
def test_mask_boundary_crossings_match_membership_comparison(num_masks):
    # issue #24: membership compared as 64-bit words; must equal "any mask differs" for every mask count
    rng = np.random.default_rng(num_masks)
    masks = rng.random((num_masks, 300)) < 0.2
    masks[:, 50:60] = masks[:, 50:51]  # some pixels with identical membership
    src, dst = rng.integers(0, 300, 2000), rng.integers(0, 300, 2000)
    expected = (masks[:, src] != masks[:, dst]).any(axis=0)
    assert mask_boundary_crossings(src, dst, masks).tolist() == expected.tolist()


def test_sorted_unique_and_dedup_equal_numpy_unique():
    from backend.core.graphs import dedup_edges, sorted_unique

    rng = np.random.default_rng(3)
    for n in (0, 1, 2, 1000):
        x = rng.integers(0, 50, n)
        assert sorted_unique(x).tolist() == np.unique(x).tolist()
    s, t = rng.integers(0, 400, 5000), rng.integers(0, 400, 5000)
    a, b = np.minimum(s, t), np.maximum(s, t)
    key = np.unique(a[a != b] * 400 + b[a != b])
    ds, dt = dedup_edges(s, t, 400)
    assert ds.tolist() == (key // 400).tolist() and dt.tolist() == (key % 400).tolist()
