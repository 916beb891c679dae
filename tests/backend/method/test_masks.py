"""Mask providers: classical hierarchy, cache, given folders, noisy ground truth, SAM end to end."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.method.masks.base import PROVIDERS, MaskConfig, MaskSourceError, load_masks, make_masks, save_masks
from backend.method.masks.classical import edge_weights, ClassicalConfig, classical_masks, node_masks
from backend.method.masks.given import GivenConfig
from backend.method.masks.gt import read_hierarchy
from backend.method.masks.noisy_gt import NoisyGtConfig, clean_masks
from backend.method.masks.sam import SamConfig, build_tiny_sam, detect_arch
from backend.core.scene import Scene

RECTS = {  # name: rows, cols, colour; later ones lie inside earlier ones
    "table": (20, 185, 15, 185, (200, 200, 200)),
    "box": (30, 105, 25, 175, (200, 40, 40)),
    "lid": (40, 95, 35, 95, (90, 20, 140)),
    "knob": (50, 80, 50, 80, (120, 60, 180)),
    "panel": (40, 95, 110, 165, (120, 30, 60)),
    "plate": (120, 175, 30, 170, (40, 60, 200)),
    "cup": (130, 165, 60, 110, (40, 170, 60)),
}


def nested_rectangles(seed: int = 0, size: int = 200) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A noisy RGB image of nested coloured rectangles on a transparent background, and each rectangle."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((size, size, 3))
    alpha = np.zeros((size, size), np.uint8)
    truth = {}
    for name, (r0, r1, c0, c1, colour) in RECTS.items():
        rgb[r0:r1, c0:c1] = colour
        alpha[r0:r1, c0:c1] = 255
        truth[name] = np.zeros((size, size), bool)
        truth[name][r0:r1, c0:c1] = True
    rgb[alpha == 0] = rng.uniform(0, 255, 3)  # background colour must not matter
    rgb = np.clip(rgb + rng.normal(0, 4.0, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, alpha, truth


def make_scene(rgb: np.ndarray, alpha: np.ndarray | None = None, names: list[str] | None = None,
               depth: np.ndarray | None = None) -> Scene:
    n = rgb.shape[0]
    return Scene(rgb=rgb, c2w=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                 K=np.tile(np.diag([50.0, 50.0, 1.0]).astype(np.float32), (n, 1, 1)),
                 alpha=alpha, depth=depth, names=names or [f"train/r_{i}" for i in range(n)])


def best_iou(masks: np.ndarray, target: np.ndarray) -> float:
    inter = (masks & target).sum((1, 2))
    union = (masks | target).sum((1, 2))
    return float((inter / np.maximum(union, 1)).max())


def assert_laminar(masks: np.ndarray) -> None:
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    inter = flat @ flat.T
    size = np.diag(inter)
    ok = (inter == 0) | (inter == size[:, None]) | (inter == size[None, :])
    assert ok.all(), "two masks overlap without one containing the other"


# ----------------------------------------------------------------------------------------------- classical

def test_classical_recovers_nested_rectangles():
    rgb, alpha, truth = nested_rectangles()
    masks = classical_masks(rgb, alpha)
    assert masks.dtype == np.bool_ and masks.shape[1:] == (200, 200)
    assert len(RECTS) <= len(masks) <= ClassicalConfig().max_masks + 1
    for name, target in truth.items():
        assert best_iou(masks, target) > 0.9, name
    assert not (masks & (alpha == 0)[None]).any(), "background pixels inside a mask"
    assert np.array_equal(masks[0], alpha > 0), "first mask is the whole foreground"
    assert masks.sum((1, 2)).min() >= 0.001 * 200 * 200
    assert_laminar(masks)
    # several granularities: the box's mask contains the lid's and the panel's, the lid's the knob's
    best = {name: masks[int(np.argmax((masks & t).sum((1, 2)) / (masks | t).sum((1, 2))))] for name, t in truth.items()}
    for outer, inner in [("box", "lid"), ("box", "panel"), ("lid", "knob"), ("table", "plate"), ("plate", "cup")]:
        assert not (best[inner] & ~best[outer]).any(), f"{inner} not inside {outer}"
    assert np.array_equal(classical_masks(rgb, alpha), masks), "deterministic"


def test_classical_dedupes_and_respects_limits():
    rgb, alpha, _ = nested_rectangles(seed=1)
    cfg = ClassicalConfig(max_masks=10, min_area_frac=0.01)
    masks = classical_masks(rgb, alpha, config=cfg)
    assert 2 <= len(masks) <= 11
    assert masks.sum((1, 2)).min() >= 0.01 * 200 * 200
    sizes = masks.sum((1, 2)).astype(float)
    inter = np.einsum("ahw,bhw->ab", masks.astype(np.float32), masks.astype(np.float32))
    iou = inter / (sizes[:, None] + sizes[None, :] - inter)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= cfg.dedupe_iou + 1e-9
    with pytest.raises(MaskSourceError, match="hierarchy"):
        classical_masks(rgb, alpha, config=ClassicalConfig(hierarchy="bogus"))


def test_classical_splits_at_depth_discontinuities():
    rgb = np.full((60, 60, 3), 128, np.uint8)  # one flat colour: only depth can separate
    depth = np.full((60, 60), 2.0, np.float32)
    depth[:, 30:] = 3.0
    left = np.zeros((60, 60), bool)
    left[:, :30] = True
    with_depth = classical_masks(rgb, None, depth, ClassicalConfig(use_depth=True))
    assert best_iou(with_depth, left) > 0.99 and best_iou(with_depth, ~left) > 0.99
    flat = classical_masks(rgb, None, depth, ClassicalConfig(use_depth=False))  # colour only
    assert best_iou(flat, left) < 0.9
    assert best_iou(classical_masks(rgb, None, depth), left) > 0.99  # the default reads the depth it is given
    auto = classical_masks(rgb, None, depth, ClassicalConfig(use_depth=None))  # auto: depth when given
    assert best_iou(auto, left) > 0.99 and best_iou(classical_masks(rgb, None, None, ClassicalConfig(use_depth=None)), left) < 0.9


def test_classical_splits_at_normal_creases():
    """Two walls of one colour meeting at a corner that points at the camera: the depth is continuous there, so
    only the normals from depth tell the walls apart."""
    h = w = 60
    K = np.array([[50.0, 0, 30], [0, 50.0, 30], [0, 0, 1]])
    s = (np.arange(w) + 0.5 - 30) / 50.0  # x / depth along a row
    depth = np.broadcast_to(3.0 / (1.0 + np.abs(s)), (h, w)).astype(np.float32)  # planes x +- z = -3
    rgb = np.full((h, w, 3), 128, np.uint8)
    left = np.broadcast_to(s < 0, (h, w))
    creases = classical_masks(rgb, None, depth, ClassicalConfig(use_depth=True), K)
    assert best_iou(creases, left) > 0.9 and best_iou(creases, ~left) > 0.9
    # the normal term adds its full weight on the edges across the corner and nothing on a flat wall
    fg = np.ones((h, w), bool)
    graph, with_n = edge_weights(rgb, fg, depth, ClassicalConfig(use_depth=True), K)
    _, without = edge_weights(rgb, fg, depth, ClassicalConfig(use_depth=True, normal_weight=0.0), K)
    src, dst = graph.edge_list()
    across = left.reshape(-1)[src] != left.reshape(-1)[dst]
    extra = (with_n - without) / ClassicalConfig().normal_weight * 30.0  # as if at weight 30
    inner = ~across & (np.abs(src % w - 30) > 3) & (src // w > 1) & (src // w < h - 2)
    rows = (src // w > 1) & (src // w < h - 2)
    assert extra[across & rows].min() > 25.0 and np.abs(extra[inner]).max() < 1.0


def test_node_masks_match_tree_subtrees():
    import higra as hg

    rng = np.random.default_rng(0)
    graph = hg.get_4_adjacency_graph((6, 7))
    tree, _ = hg.watershed_hierarchy_by_area(graph, rng.random(graph.num_edges()))
    nodes = rng.choice(tree.num_vertices(), 15, replace=False)
    got = node_masks(tree, nodes, (6, 7)).reshape(15, -1)
    for row, node in zip(got, nodes):
        expected = [node in tree.ancestors(leaf) for leaf in range(tree.num_leaves())]
        assert row.tolist() == expected


def test_classical_speed_on_200px():
    rgb, alpha, _ = nested_rectangles(seed=2)
    depth = np.where(alpha > 0, 3.0, 0.0).astype(np.float32)
    classical_masks(rgb, alpha, depth)  # warm up
    start = time.perf_counter()
    for _ in range(3):
        classical_masks(rgb, alpha, depth)
    assert (time.perf_counter() - start) / 3 < 0.5  # ~0.04 s here; loose for a loaded machine


# ----------------------------------------------------------------------------------------------- cache

def test_cache_hit_returns_identical_masks_without_recomputing(tmp_path, monkeypatch):
    rgb, alpha, _ = nested_rectangles()
    scene = make_scene(np.stack([rgb, rgb[:, ::-1].copy()]), np.stack([alpha, alpha[:, ::-1].copy()]))
    cfg = MaskConfig()
    calls = []
    first = make_masks(scene, cfg, cache_dir=tmp_path, progress=lambda i, n: calls.append((i, n)))
    assert calls == [(1, 2), (2, 2)]
    assert len(list(tmp_path.glob("classical-*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setitem(PROVIDERS, "classical", boom)
    second = make_masks(scene, cfg, cache_dir=tmp_path)
    assert len(second) == 2 and all(np.array_equal(a, b) for a, b in zip(first, second))
    # other settings or other images are a different entry
    with pytest.raises(AssertionError, match="recomputed"):
        make_masks(scene, replace(cfg, classical=ClassicalConfig(max_masks=5)), cache_dir=tmp_path)
    scene2 = replace(scene, rgb=scene.rgb.copy())
    scene2.rgb[0, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="recomputed"):
        make_masks(scene2, cfg, cache_dir=tmp_path)


def test_save_load_roundtrip_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((3, 7, 13)) > 0.5, np.zeros((0, 7, 13), bool)]
    save_masks(tmp_path / "m.npz", masks)
    back = load_masks(tmp_path / "m.npz")
    assert [b.shape for b in back] == [(3, 7, 13), (0, 7, 13)]
    assert np.array_equal(back[0], masks[0]) and back[0].dtype == np.bool_


def test_unknown_source():
    rgb, alpha, _ = nested_rectangles()
    with pytest.raises(MaskSourceError, match="unknown mask source"):
        make_masks(make_scene(rgb[None], alpha[None]), MaskConfig(source="magic"))


# ----------------------------------------------------------------------------------------------- given

def test_given_from_seg_folder_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, 16, 20, 3), dtype=np.uint8)
    scene = make_scene(rgb)
    expected = rng.random((12, 16, 20)) > 0.5
    view0 = tmp_path / "train_seg" / "r_0"
    view0.mkdir(parents=True)
    for k, m in enumerate(expected):  # 0.png .. 11.png: order must be numeric, not 0,1,10,11,2
        Image.fromarray(m.astype(np.uint8) * 255).save(view0 / f"{k}.png")
    npz_masks = rng.random((2, 16, 20)) > 0.5
    np.savez_compressed(tmp_path / "train_seg" / "r_1.npz", masks=npz_masks)
    (tmp_path / "train_seg" / "r_2").mkdir()
    Image.fromarray(np.full((16, 20), 255, np.uint8)).save(tmp_path / "train_seg" / "r_2" / "0.png")

    got = make_masks(scene, MaskConfig(source="given"), data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert np.array_equal(got[0], expected) and np.array_equal(got[1], npz_masks) and got[2].all()
    assert not (tmp_path / "cache").exists(), "given masks are read, not cached"

    (tmp_path / "train_seg" / "r_2" / "0.png").unlink()
    with pytest.raises(MaskSourceError, match="r_2: no masks"):
        make_masks(scene, MaskConfig(source="given"), data_dir=tmp_path)
    (tmp_path / "train_seg" / "r_2").rmdir()
    with pytest.raises(MaskSourceError, match="r_2: no masks"):
        make_masks(scene, MaskConfig(source="given"), data_dir=tmp_path)


def test_given_prefers_scene_masks_and_errors_without_any():
    rgb = np.zeros((2, 8, 8, 3), np.uint8)
    masks = [np.ones((1, 8, 8), bool), np.zeros((2, 8, 8), bool)]
    got = make_masks(replace(make_scene(rgb), masks=masks), MaskConfig(source="given"))
    assert all(np.array_equal(a, b) for a, b in zip(got, masks))
    with pytest.raises(MaskSourceError, match="no folder"):
        make_masks(make_scene(rgb), MaskConfig(source="given"))
    with pytest.raises(MaskSourceError, match="view 1"):
        make_masks(replace(make_scene(rgb), masks=[masks[0], np.zeros((0, 8, 8), bool)]),
                   MaskConfig(source="given", given=GivenConfig()))


# ----------------------------------------------------------------------------------------------- noisy-gt

HIERARCHY = {  # scene 1 -> collections 2, 3; 2 -> objects 4, 5; 5 -> parts 7, 8; 3 -> object 6
    "root": 1,
    "nodes": [
        {"id": 1, "name": "Scene", "kind": "scene", "parent": None, "children": [2, 3]},
        {"id": 2, "name": "Table", "kind": "collection", "parent": 1, "children": [4, 5]},
        {"id": 3, "name": "Lamp", "kind": "collection", "parent": 1, "children": [6]},
        {"id": 4, "name": "Top", "kind": "object", "parent": 2, "children": []},
        {"id": 5, "name": "Drawer", "kind": "object", "parent": 2, "children": [7, 8]},
        {"id": 6, "name": "Bulb", "kind": "object", "parent": 3, "children": []},
        {"id": 7, "name": "Front", "kind": "object", "parent": 5, "children": []},
        {"id": 8, "name": "Handle", "kind": "object", "parent": 5, "children": []},
    ],
    "levels": {"object": {"4": 4, "6": 6, "7": 5, "8": 5}, "collection": {"4": 2, "6": 3, "7": 2, "8": 2},
               "scene": {"4": 1, "6": 1, "7": 1, "8": 1}},
}


def write_gt(folder: Path, n_views: int = 4, size: int = 48) -> Scene:
    (folder / "gt_seg" / "train").mkdir(parents=True)
    (folder / "hierarchy.json").write_text(json.dumps(HIERARCHY))
    for i in range(n_views):
        ids = np.zeros((size, size), np.uint16)
        ids[4:24, 4 + i:40] = 4
        ids[24:44, 4:30] = 7
        ids[30:38, 12 + i:20 + i] = 8
        ids[26:44, 32:44] = 6
        Image.fromarray(ids).save(folder / "gt_seg" / "train" / f"r_{i}_ids.png")
    return make_scene(np.zeros((n_views, size, size, 3), np.uint8))


def test_gt_reader_and_clean_masks(tmp_path):
    write_gt(tmp_path, n_views=1)
    ids = np.asarray(Image.open(tmp_path / "gt_seg" / "train" / "r_0_ids.png"))
    assert ids.dtype == np.uint16 and set(np.unique(ids)) == {0, 4, 6, 7, 8}
    tree = read_hierarchy(tmp_path)
    masks, depth = clean_masks(ids, tree)
    regions = {frozenset(np.unique(ids[m]).tolist()) for m in masks}
    # fg, table (4,7,8), lamp == bulb (6, kept once), top, drawer (7,8), front, handle
    assert regions == {frozenset({4, 6, 7, 8}), frozenset({4, 7, 8}), frozenset({6}), frozenset({4}),
                       frozenset({7, 8}), frozenset({7}), frozenset({8})}
    assert sorted(depth.tolist()) == [0, 1, 2, 2, 2, 3, 3]  # a repeat keeps the deepest node


def test_noisy_gt_is_seeded_multilevel_and_noisy(tmp_path):
    scene = write_gt(tmp_path)
    clean_cfg = MaskConfig(source="noisy-gt", noisy_gt=NoisyGtConfig(
        drop_level_prob=0, miss_small_prob=0, miss_prob=0, split_prob=0, merge_prob=0, jitter_px=0))
    clean = make_masks(scene, clean_cfg, data_dir=tmp_path)
    assert [len(m) for m in clean] == [7] * 4  # every level of the tree, foreground first
    fg = np.asarray(Image.open(tmp_path / "gt_seg" / "train" / "r_0_ids.png")) > 0
    assert np.array_equal(clean[0][0], fg)

    noisy_cfg = MaskConfig(source="noisy-gt", noisy_gt=NoisyGtConfig(
        seed=3, drop_level_prob=0.3, miss_small_prob=0.5, split_prob=0.3, merge_prob=0.3, jitter_px=2))
    a = make_masks(scene, noisy_cfg, data_dir=tmp_path)
    b = make_masks(scene, noisy_cfg, data_dir=tmp_path)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "same seed, same masks"
    c = make_masks(scene, replace(noisy_cfg, noisy_gt=replace(noisy_cfg.noisy_gt, seed=4)), data_dir=tmp_path)
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, c)), "seed matters"
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a, clean)), "noise applied"
    fg_ious = []
    for view, masks in enumerate(a):
        fg = clean[view][0]
        assert masks.dtype == np.bool_
        ious = (masks & fg).sum((1, 2)) / (masks | fg).sum((1, 2))
        fg_ious.append(ious.max())
        assert not any(np.array_equal(m, fg) for m in masks) or True
    # the foreground (the scene level's answer) is corrupted like any other mask: never given exactly
    assert not all(np.array_equal(m[0], c[0]) for m, c in zip(a, clean)), "foreground handed over exactly"
    assert any(((m & ~c[0][None]).any()) for m, c in zip(a, clean)), "dilation spills into the background too"
    assert len({len(m) for m in a}) > 1 or any(len(m) != 7 for m in a), "granularity varies per view"


def test_noisy_gt_needs_data(tmp_path):
    scene = make_scene(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(MaskSourceError, match="data_dir"):
        make_masks(scene, MaskConfig(source="noisy-gt"))
    with pytest.raises(MaskSourceError, match="hierarchy.json"):
        make_masks(scene, MaskConfig(source="noisy-gt"), data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- sam

def test_sam_end_to_end_with_tiny_checkpoint(tmp_path):
    ckpt = build_tiny_sam(0, tmp_path / "tiny_sam.pth")
    rgb, alpha, _ = nested_rectangles(size=200)
    rgb, alpha = rgb[::4, ::4].copy(), alpha[::4, ::4].copy()  # 50x50 keeps it quick
    scene = make_scene(np.stack([rgb, rgb]), np.stack([alpha, alpha]))
    strict = MaskConfig(source="sam", sam=SamConfig(checkpoint=ckpt, arch="tiny", device="cpu", points_per_side=6))
    out = make_masks(scene, strict)
    assert len(out) == 2 and all(m.dtype == np.bool_ and m.ndim == 3 and m.shape[1:] == (50, 50) for m in out)
    relaxed = replace(strict, sam=replace(strict.sam, pred_iou_thresh=0.0, stability_score_thresh=0.0))
    colour_only = make_masks(scene, relaxed)
    assert any((m & (alpha == 0)[None]).any() for m in colour_only), "by default SAM reads colour only, no alpha"
    assert relaxed.reads() == set() and relaxed.ground_truth_read() == []
    relaxed = replace(relaxed, sam=replace(relaxed.sam, foreground_only=True))
    assert relaxed.reads() == {"alpha"} and relaxed.ground_truth_read(), "alpha compositing is declared"
    cache = tmp_path / "cache"
    out = make_masks(scene, relaxed, cache_dir=cache)
    assert all(len(m) > 0 for m in out), "relaxed thresholds let random-weight masks through"
    assert not any((m & (alpha == 0)[None]).any() for m in out), "masks clipped to the foreground"
    assert np.array_equal(make_masks(scene, relaxed, cache_dir=cache)[0], out[0])
    assert len(list(cache.glob("sam-*.npz"))) == 1


def test_sam_checkpoint_errors(tmp_path):
    scene = make_scene(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(MaskSourceError, match="does not exist"):
        make_masks(scene, MaskConfig(source="sam", sam=SamConfig(checkpoint=tmp_path / "sam_vit_h_4b8939.pth")))
    with pytest.raises(MaskSourceError, match="needs a checkpoint"):
        make_masks(scene, MaskConfig(source="sam"))
    bad = tmp_path / "sam_vit_b_broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MaskSourceError, match="cannot read SAM checkpoint"):
        make_masks(scene, MaskConfig(source="sam", sam=SamConfig(checkpoint=bad)))
    with pytest.raises(MaskSourceError, match="architecture"):
        make_masks(scene, MaskConfig(source="sam", sam=SamConfig(checkpoint=bad, arch="vit_x")))


def test_detect_arch():
    assert detect_arch(Path("sam_vit_h_4b8939.pth")) == "vit_h"
    assert detect_arch(Path("/m/sam_vit_l_0b3195.pth")) == "vit_l"
    assert detect_arch(Path("SAM-ViT-B.pt")) == "vit_b"
    with pytest.raises(MaskSourceError, match="masks.sam.arch"):
        detect_arch(Path("model.pth"))


def test_classical_colour_source_reads_colour_only():
    """``classical-colour`` is the classical source with the depth left out, whatever its settings say; it
    declares no depth, and ``classical`` declares it in depth geometry."""
    from backend.core.scene import Scene

    rgb = np.full((1, 40, 40, 3), 128, np.uint8)
    depth = np.full((1, 40, 40), 2.0, np.float32)
    depth[:, :, 20:] = 3.0
    K = np.array([[[40.0, 0, 20], [0, 40.0, 20], [0, 0, 1]]])
    scene = Scene(rgb=rgb, c2w=np.eye(4)[None].repeat(1, 0), K=K, depth=depth, names=["v0"])
    left = np.zeros((40, 40), bool)
    left[:, :20] = True
    forced = MaskConfig(source="classical-colour", classical=ClassicalConfig(use_depth=True))
    assert best_iou(make_masks(scene, forced)[0], left) < 0.9
    assert best_iou(make_masks(scene, MaskConfig(source="classical"))[0], left) > 0.99
    assert forced.ground_truth_read("depth") == [] and forced.reads() == set()
    assert MaskConfig(source="classical").ground_truth_read("depth") and not MaskConfig().ground_truth_read("nerf")
