"""tree_cut (bpy-free): cuts against an independent implementation, nesting, granularity, colours."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from backend.wire import tree_cut as tc
from tests.backend.service_jobs import cut as reference_cut
from tests.backend.service_jobs import single_linkage


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.fixture(scope="module")
def tree():
    pts = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    parents, altitudes = single_linkage(pts)
    return parents, altitudes, len(pts)


def test_doctests():
    assert doctest.testmod(tc).failed == 0


def test_tree_validates_and_rejects_bad_trees(tree):
    parents, altitudes, n = tree
    tc.validate_tree(parents, altitudes, n)
    bad = parents.copy()
    bad[n] = 0  # an internal node pointing below itself
    with pytest.raises(tc.TreeError, match="after their children"):
        tc.validate_tree(bad, altitudes, n)
    with pytest.raises(tc.TreeError, match="decrease"):
        tc.validate_tree(parents, altitudes[::-1].copy(), n)
    with pytest.raises(tc.TreeError, match="nodes"):
        tc.validate_tree(parents[:n - 1], altitudes[:n - 1], n)


@pytest.mark.parametrize("q", [0.0, 0.2, 0.5, 0.9, 0.99, 1.0])
def test_cut_matches_reference_implementation(tree, q):
    parents, altitudes, n = tree
    t = float(np.quantile(altitudes[n:], q))
    c = tc.cut(parents, altitudes, n, t)
    # the reference merges altitude <= t'; ours altitude < t: the same with t' just below t
    ref = reference_cut(parents, altitudes, n, float(np.nextafter(np.float32(t), np.float32(-np.inf))))
    assert same_partition(c.labels, ref)
    assert c.n_segments == len(np.unique(ref))
    assert (np.diff(c.sizes) <= 0).all() and c.sizes.sum() == n
    np.testing.assert_array_equal(np.bincount(c.labels), c.sizes)


def test_cuts_are_nested(tree):
    parents, altitudes, n = tree
    ts = np.quantile(altitudes[n:], [0.1, 0.5, 0.8, 0.95])
    cuts = [tc.cut(parents, altitudes, n, t).labels for t in ts]
    for fine, coarse in zip(cuts, cuts[1:]):
        for s in np.unique(fine):
            assert len(np.unique(coarse[fine == s])) == 1


def test_granularity_is_monotone_and_logarithmic(tree):
    parents, altitudes, n = tree
    merges = tc.merge_altitudes(parents, altitudes, n)
    counts = [tc.cut(parents, altitudes, n, tc.granularity_to_threshold(merges, n, g)).n_segments
              for g in np.linspace(0, 1, 11)]
    assert counts[0] == n and counts[-1] == 1
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    assert abs(counts[5] - round(n ** 0.5)) <= 1  # no ties in this tree
    for g in (0.1, 0.4, 0.7):
        t = tc.granularity_to_threshold(merges, n, g)
        assert tc.threshold_to_granularity(merges, n, t) == pytest.approx(g, abs=0.02)


def test_segment_colours_distinct_stable_and_grey_beyond(tree):
    parents, altitudes, n = tree
    merges = tc.merge_altitudes(parents, altitudes, n)
    c = tc.cut(parents, altitudes, n, tc.granularity_to_threshold(merges, n, 0.5))
    cols = tc.segment_colours(c, 10)
    assert len({tuple(x) for x in cols[:10]}) == 10
    assert all(tuple(x) == pytest.approx(tc.GREY) for x in cols[10:])
    rgba = tc.point_colours(c, 10)
    assert rgba.shape == (n, 4) and (rgba[:, 3] == 1).all()
    for s in range(c.n_segments):
        assert len(np.unique(rgba[c.labels == s], axis=0)) == 1
    # a segment that survives a small change of threshold keeps its colour (identity = first point)
    c2 = tc.cut(parents, altitudes, n, tc.granularity_to_threshold(merges, n, 0.52))
    col2 = tc.point_colours(c2, 10)
    for s in range(min(c.n_segments, 10)):
        members = c.labels == s
        if len(np.unique(c2.labels[members])) == 1 and (c2.labels == c2.labels[members][0]).sum() == members.sum():
            np.testing.assert_array_equal(col2[members][0], rgba[members][0])


def test_relabel_by_size():
    c = tc.relabel_by_size(np.array([5, 5, -1, 7, 7, 7]))
    assert c.labels.tolist() == [1, 1, 2, 0, 0, 0] and c.sizes.tolist() == [3, 2, 1]
