"""Pictures of a segmentation worth looking at: label maps over the image, one contact sheet per view, the
granularity sweep as an animated GIF and a multi-panel figure (PIL only; arrays in, images out).

Colours follow the tree the way the Blender add-on colours its cuts (:func:`backend.wire.tree_cut.colour_table`):
a segment's colour comes from its first point, so it keeps its colour from one cut to the next, and when it
merges into its parent the parent takes the colour of the child holding the smaller first point. Every cut
picture says its threshold (on ``1 - cos`` between unit features) and how many segments it shows.

Written by :func:`backend.method.pipeline.segment_run`: ``views/<view>_sheet.png`` (image, PCA of the
features, 4 cuts), ``sweep.gif`` and ``sweep.png`` (one view through a sweep of cuts, fine to coarse).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backend.wire.files import atomic_path
from backend.wire.tree_cut import colour_table, srgb8

#: Background of sheets and of transparent pixels of the images (sRGB).
BACKGROUND = (246, 246, 246)
#: Text colour (sRGB).
INK = (35, 35, 35)
#: Tiles are enlarged (nearest neighbour, integer factor) to at least this many pixels on their short side.
MIN_TILE = 224


def colour_tables(cloud_labels: np.ndarray) -> list[np.ndarray]:
    """uint8 [K_t + 1, 3] sRGB colour table of each cut of the cloud's labels int [T, N] (row -1: unassigned)."""
    return [srgb8(colour_table(lab)) for lab in np.asarray(cloud_labels)]


def composite(rgb: np.ndarray, alpha: np.ndarray | None = None, background=BACKGROUND) -> np.ndarray:
    """uint8 [H, W, 3]: ``rgb`` uint8 [H, W, 3] over ``background`` where ``alpha`` uint8 [H, W] is below 255."""
    rgb = np.asarray(rgb, np.uint8)[..., :3]
    if alpha is None:
        return rgb.copy()
    a = np.asarray(alpha, np.float32)[..., None] / 255.0
    return np.round(rgb * a + np.asarray(background, np.float32) * (1 - a)).astype(np.uint8)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels whose right or lower neighbour has another label (segment outlines)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, bool)
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    return edge


def overlay(rgb: np.ndarray, labels: np.ndarray, table: np.ndarray, opacity: float = 0.6,
            scale: int = 1) -> np.ndarray:
    """uint8 [H*s, W*s, 3]: the label map int [H, W] (``-1``: no segment, left as the image) blended over
    ``rgb`` uint8 [H, W, 3] with ``table`` uint8 [K + 1, 3] colours, enlarged ``scale`` times with 1-pixel
    dark outlines between segments drawn at the enlarged size (sharp at any scale)."""
    rgb = np.asarray(rgb, np.uint8)
    lab = np.asarray(labels)
    s = max(int(scale), 1)
    if s > 1:
        rgb, lab = (np.repeat(np.repeat(x, s, 0), s, 1) for x in (rgb, lab))
    inside = lab >= 0
    safe = np.where(inside & (lab < len(table) - 1), lab, len(table) - 1)
    colour = np.asarray(table, np.float32)[safe]
    out = rgb.astype(np.float32)
    out[inside] = (1 - opacity) * out[inside] + opacity * colour[inside]
    out[boundaries(lab)] *= 0.25
    return np.round(out).clip(0, 255).astype(np.uint8)


