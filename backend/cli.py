"""The ``backend`` command: train, segment, eval, demo (method) and serve, submit, keys (job service).

Bad input (missing folders, inconsistent files, a run of another scene, unknown presets) prints one
``error: ...`` line on stderr and exits with status 2; an interrupted training (Ctrl-C) keeps its
checkpoint and exits with 130, and the same command resumes it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from backend import arg_types as T
from backend.wire.presets import DEFAULT_EXPORT_THRESHOLDS
from backend.progress_bars import ProgressBars

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------
def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    from backend.method.masks.base import PROVIDERS

    from backend.wire import presets

    p.add_argument("--preset", default=presets.DEFAULT_TRAIN_PRESET, choices=presets.PRESET_NAMES,
                   help=f"training preset (default %(default)s). {presets.describe(presets.PRESETS)}")
    p.add_argument("--iterations", type=T.bounded(int, 1, 10_000_000), default=None,
                   help="override the preset's iterations")
    p.add_argument("--mask-source", "--masks", dest="masks", default="classical", choices=sorted(PROVIDERS),
                   help="2D mask source (default %(default)s; sam needs --sam-checkpoint; noisy-gt is an evaluation "
                        "aid that reads the ground truth)")
    p.add_argument("--sam-checkpoint", type=Path, default=None, help="segment-anything checkpoint (vit_h/l/b .pth)")
    p.add_argument("--geometry", default="auto", choices=["auto", "depth", "nerf"],
                   help="depth: given depth is the geometry; nerf: learn density (default auto)")
    p.add_argument("--device", default="auto", type=T.device, help="torch device: auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--seed", type=T.seed, default=0, help="random seed of sampling and initialisation")
    p.add_argument("--max-views", type=T.positive_int, default=None,
                   help="use only the first N training views (recorded in run.json; segment and eval reuse it)")
    p.add_argument("--no-ultrametric", action="store_true", help="ablation: Euclidean contrastive loss only")
    p.add_argument("--no-hierarchical-sampling", action="store_true", help="ablation: all masks on one level")
    p.add_argument("--no-depth-continuity", action="store_true", help="ablation: no depth continuity loss")


class DeviceError(ValueError):
    """The asked-for torch device is not available here."""


def _device(name: str) -> str:
    from backend.method.trainer import resolve_device

    if name != "auto" and (why := T.check_device_available(name)):
        raise DeviceError(why)
    return str(resolve_device(name))


def _pipeline_config(args: argparse.Namespace):
    from backend.method.masks.base import MaskConfig
    from backend.method.masks.sam import SamConfig
    from backend.method.config import Ablation, PipelineConfig

    masks = MaskConfig(source=args.masks)
    if args.sam_checkpoint is not None:
        masks.sam = SamConfig(checkpoint=str(args.sam_checkpoint))
    return PipelineConfig(preset=args.preset, iterations=args.iterations, geometry=args.geometry,
                          device=_device(args.device), seed=args.seed, masks=masks,
                          ablation=Ablation(ultrametric=not args.no_ultrametric,
                                            hierarchical_sampling=not args.no_hierarchical_sampling,
                                            depth_continuity=not args.no_depth_continuity))


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions: one ``error:`` line and exit status 2; ``--help`` shows the
    defaults (every subcommand: subparsers are of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", T.DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from backend.service_cli import add_fetch_parser, add_keys_parser, add_serve_parser, add_submit_parser

    parser = Parser(prog="backend", description="Ultrametric feature fields: view-consistent "
                                     "hierarchical 3D segmentation from inconsistent 2D masks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {T.package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="make masks and train the ultrametric feature field (resumable)")
    t.add_argument("data", type=Path, help="Blender-HS / NeRF-synthetic folder")
    t.add_argument("run", type=Path, help="run folder (checkpoints; an interrupted run resumes)")
    _add_training_arguments(t)
    t.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("segment", help="3D-segment a trained run: PLYs, hierarchy.json, a contact sheet per view, "
                       "the granularity sweep (GIF)")
    s.add_argument("run", type=Path, help="run folder made by `backend train`")
    s.add_argument("--thresholds", type=T.thresholds, nargs="+", action=T.FlattenThresholds, default=None,
                   metavar="T", help="cut thresholds written to the outputs: feature distances (1 - cos) in (0, 2], "
                   "comma- or space-separated (default " + ",".join(f"{t:g}" for t in DEFAULT_EXPORT_THRESHOLDS)
                   + ": the released code's Euclidean cuts 0.1-0.5)")
    s.add_argument("--out", type=Path, default=None, help="output folder (default RUN/segmentation)")
    s.add_argument("--data", type=Path, default=None, help="dataset folder if it moved since training")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("eval", help="NC / SI / VC / depth error on the val split, as a Markdown table")
    e.add_argument("data", type=Path, help="Blender-HS folder with ground truth (gt_seg, hierarchy.json)")
    e.add_argument("run", type=Path, help="run folder made by `backend train` on DATA")
    e.add_argument("--out", type=Path, default=None, help="where eval.md / eval.json go (default RUN)")
    e.add_argument("--ablations", action="store_true",
                   help="also train and score --no-ultrametric, --no-hierarchical-sampling, --no-depth-continuity")
    e.add_argument("--max-views", type=T.positive_int, default=None, help="evaluate only the first N val views")
    e.add_argument("--protocol", default="auto", choices=["auto", "paper", "exact-geometry"],
                   help="paper: predictions from the model alone (novel-view depth rendered by the field; nerf runs); "
                        "exact-geometry: exact rendered depth for every view, as in Blender; auto: paper for nerf "
                        "runs, exact-geometry for depth runs (default %(default)s)")
    e.add_argument("--max-threshold", type=T.bounded(float, 0.01, 2), default=0.5,
                   help="largest fixed cut, as the released code's Euclidean distance between unit features "
                        "(cuts 0.01, 0.02, ... MAX; default %(default)s)")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="render the bundled example, train on CPU, segment, evaluate (< 10 min)")
    d.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    d.add_argument("--example", default="table_set", help="example scene (table_set, bookshelf, vehicle)")
    d.add_argument("--views", type=T.positive_int, default=32, help="training views (default %(default)s)")
    d.add_argument("--res", type=T.bounded(int, 8, 8192), default=128, help="image size (default %(default)s)")
    d.add_argument("--masks", default="classical", help="mask source (classical, classical-colour, noisy-gt)")
    d.add_argument("--iterations", type=T.bounded(int, 1, 10_000_000), default=3000, help="training iterations (default %(default)s)")
    d.add_argument("--device", default="auto", type=T.device)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    add_serve_parser(sub)
    add_submit_parser(sub)
    add_fetch_parser(sub)
    add_keys_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from backend.method.pipeline import train_run

    with ProgressBars(not args.quiet) as bars:
        train_run(args.data, args.run, _pipeline_config(args), progress=bars, resume=not args.restart,
                  max_views=args.max_views)
    print(f"trained: {args.run} (checkpoint.pt); next: backend segment {args.run}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from backend.method.pipeline import segment_run

    with ProgressBars(not args.quiet) as bars:
        out = segment_run(args.run, args.thresholds, args.out, data=args.data, progress=bars)
    print(f"segmentation written to {out} (points.ply, points_segments.ply, hierarchy.json, result.npz, "
          "views/*_sheet.png, sweep.gif)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from backend.method.evaluation import EvalConfig
    from backend.method.pipeline import evaluate_run

    with ProgressBars(not args.quiet) as bars:
        md = evaluate_run(args.data, args.run, args.out, ablations=args.ablations,
                          eval_cfg=EvalConfig(max_views=args.max_views, max_threshold=args.max_threshold,
                                             protocol=args.protocol),
                          progress=bars)
    print(md.read_text())
    print(f"written: {md}")
    return 0


def _render_example(name: str, out: Path, views: int, res: int, quiet: bool) -> Path:
    """Render the example scene with the dataset tools in a child process (bpy stays out of this one)."""
    blend = out / f"{name}.blend"
    data = out / "data"
    if not blend.is_file():
        subprocess.run([sys.executable, "-m", "dataset_tools", "example", name, str(blend)], check=True,
                       stdout=subprocess.DEVNULL)
    cmd = [sys.executable, "-m", "dataset_tools", "render", str(blend), str(data), "--train", str(views),
           "--val", "4", "--res", str(res), "--samples", "16", "--rotations", "10,45"]
    if quiet:
        cmd.append("--quiet")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return data


def cmd_demo(args: argparse.Namespace) -> int:
    from backend.method.evaluation import EvalConfig
    from backend.method.masks.base import MaskConfig
    from backend.method.config import PipelineConfig
    from backend.method.pipeline import evaluate_run, segment_run, train_run

    start = time.monotonic()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] rendering the '{args.example}' example ({args.views} views, {args.res}px) -> {out / 'data'}",
          flush=True)
    try:
        data = _render_example(args.example, out, args.views, args.res, args.quiet)
    except subprocess.CalledProcessError as e:
        print(f"error: rendering the example failed (exit {e.returncode}); run "
              f"`python -m dataset_tools render` by hand to see why", file=sys.stderr)
        return EXIT_ERROR
    cfg = PipelineConfig(preset="cpu", iterations=args.iterations, device=_device(args.device),
                         masks=MaskConfig(source=args.masks))
    run = out / "run"
    with ProgressBars(not args.quiet) as bars:
        print(f"[2/4] masks ({args.masks}) and training (preset cpu) -> {run}", flush=True)
        train_run(data, run, cfg, progress=bars)
        bars.close()
        print(f"[3/4] 3D segmentation -> {run / 'segmentation'}", flush=True)
        seg = segment_run(run, progress=bars)
        bars.close()
        print("[4/4] evaluation (NC / SI / VC)", flush=True)
        md = evaluate_run(data, run, out, eval_cfg=EvalConfig(rotations=(10.0, 45.0)), progress=bars)
    print(md.read_text())
    print(f"demo finished in {time.monotonic() - start:.0f} s. Everything is in {out.resolve()}:\n"
          f"  {seg / 'points.ply'} (seg_t<threshold> labels), {seg / 'points_segments.ply'} (coloured by segment;\n"
          f"  opens in Blender, MeshLab, CloudCompare), {seg / 'hierarchy.json'}\n"
          f"  {seg / 'views'} (a contact sheet per view), {seg / 'sweep.gif'} (fine to coarse)\n  {md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from backend.method.data import DataError
    from backend.method.masks.errors import MaskSourceError
    from backend.core.scene import SceneError
    from backend.method.config import ConfigError
    from backend.method.pipeline import RunError

    parser = build_parser()
    args = parser.parse_args(argv)
    from backend.method.trainer import TrainError

    known = (DataError, RunError, SceneError, MaskSourceError, ConfigError, TrainError, DeviceError)
    try:
        return int(args.func(args) or 0)
    except known as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # a run / output folder that is a file, read-only, on a full disk...
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as e:  # a truncated train_config.json / results file read by the pipeline
        if type(e).__name__ not in ("JSONDecodeError", "BadZipFile", "UnpicklingError"):
            raise
        print(f"error: a file of the run is truncated or corrupted: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; what was computed is kept (run the same command to resume)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
