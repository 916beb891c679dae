"""Render the placement picture of docs/dataset_tools.md: the cameras chosen in the closed room, from above,
beside four of their views.

Usage::

    python3 scripts/render_placement_figure.py docs/images/placement_room.png [--engine cycles|workbench]

It builds the ``room`` example (``dataset-tools example room``), plans the cameras exactly as
``dataset-tools render`` does with its default placement for 16 train views at 96 px
(:func:`dataset_tools.camera_plan.plan_cameras`), renders the room from above with the ceiling hidden and
draws every chosen camera on it (a dot, its viewing direction, its number), then renders four of the
views (four that together show the most content objects, larger than 96 px so they read on a page) and puts
them on the right, numbered like the cameras. The picture is saved with 256 colours (Cycles noise does not
compress).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel positions [N, 2] (u right, v down) of world points [N, 3] in camera ``c2w`` (OpenGL axes)."""
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    return np.stack([K[0, 0] * cam[:, 0] / -cam[:, 2] + K[0, 2], -K[1, 1] * cam[:, 1] / -cam[:, 2] + K[1, 2]], -1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output PNG")
    p.add_argument("--engine", default="cycles", choices=["cycles", "workbench"])
    p.add_argument("--samples", type=int, default=48)
    p.add_argument("--size", type=int, default=480, help="height of the overview in pixels")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))

    import bpy
    from PIL import Image, ImageDraw

    from dataset_tools.camera_plan import plan_cameras
    from dataset_tools.cameras import intrinsics, look_at
    from dataset_tools.config import RenderConfig
    from dataset_tools.examples import build_example
    from dataset_tools.render import prepared_scene, render_views

    scene = build_example("room")
    config = RenderConfig(n_train=16, n_val=0, width=96, height=96)  # the acceptance settings
    with prepared_scene(scene, config) as prep:
        placement = plan_cameras(prep, config, {"train": 16})
    poses = placement.poses["train"]
    seen = placement.scored["train"].objects >= 0.005
    shown: list[int] = []
    union = np.zeros(seen.shape[1], dtype=bool)
    for _ in range(4):  # the four views that together show the most content objects
        gain = (seen & ~union).sum(axis=1) + 1e-3 * seen.sum(axis=1)
        gain[shown] = -1
        shown.append(int(np.argmax(gain)))
        union |= seen[shown[-1]]
    shown.sort()

    size = args.size
    fov = 0.5
    top = look_at((0.0, 0.0, 18.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))
    ceiling = bpy.data.objects["Ceiling"]
    ceiling.hide_render = True
    over_cfg = replace(config, width=int(size * 6.4 / 5.4), height=size, camera_angle_x=fov, engine=args.engine,
                       samples=args.samples)
    overview = render_views(scene, over_cfg, poses=top[None]).rgba[0]
    ceiling.hide_render = False
    tile = size // 2
    tile_cfg = replace(config, width=tile, height=tile, engine=args.engine, samples=args.samples)
    views = render_views(scene, tile_cfg, poses=poses[shown]).rgba

    def flat(rgba: np.ndarray) -> Image.Image:
        a = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
        return Image.fromarray(rgb.round().astype(np.uint8))

    canvas = Image.new("RGB", (overview.shape[1] + 2 * tile + 12, size), "white")
    over = flat(overview)
    draw = ImageDraw.Draw(over)
    K = intrinsics(over_cfg.width, over_cfg.height, fov)
    eyes = poses[:, :3, 3]
    tips = eyes - 0.6 * poses[:, :3, 2]
    pe, pt = project(eyes, top, K), project(tips, top, K)
    for i in range(len(poses)):
        colour = (220, 30, 30) if i in shown else (20, 60, 200)
        draw.line([tuple(pe[i]), tuple(pt[i])], fill=colour, width=3)
        r = 5
        draw.ellipse([pe[i][0] - r, pe[i][1] - r, pe[i][0] + r, pe[i][1] + r], fill=colour)
        draw.text((pe[i][0] + 6, pe[i][1] - 14), str(i), fill=colour)
    canvas.paste(over, (0, 0))
    for k, i in enumerate(shown):
        x = overview.shape[1] + 12 + (k % 2) * tile
        y = (k // 2) * tile
        canvas.paste(flat(views[k]), (x, y))
        ImageDraw.Draw(canvas).text((x + 6, y + 4), f"view {i}", fill=(220, 30, 30))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} (views {shown} of 16; placement {placement.used})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