def scale_for(height: int, width: int, min_tile: int = MIN_TILE) -> int:
    """Integer enlargement bringing the short side to at least ``min_tile`` pixels."""
    return max(1, -(-min_tile // max(min(height, width), 1)))


def enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an image [H, W, C] by an integer ``scale``."""
    return np.repeat(np.repeat(np.asarray(img), scale, 0), scale, 1) if scale > 1 else np.asarray(img)


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def label_on(img: np.ndarray, text: str):
    """A PIL image of ``img`` uint8 [H, W, 3] with ``text`` written on a light band along its bottom edge."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.asarray(img, np.uint8)).convert("RGB")
    w, h = im.size
    px = max(11, min(18, w // 16))
    band = int(px * 1.6)
    draw = ImageDraw.Draw(im, "RGBA")
    draw.rectangle([0, h - band, w, h], fill=(255, 255, 255, 215))
    font = _font(px)
    while draw.textlength(text, font=font) > w - 8 and px > 8:
        px -= 1
        font = _font(px)
    draw.text((6, h - band + (band - px) // 2 - 1), text, fill=INK, font=font)
    return im


def cut_caption(threshold: float, labels: np.ndarray) -> str:
    """``t = 0.05 · 12 segments`` for a view's label map (segments visible in it)."""
    n = int(np.unique(np.asarray(labels)[np.asarray(labels) >= 0]).size)
    return f"t = {float(threshold):.3g} \u00b7 {n} segment{'s' if n != 1 else ''}"


def grid(tiles: list, columns: int, title: str | None = None, gap: int = 6):
    """A PIL sheet of equally sized PIL ``tiles`` in ``columns`` columns on :data:`BACKGROUND`, ``title`` above."""
    from PIL import Image, ImageDraw

    w, h = tiles[0].size
    cols = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // cols)
    px = max(12, min(18, w // 14))
    top = int(px * 2) if title else 0
    sheet = Image.new("RGB", (cols * w + (cols + 1) * gap, top + rows * h + (rows + 1) * gap), BACKGROUND)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(tile.resize((w, h)) if tile.size != (w, h) else tile, (gap + c * (w + gap), top + gap + r * (h + gap)))
    if title:
        draw = ImageDraw.Draw(sheet)
        font = _font(px)
        while draw.textlength(title, font=font) > sheet.size[0] - 2 * gap and px > 8:
            px -= 1
            font = _font(px)
        draw.text((gap, (top - px) // 2 + 2), title, fill=INK, font=font)
    return sheet


def pick_cuts(count: int, k: int = 4) -> list[int]:
    """Up to ``k`` indices spread over ``count`` cuts, the finest and the coarsest included.

    >>> pick_cuts(5), pick_cuts(3), pick_cuts(8, 4)
    ([0, 1, 3, 4], [0, 1, 2], [0, 2, 5, 7])
    """
    if count <= k:
        return list(range(count))
    return sorted({int(round(x)) for x in np.linspace(0, count - 1, k)})


def view_sheet(rgb: np.ndarray, pca: np.ndarray, label_maps: np.ndarray, thresholds, tables: list[np.ndarray],
               title: str, cuts: int = 4):
    """A view's contact sheet (PIL): the image, the PCA of its features and ``cuts`` label maps over the
    image (spread from fine to coarse), each tile captioned, 3 columns.

    Shapes: ``rgb``, ``pca`` uint8 [H, W, 3]; ``label_maps`` int [T, H, W]; ``tables[t]`` uint8 [K_t + 1, 3].
    """
    h, w = rgb.shape[:2]
    s = scale_for(h, w)
    tiles = [label_on(enlarge(rgb, s), "image"), label_on(enlarge(pca, s), "features (PCA, 3 components)")]
    for i in pick_cuts(len(thresholds), cuts):
        tiles.append(label_on(overlay(rgb, label_maps[i], tables[i], scale=s), cut_caption(thresholds[i], label_maps[i])))
    return grid(tiles, 3, title)


def sweep_tiles(rgb: np.ndarray, label_maps: np.ndarray, thresholds, tables: list[np.ndarray]) -> list:
    """One captioned PIL tile per cut of the sweep (fine to coarse)."""
    h, w = rgb.shape[:2]
    s = scale_for(h, w)
    return [label_on(overlay(rgb, lab, tab, scale=s), cut_caption(t, lab))
            for lab, t, tab in zip(label_maps, thresholds, tables)]


def save_png(img, path: Path) -> Path:
    """Save a PIL image as PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", optimize=True)
    return path


def save_gif(frames: list, path: Path, durations: list[int] | None = None) -> Path:
    """An endlessly looping GIF of PIL ``frames`` (``durations`` in ms, default 900 each), written atomically."""
    path = Path(path)
    pal = [f.convert("RGB").quantize(colors=255, dither=0) for f in frames]
    with atomic_path(path) as tmp:
        pal[0].save(tmp, format="GIF", save_all=True, append_images=pal[1:], duration=durations or 900, loop=0,
                    optimize=False, disposal=1)
    return path


def write_sweep(rgb: np.ndarray, label_maps: np.ndarray, thresholds, tables: list[np.ndarray], out: Path,
                title: str) -> list[Path]:
    """``out/sweep.gif`` (the cuts one after the other, back and forth) and ``out/sweep.png`` (the cuts on a
    4-column grid) of one view through a sweep of thresholds."""
    tiles = sweep_tiles(rgb, label_maps, thresholds, tables)
    frames = tiles + tiles[-2:0:-1]  # fine -> coarse -> fine
    durations = [900] * len(frames)
    durations[0] = durations[len(tiles) - 1] = 1800  # hold the finest and the coarsest cut
    gif = save_gif(frames, Path(out) / "sweep.gif", durations)
    png = save_png(grid(tiles, 4, title), Path(out) / "sweep.png")
    return [gif, png]
