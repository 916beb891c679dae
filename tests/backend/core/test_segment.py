"""3D segmentation helpers: component bridging (graphs.connect_components with a debris size), one-query label
propagation, hierarchy export."""

from __future__ import annotations

import numpy as np
import pytest

from backend.core import graphs, segment
from backend.core.pointcloud import PointCloud
from backend.core.segment import SegmentConfig, propagate_label_stack, segment_hierarchy, segment_point_cloud


def two_blobs(n: int = 300, gap: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.01, (n, 3))
    b = rng.normal(0, 0.01, (n, 3)) + [gap, 0, 0]
    return np.concatenate([a, b])


def test_bridge_links_separate_objects_so_features_decide():
    pts = two_blobs()
    src, dst = graphs.knn_graph(pts, k=8)
    s2, d2 = graphs.connect_components(pts, src, dst, min_size=2)
    assert len(s2) == len(src) + 1  # exactly one bridge between the two blobs
    new = ~np.isin(s2 * 1000 + d2, src * 1000 + dst)
    a, b = s2[new][0], d2[new][0]
    assert (a < 300) != (b < 300)
    # Same features on both blobs: one segment at any positive threshold; different: two until t > distance.
    feats = np.tile([1.0, 0, 0], (600, 1))
    seg = segment_point_cloud(PointCloud(pts, np.zeros((600, 3), np.uint8), feats), SegmentConfig(knn=8))
    assert len(np.unique(seg.labels([0.01])[0])) == 1
    feats[300:] = [0.0, 1.0, 0]  # 1 - cos = 1 between the blobs
    seg = segment_point_cloud(PointCloud(pts, np.zeros((600, 3), np.uint8), feats), SegmentConfig(knn=8))
    lab = seg.labels([0.5, 1.5])
    assert len(np.unique(lab[0])) == 2 and len(np.unique(lab[1])) == 1


def test_debris_is_not_bridged():
    pts = np.concatenate([two_blobs(), [[5.0, 5, 5]]])  # a lone point: fusion debris
    src, dst = graphs.knn_graph(pts, k=8)
    s2, _ = graphs.connect_components(pts, src, dst, min_size=2)
    assert len(s2) == len(src) + 1


def test_label_stack_matches_per_threshold_propagation_when_all_labelled():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 1, (400, 3))
    labels = np.stack([rng.integers(0, 5, 400), rng.integers(0, 2, 400)])
    q = rng.uniform(0, 1, (100, 3))
    stack = propagate_label_stack(pts, labels, q, k=5, max_distance=0.2)
    for i in range(2):
        np.testing.assert_array_equal(stack[i], segment.propagate_labels(pts, labels[i], q, k=5, max_distance=0.2))
    far = propagate_label_stack(pts, labels, q + 10.0, k=5, max_distance=0.2)
    assert (far == -1).all()


def test_hierarchy_links_each_segment_to_its_coarser_parent():
    labels = np.array([[0, 0, 1, 2, -1], [0, 0, 0, 1, -1]])
    h = segment_hierarchy(labels, [0.1, 0.2])
    assert h["thresholds"] == [0.1, 0.2]
    fine = {s["id"]: s for s in h["levels"][0]["segments"]}
    assert fine[0]["parent"] == 0 and fine[1]["parent"] == 0 and fine[2]["parent"] == 1
    assert fine[0]["size"] == 2
    assert all(s["parent"] is None for s in h["levels"][1]["segments"])
