"""Quality benchmark of issue #12: does the lifted hierarchy beat its own input masks?

Renders bundled example scenes (default: the closed ``room``, the ``surroundings`` and the demo's ``table_set``) with
the dataset tools, trains the ``cpu`` preset from each mask source (default: ``classical`` and ``noisy-gt``) for each
seed, evaluates with the honest evaluation (``backend.method.pipeline.evaluate_trained``: released Euclidean cuts +
whole-tree sweep; depth-geometry runs in the exact-geometry protocol) and prints ONE table: input masks, ours-2D,
ours-3D (+ whole-tree rows) and what the user receives (object recall and largest segment share at the exported
cuts), optional ablations and variants, mean +- std over seeds, plus wall time.

Defaults are what a user gets: the add-on's render (32 train views + 4 val views at 200 px) and the preset's own
iteration count (cpu: 1,500), VC at 10 degrees only. Measured on an idle 2-core machine: one scene, source and seed
takes about a minute (render ~40 s once per scene, training ~40 s, evaluation ~15 s), so the default 3 scenes x 2
sources x 3 seeds is about 20 minutes; on a shared, loaded machine several times longer. ``--views 16 --res 96
--iterations 800`` is the shrunk setting of the previous rounds' tables.

Variants (measured next to the baseline on the same data, seeds and evaluation):
  --train-variant NAME='{"reuse_negatives": true}'     TrainConfig overrides (dotted paths for nested fields); trains
  --seg-variant NAME='{"min_samples": 8}'              SegmentConfig overrides (``pointcloud.<field>``: PointCloudConfig);
                                                       re-segments the baseline field only
  --ablations                                          the paper's ablations (w/o ultrametric, w/o hierarchical sampling)
  --ablation-masks noisy-gt                            ... only for these mask sources
Results are appended to OUT/results.jsonl and reused on a rerun (delete it to recompute).

    python bench/bench_quality.py --out /tmp/bq --seeds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COLUMNS = ("NC_obj", "NC_coll", "NC_scene", "NC_mean", "NC_mean_dense", "SI", "VC_10")
EXPORT_COLUMNS = ("recall@cuts", "NC_obj@cut", "largest (fine..coarse)", "levels")
"""What the user receives (ours-3D rows): object recall at the exported cuts, the NC of points at the best exported
cut, the largest segment's share at each exported cut, and the exported thresholds."""
ROWS = ("input masks (2D)", "ours-2D", "ours-3D", "ours-2D (whole tree)", "ours-3D (whole tree)")


