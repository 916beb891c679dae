"""Mask inclusion tree on hand-made nested masks, thresholds, size filter, leaf label map."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core.mask_tree import leaf_label_map, mask_tree, tree_depth


def grid_masks(h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    m = np.zeros((len(boxes), h, w), bool)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        m[i, r0:r1, c0:c1] = True
    return m.reshape(len(boxes), -1)


def test_nested_boxes_tree():
    # 20x20 image: 0 = left half, 1 = right half, 2 = box in the left half, 3 = box inside 2, 4 = box in right
    masks = grid_masks(20, 20, [(0, 20, 0, 10), (0, 20, 10, 20), (2, 10, 2, 8), (3, 6, 3, 6), (5, 9, 12, 18)])
    t = mask_tree(masks)
    root = t.root
    assert root == 5 and t.masks[root].all() and t.masks.shape == (6, 400)
    assert t.parent.tolist() == [root, root, 0, 2, 1, root]
    assert t.depth.tolist() == [1, 1, 2, 3, 2, 0]
    assert t.kept.tolist() == [0, 1, 2, 3, 4]
    assert t.is_leaf.tolist() == [False, False, False, True, True, False]
    assert t.area.tolist() == [200, 200, 48, 9, 24, 400]


def test_tightest_parent_and_near_duplicates():
    # 1 is a near-duplicate of 0 (IoU 0.95 >= 0.85): neither is the other's child;
    # 2 lies inside both: its parent is the smaller of them (1); 3 is 95% inside 2 only, 4 only 90%.
    p = 100
    m = np.zeros((5, p), bool)
    m[0, :60] = True
    m[1, :57] = True
    m[2, :20] = True
    m[3, 1:20] = True  # inside 2 entirely, IoU 19/20 = 0.95 >= 0.85: duplicate of 2 -> parent 1
    m[4, 10:30] = True  # 10/20 inside 2, 20/20 inside 1
    t = mask_tree(m, min_size=1)
    assert t.parent.tolist() == [5, 5, 1, 1, 1, 5]
    # with p_iou = 0.99 the 0.95-IoU pairs nest: 1 under 0, and 3 (smaller) under 2 ... but 2 can't be under 3
    t2 = mask_tree(m, p_iou=0.99, min_size=1)
    assert t2.parent.tolist() == [5, 0, 1, 2, 1, 5]
    # p_in: 4 is 100% inside 1 but with p_in = 1.0 (strict >) nothing qualifies
    t3 = mask_tree(m, p_in=1.0, min_size=1)
    assert (t3.parent == 5).all()


def test_size_filter_released_rule():
    p = 50
    m = np.zeros((4, p), bool)
    m[0, :5] = True  # 5 pixels: dropped (keep only > 5)
    m[1, :6] = True  # kept
    m[2, :45] = True  # 45 = P - 5: dropped (keep only < P - 5)
    m[3, :44] = True  # kept
    t = mask_tree(m)
    assert t.kept.tolist() == [1, 3]
    assert t.parent.tolist() == [1, 2, 2]


def test_empty_input():
    t = mask_tree(np.zeros((0, 10), bool))
    assert t.num_nodes == 1 and t.parent.tolist() == [0] and t.depth.tolist() == [0]
    assert (leaf_label_map(t) == -1).all()


def test_leaf_label_map_prefers_smaller_leaves():
    masks = grid_masks(10, 10, [(0, 10, 0, 5), (0, 3, 0, 3), (5, 10, 5, 10), (6, 9, 3, 8)])
    t = mask_tree(masks, min_size=1)
    assert t.parent.tolist() == [4, 0, 4, 4, 4]
    lab = leaf_label_map(t).reshape(10, 10)
    assert lab[1, 1] == 1  # leaf inside node 0
    assert lab[5, 2] == -1  # only in the non-leaf node 0
    assert lab[0, 9] == -1  # in no mask
    assert lab[7, 6] == 3  # overlap of leaves 2 (25 px) and 3 (15 px): the smaller wins
    assert lab[7, 9] == 2


def test_tree_depth_pointer_jumping():
    parent = np.array([1, 2, 3, 4, 5, 5, 0])
    assert tree_depth(parent).tolist() == [5, 4, 3, 2, 1, 0, 6]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 25))
def test_random_masks_parent_is_valid(seed, m):
    rng = np.random.default_rng(seed)
    h = w = 12
    boxes = []
    for _ in range(m):
        r0, c0 = rng.integers(0, h - 1, 2)
        boxes.append((r0, rng.integers(r0 + 1, h + 1), c0, rng.integers(c0 + 1, w + 1)))
    masks = grid_masks(h, w, boxes)
    t = mask_tree(masks, min_size=1, max_size=h * w)
    area = t.area
    for i in range(t.root):
        par = t.parent[i]
        assert t.depth[i] == t.depth[par] + 1
        if par != t.root:
            inter = (t.masks[i] & t.masks[par]).sum()
            assert inter / area[i] > 0.95
            assert inter / (area[i] + area[par] - inter) < 0.85
            assert (area[par], par) > (area[i], i)