def test_mutual_reachability_does_not_chain_through_a_few_boundary_points():
    # Two blobs touching through a thin line of 3 points with interpolated features: single linkage merges the
    # blobs at a tiny threshold, mutual reachability (min_samples=4) only at the jump the bridge points span.
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 0.1, (200, 3))
    b = rng.uniform(0, 0.1, (200, 3)) + [0.14, 0, 0]
    line = np.array([[0.11, 0.05, 0.05], [0.12, 0.05, 0.05], [0.13, 0.05, 0.05]])
    pts = np.concatenate([a, b, line])
    t = np.linspace(0, 1, 5)[1:-1]
    feats = np.concatenate([np.tile([1.0, 0], (200, 1)), np.tile([0.0, 1], (200, 1)),
                            np.stack([np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)], 1)])
    cloud = PointCloud(pts, np.zeros((len(pts), 3), np.uint8), feats)
    single = segment_point_cloud(cloud, SegmentConfig(knn=8)).labels([0.1])[0]
    assert single[0] == single[200]  # chained
    mr = segment_point_cloud(cloud, SegmentConfig(knn=8, min_samples=4, min_cluster_size=5)).labels([0.1])[0]
    assert mr[0] != mr[200] and mr[0] >= 0 and mr[200] >= 0
    assert mr[401] == -1  # the middle boundary point is noise at this cut
    # Novel-view queries next to noise points take the nearest labelled points' vote.
    q = line[1:2] + [0.0, 0.0, 0.001]
    lab = propagate_label_stack(pts, mr[None], q, k=2, max_distance=0.05, labelled_fallback=True)
    assert lab[0, 0] == mr[0]