def render(scene: str, out: Path, views: int, res: int) -> Path:
    """Render a bundled example like ``backend demo`` does (child processes; bpy stays out of this one)."""
    data = out / "data" / f"{scene}_{views}v_{res}px"
    if (data / "transforms_val.json").is_file():
        return data
    blend = out / f"{scene}.blend"
    if not blend.is_file():
        subprocess.run([sys.executable, "-m", "dataset_tools", "example", scene, str(blend)], check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "dataset_tools", "render", str(blend), str(data), "--train", str(views),
                    "--val", "4", "--res", str(res), "--samples", "16", "--rotations", "10", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return data


def mask_config(source: str, settings: dict):
    """MaskConfig for ``source`` with ``settings`` ({source field: {setting: value}}) applied."""
    from backend.method.masks.base import MaskConfig

    mc = MaskConfig(source=source)
    for name, over in settings.items():
        mc = dataclasses.replace(mc, **{name: dataclasses.replace(getattr(mc, name), **over)})
    return mc


def parse_variants(items: list[str]) -> dict[str, dict]:
    out = {}
    for item in items:
        name, _, spec = item.partition("=")
        out[name] = json.loads(spec) if spec else {}
    return out


def load_results(path: Path) -> dict[tuple, dict]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[tuple(r["key"])] = r
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_quality"))
    ap.add_argument("--scenes", default="room,surroundings,table_set")
    ap.add_argument("--masks", default="classical,noisy-gt")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--views", type=int, default=32)
    ap.add_argument("--res", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=None, help="training iterations (default: the preset's)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--ablation-masks", default=None, metavar="SOURCES",
                    help="run the ablations only for these mask sources (default: every source in --masks)")
    ap.add_argument("--train-variant", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--seg-variant", action="append", default=[], metavar="NAME=JSON")
    ap.add_argument("--base", default="{}", metavar="JSON", help="TrainConfig overrides applied to every run")
    ap.add_argument("--base-seg", default="{}", metavar="JSON", help="SegmentConfig overrides for every run")
    ap.add_argument("--mask-settings", default="{}", metavar="JSON",
                    help='settings of the mask sources for every run, e.g. \'{"classical": {"use_depth": true}}\' '
                         '(MaskConfig fields; runs go to a folder of their own only when --out differs)')
    ap.add_argument("--no-whole-tree", action="store_true", help="leave the whole-tree rows out of the table")
    args = ap.parse_args(argv)

    import torch

    from backend.method.config import Ablation, PipelineConfig
    from backend.method.evaluation import EvalConfig
    from backend.method.pipeline import evaluate_trained, load_trained, train_run

    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = load_results(results_path)
    base_train, base_seg = json.loads(args.base), json.loads(args.base_seg)
    mask_settings = json.loads(args.mask_settings)
    train_variants = {"base": {}} | parse_variants(args.train_variant)
    if args.ablations:
        train_variants["no-ultrametric"] = {"__ablation__": "ultrametric"}
        train_variants["no-hierarchical-sampling"] = {"__ablation__": "hierarchical_sampling"}
    seg_variants = parse_variants(args.seg_variant)
    if args.iterations is None:
        from backend.wire.presets import preset_iterations

        args.iterations = preset_iterations(args.preset)
    start = time.monotonic()
    for scene in args.scenes.split(","):
        data = render(scene, args.out, args.views, args.res)
        for source in args.masks.split(","):
            for seed in range(args.seeds):
                for tv, over in train_variants.items():
                    over = dict(over)
                    ab = over.pop("__ablation__", None)
                    if ab and args.ablation_masks and source not in args.ablation_masks.split(","):
                        continue
                    todo = [("", {})] + ([(n, s) for n, s in seg_variants.items()] if tv == "base" else [])
                    todo = [(n, s) for n, s in todo if (scene, source, seed, tv, n) not in done]
                    if not todo:
                        continue
                    cfg = PipelineConfig(preset=args.preset, iterations=args.iterations, device="cpu", seed=seed,
                                         masks=mask_config(source, mask_settings),
                                         ablation=Ablation(**{ab: False}) if ab else Ablation(),
                                         train_overrides=base_train | over)
                    cfg = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, **base_seg))
                    run = args.out / "runs" / f"{data.name}" / source / tv / f"seed{seed}"
                    t0 = time.monotonic()
                    if (run / "checkpoint.pt").is_file():
                        trainer, sc, _, _, _ = load_trained(run, data)
                    else:
                        trainer, sc, _ = train_run(data, run, cfg)
                    t_train = time.monotonic() - t0
                    for sv, sover in todo:
                        t1 = time.monotonic()
                        pc = {k.split(".", 1)[1]: v for k, v in sover.items() if k.startswith("pointcloud.")}
                        sg = {k: v for k, v in sover.items() if not k.startswith("pointcloud.")}
                        c = dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, **sg),
                                                pointcloud=dataclasses.replace(cfg.pointcloud, **pc))
                        ev = evaluate_trained(trainer, sc, data, c, EvalConfig(rotations=(10.0,), seed=seed),
                                              with_input_masks=(tv == "base" and sv == ""))
                        rec = {"key": [scene, source, seed, tv, sv], "rows": ev.rows, "protocol": ev.protocol,
                               "exported": None if ev.exported is None else ev.exported.as_json(),
                               "train_s": t_train, "eval_s": time.monotonic() - t1,
                               "iterations": trainer.step}
                        with results_path.open("a") as fh:
                            fh.write(json.dumps(rec, default=float) + "\n")
                        done[tuple(rec["key"])] = rec
                        print(f"  {scene} {source} seed {seed} {tv}{'/' + sv if sv else ''}: "
                              f"3D NC_mean {100 * ev.rows['ours-3D']['NC_mean']:.1f}  2D {100 * ev.rows['ours-2D']['NC_mean']:.1f}"
                              f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    print(table(done, args, train_variants, seg_variants))
    print(f"\nwall time {time.monotonic() - start:.0f} s (cached results reused: see {results_path})")
    return 0


def export_cells(recs: list[dict]) -> list[str]:
    """The EXPORT_COLUMNS cells: mean +- std over seeds; per-cut shares and levels of the first seed."""
    reps = [r["exported"] for r in recs if r.get("exported")]
    if not reps:
        return ["-"] * len(EXPORT_COLUMNS)

    def stat(xs: list) -> str:
        a = 100.0 * np.array([x for x in xs if x is not None], float)
        return f"{a.mean():.1f} ± {a.std():.1f}" if len(a) else "-"

    first = reps[0]["cuts"]
    return [stat([r["recall_any"] for r in reps]), stat([r["nc_best"].get("object") for r in reps]),
            "/".join(f"{100 * c['largest_share']:.0f}" for c in first),
            "/".join(f"{c['threshold']:.2g}" for c in first)]


def table(done: dict, args, train_variants: dict, seg_variants: dict) -> str:
    """One Markdown table: mean +- std over seeds of every row, scene and mask source."""
    lines = [f"{args.views} train views at {args.res} px, {args.iterations} iterations, preset {args.preset}, "
             f"seeds 0..{args.seeds - 1}, VC at 10 degrees; mean +- std over seeds (n = seeds found)\n",
             "| scene | masks | row | n | " + " | ".join(COLUMNS + EXPORT_COLUMNS) + " | train s | protocol |",
             "|---" * (len(COLUMNS) + len(EXPORT_COLUMNS) + 6) + "|"]
    rows = [r for r in ROWS if not (args.no_whole_tree and "whole" in r)]
    for scene in args.scenes.split(","):
        for source in args.masks.split(","):
            keys = []
            for r in rows:
                keys.append(("base", "", r, r))
            for tv in train_variants:
                if tv != "base":
                    for r in ("ours-2D", "ours-3D"):
                        keys.append((tv, "", r, f"{r} [{tv}]"))
            for sv in seg_variants:
                keys.append(("base", sv, "ours-3D", f"ours-3D [{sv}]"))
            for tv, sv, r, label in keys:
                recs = [done[k] for k in done if k[:2] == (scene, source) and k[3] == tv and k[4] == sv]
                vals = [rec["rows"].get(r) for rec in recs]
                vals = [v for v in vals if v]
                if not vals:
                    continue
                cells = []
                for c in COLUMNS:
                    xs = np.array([v.get(c, np.nan) if v.get(c) is not None else np.nan for v in vals], float)
                    xs = 100.0 * xs[np.isfinite(xs)]  # fractions -> percent
                    cells.append(f"{xs.mean():.1f} ± {xs.std():.1f}" if len(xs) else "-")
                cells += export_cells(recs if r == "ours-3D" else [])
                ts = np.mean([rec["train_s"] for rec in recs])
                lines.append(f"| {scene} | {source} | {label} | {len(vals)} | " + " | ".join(cells)
                             + f" | {ts:.0f} | {recs[0]['protocol']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