def test_background_segment_and_boundary_filter():
    # Two flat patches whose features meet through a band of interpolated points: the boundary filter leaves the
    # band out of the tree (noise, relabelled from labelled neighbours); empty pixels can form one segment.
    xs, ys = np.meshgrid(np.linspace(0, 1, 40), np.linspace(0, 0.2, 8))
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], 1)
    ang = np.clip((pts[:, 0] - 0.45) / 0.1, 0, 1) * np.pi / 2  # band 0.45..0.55
    feats = np.stack([np.cos(ang), np.sin(ang)], 1)
    cloud = PointCloud(pts.astype(np.float32), np.zeros((len(pts), 3), np.uint8), feats.astype(np.float32))
    single = segment_point_cloud(cloud, SegmentConfig(knn=8)).labels([0.1])[0]
    assert single[0] == single[-1]  # chained through the band
    filt = segment_point_cloud(cloud, SegmentConfig(knn=8, boundary_fraction=0.2)).labels([0.1])[0]
    assert filt[0] != filt[-1] and filt[0] >= 0 and filt[-1] >= 0
    seg = segment_point_cloud(cloud, SegmentConfig(knn=8))
    K = np.array([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
    depth = np.zeros((4, 4), np.float32)
    c2w = np.eye(4)
    lab = segment.view_labels(seg, seg.labels([0.05]), depth, K, c2w, SegmentConfig(background_segment=True))
    assert (lab == len(pts)).all()
    off = SegmentConfig(background_segment=False)
    assert (segment.view_labels(seg, seg.labels([0.05]), depth, K, c2w, off) == -1).all()


def fillet(radius: float, concave: bool, steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A floor (z = 0, x < 0) turning up into a wall (x = radius, z > radius) through a quarter-circle fillet, three
    rows deep in y; ``concave=False`` mirrors it into a box's rounded top edge (turning down). Points every
    ~radius/20 and their exact outward normals."""
    t = np.linspace(0.0, np.pi / 2, steps)
    arc = np.c_[radius * np.sin(t), radius * (1 - np.cos(t))]           # from the floor up to the wall
    nrm = np.c_[-np.sin(t), np.cos(t)]                                  # out of the surface, into the room
    flat = np.c_[np.linspace(-0.5, -radius / steps, 30), np.zeros(30)]
    up = np.c_[np.full(30, radius), np.linspace(radius + radius / steps, radius + 0.5, 30)]
    xz = np.concatenate([flat, arc, up])
    n_xz = np.concatenate([np.tile([0.0, 1.0], (30, 1)), nrm, np.tile([-1.0, 0.0], (30, 1))])
    if not concave:  # mirrored in z: a top face rounding down into a side; outward normals (sin t, cos t)
        xz[:, 1] *= -1
        n_xz[:, 0] *= -1
    rows = [np.c_[xz[:, 0], np.full(len(xz), y), xz[:, 1]] for y in (0.0, 0.01, 0.02)]
    normals = np.tile(np.c_[n_xz[:, 0], np.zeros(len(xz)), n_xz[:, 1]], (3, 1))
    return np.concatenate(rows), normals


def test_concave_edges_catch_a_gradual_contact_and_spare_a_rounded_edge():
    """A floor meeting a wall through a fillet turns ~2 degrees per edge: no edge reaches the 30-degree fold test,
    so only the concave test at a few degrees catches it; the same fillet turned convex (a box's rounded edge) is
    never a concave fold. Normals oriented by the direction to a camera (flipped ones are put right)."""
    from backend.core.graphs import concave_edges, crease_edges, knn_graph, orient_normals

    for concave in (True, False):
        pts, n = fillet(0.05, concave)
        src, dst = knn_graph(pts, k=6)
        flipped = np.where((np.arange(len(n)) % 3 == 0)[:, None], -n, n)  # PCA gives either sign
        oriented = orient_normals(flipped, n * 2.0 + 0.1)  # a camera in front of each point
        assert np.allclose(oriented, n)
        assert not crease_edges(oriented, src, dst, 30.0).any()
        cc = concave_edges(pts, oriented, src, dst, 1.0)
        on_arc = (pts[src, 0] >= 0) & (pts[dst, 0] >= 0) & (np.abs(pts[src, 2]) <= 0.05) & (np.abs(pts[dst, 2]) <= 0.05)
        if concave:
            assert cc[on_arc].mean() > 0.5 and not cc[(pts[src, 0] < -0.05) & (pts[dst, 0] < -0.05)].any()
        else:
            assert not cc.any()
    with pytest.raises(ValueError, match="concave_angle"):
        SegmentConfig(concave_angle=-1)


def test_point_normals_and_folds_of_a_box_corner():
    """PCA normals: a plane's points get its normal (either sign); edges between two faces of a box are folds,
    edges inside a face are not; a gentle curve (a 2 m radius arc sampled every cm) has no folds."""
    from backend.core.graphs import crease_edges, crease_lengths, knn_graph, point_normals

    g = np.linspace(0.0, 1.0, 21)
    floor = np.array([[x, y, 0.0] for x in g for y in g])
    wall = np.array([[x, 0.0, z] for x in g for z in g[1:]])
    pts = np.concatenate([floor, wall])
    n = point_normals(pts, k=8)
    far_floor = floor[:, 1] > 0.2
    assert np.allclose(np.abs(n[:len(floor)][far_floor, 2]), 1.0, atol=1e-6)
    assert np.allclose(np.abs(n[len(floor):][wall[:, 2] > 0.2, 1]), 1.0, atol=1e-6)
    src, dst = knn_graph(pts, k=8)
    folds = crease_edges(n, src, dst, 30.0)
    y, z = pts[:, 1], pts[:, 2]
    near_corner = (np.maximum(y[src], z[src]) < 0.15) & (np.maximum(y[dst], z[dst]) < 0.15)
    assert folds.any() and not folds[~near_corner].any()
    t = np.linspace(0, 0.5, 51)
    arc = np.c_[2 * np.sin(t), 2 - 2 * np.cos(t), np.zeros_like(t)]
    arc = np.concatenate([arc + [0, 0, dz] for dz in (0.0, 0.01, 0.02)])
    s2, d2 = knn_graph(arc, k=6)
    assert not crease_edges(point_normals(arc, k=6), s2, d2, 30.0).any()
    w = np.array([0.1, 0.2, 0.3])
    assert crease_lengths(w, np.zeros(3, bool)).tolist() == w.tolist()
    assert crease_lengths(w, np.array([True, False, True]), cost=1.0).tolist() == [1.1, 0.2, 1.3]
    with pytest.raises(ValueError, match="crease_angle"):
        SegmentConfig(crease_angle=90)
    with pytest.raises(ValueError, match="crease_cost"):
        SegmentConfig(crease_angle=30, crease_cost=-1)



def test_fold_contrast_keeps_a_blended_contact_from_chaining_and_an_objects_own_fold_cheap():
    """An object of two faces, A (nodes 0-9, a chain from its foot up) and B (10-19), the faces meeting across a
    fold near the top (a_i - b_i, i >= 5, feature distance 0.004); A's foot stands on a floor (20-29) across a
    contact fold whose features differ (0.5) except at one blended edge (a_0 - f_0, 0.001)."""
    from backend.core import linkage_tree

    a, b, f = np.arange(10), np.arange(10, 20), np.arange(20, 30)
    chain = lambda nodes: (nodes[:-1], nodes[1:])
    edges = [chain(a), chain(b), chain(f), (a[5:], b[5:]), (a[:3], f[:3])]
    src = np.concatenate([e[0] for e in edges])
    dst = np.concatenate([e[1] for e in edges])
    w = np.concatenate([np.zeros(27), np.full(5, 0.004), [0.001, 0.5, 0.5]])
    folds = np.r_[np.zeros(27, bool), np.ones(8, bool)]
    obj = np.r_[np.ones(20, bool), np.zeros(10, bool)]

    def object_is_a_segment(lengths: np.ndarray) -> bool:
        tree = linkage_tree.single_linkage_tree(30, src, dst, lengths)
        cuts = [linkage_tree.cut(tree, t) for t in np.unique(lengths) + 1e-9]
        return any(len(np.unique(c[obj])) == 1 and not np.isin(c[~obj], c[obj]).any() for c in cuts)

    # the weakest contact edge decides without the contrast: A joins the floor before it joins B
    assert not object_is_a_segment(graphs.crease_lengths(w, folds))
    contrast = graphs.fold_contrast(30, src, dst, w, folds, hops=2)
    assert contrast[32] > 0.1 and contrast[27:32].max() < 0.1   # the contact is raised, the object's own fold not
    assert object_is_a_segment(graphs.crease_lengths(w, folds, contrast=contrast))
    with pytest.raises(ValueError, match="fold_contrast_hops"):
        SegmentConfig(fold_contrast_hops=-1)
    with pytest.raises(graphs.GraphInputError):
        graphs.fold_contrast(30, src, dst, w, folds, hops=0)


def test_fold_contrast_raises_only_inward_folds_of_a_cloud_with_view_directions():
    """The 3D step raises concave fold edges only: a floor meeting a wall seen from the room (an inward fold)
    gets its fold edges lengthened and nothing else; the same two planes seen from outside (a box's outward edge)
    get almost none, and a cloud without view directions none."""
    from backend.core.graphs import knn_graph

    g = np.linspace(0.0, 1.0, 21)
    floor = np.array([[x, y, 0.0] for x in g for y in g])
    wall = np.array([[x, 0.0, z] for x in g for z in g[1:]])
    pts = np.concatenate([floor, wall])
    feats = np.random.default_rng(0).normal(size=(len(pts), 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    src, dst = knn_graph(pts, k=8)
    near_corner = (np.maximum(pts[src, 1], pts[src, 2]) < 0.2) & (np.maximum(pts[dst, 1], pts[dst, 2]) < 0.2)
    for camera, inward in (([0.5, 2.0, 2.0], True), ([0.5, -2.0, -2.0], False), (None, False)):
        dirs = None if camera is None else (np.array(camera) - pts) / np.linalg.norm(np.array(camera) - pts, axis=1,
                                                                                       keepdims=True)
        cloud = PointCloud(pts.astype(np.float32), np.zeros((len(pts), 3), np.uint8), feats,
                           None if dirs is None else dirs.astype(np.float32))
        off = segment.edge_lengths(cloud, src, dst, SegmentConfig(knn=8, fold_contrast_hops=0))
        on = segment.edge_lengths(cloud, src, dst, SegmentConfig(knn=8))
        raised = on > off + 1e-12
        assert (on >= off - 1e-12).all()
        if inward:
            assert raised.sum() > 50 and not raised[~near_corner].any()
            inward_count = raised.sum()
        elif camera is None:
            assert not raised.any()
        else:  # seen from outside only the points on the fold line itself (normals at 45 degrees) can turn inward
            assert raised.sum() <= 0.05 * inward_count
