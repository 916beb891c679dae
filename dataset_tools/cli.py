"""Command line: ``dataset-tools render SCENE.blend OUT/`` and ``dataset-tools example NAME OUT.blend``.

Errors in the input (``DatasetError``) print one line on stderr and exit with status 2; Blender's own
log lines go to stdout. bpy is imported only when a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import math
import sys

from .config import DEFAULT_ROTATIONS, DEVICES, ENGINES, PLACEMENTS, RenderConfig
from .errors import DatasetError

EXIT_ERROR = 2


def _rotations(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated degrees, got {text!r}") from None
    if not values or not all(math.isfinite(v) and -360 <= v <= 360 for v in values):
        raise argparse.ArgumentTypeError(f"expected finite degrees in [-360, 360], got {text!r}")
    return values


def _int_at_least(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {text!r}")
        return v

    parse.__name__ = "int"
    return parse


def _finite_positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return v


def _names(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


class _DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default (appended where the help text does not state it)."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and _shown(action.default):
            import copy

            action = copy.copy(action)
            action.help = f"default: {_text(action.default)}"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or "default" in text.lower() or not _shown(action.default):
            return action.help
        return f"{text} (default: {_text(action.default)})"


def _shown(default) -> bool:
    return not (default is None or default is False or default is argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default))


def _text(default) -> str:
    shown = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default) \
        if isinstance(default, (list, tuple)) else str(default)
    return shown.replace("%", "%%")


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's ``--help`` shows the defaults; bad arguments end in one ``error:`` line, exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"dataset-tools: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ultrametric-seg")
    except PackageNotFoundError:
        return "unknown (not installed; run from a source tree)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dataset-tools", description="Blender-HS dataset tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = RenderConfig()
    r = sub.add_parser("render", help="render a Blender-HS folder from a .blend file")
    r.add_argument("blend", help="input .blend file")
    r.add_argument("out", help="output folder (created; an interrupted render resumes)")
    r.add_argument("--train", type=_int_at_least(1), default=d.n_train, help="training views (default %(default)s)")
    r.add_argument("--val", type=_int_at_least(0), default=d.n_val, help="validation views (default %(default)s)")
    r.add_argument("--test", type=_int_at_least(0), default=d.n_test, help="test views (default %(default)s)")
    r.add_argument("--res", type=_int_at_least(8, 16384), default=d.width, help="square image size in pixels (default %(default)s)")
    r.add_argument("--samples", type=_int_at_least(1), default=d.samples, help="Cycles samples (default %(default)s)")
    r.add_argument("--rotations", type=_rotations, default=DEFAULT_ROTATIONS,
                   help="val rotations in degrees (default 10,45,90,135)")
    r.add_argument("--seed", type=_int_at_least(0, 2**31 - 1), default=d.seed, help="camera and sampling seed (default %(default)s)")
    r.add_argument("--hemisphere", action=argparse.BooleanOptionalAction, default=d.hemisphere,
                   help="cameras on the upper hemisphere only (default on; --no-hemisphere: whole sphere)")
    r.add_argument("--engine", choices=sorted(ENGINES), default=d.engine, help="render engine (default %(default)s)")
    r.add_argument("--use-scene-cameras", action="store_true", help="use the scene's cameras as the train views")
    r.add_argument("--fov", type=_finite_positive, default=d.camera_angle_x, help="camera_angle_x in radians (default %(default)s)")
    r.add_argument("--frame", type=_names, default=d.frame, metavar="NAMES",
                   help="comma-separated collections or objects the cameras frame; '*' = everything "
                        "(default: everything but large flat backdrops such as a floor)")
    r.add_argument("--placement", choices=PLACEMENTS, default=d.placement,
                   help="where cameras go: orbit (the hemisphere around the content), inside (in an enclosed "
                        "room's free space), auto = inside when walls enclose the content, the hemisphere for a "
                        "tabletop, else views chosen by ray casts (default %(default)s)")
    r.add_argument("--threads", type=_int_at_least(0), default=0, help="render threads (0 = all cores)")
    r.add_argument("--device", choices=DEVICES, default=d.device,
                   help="Cycles device: auto = a GPU when Blender finds one, else CPU (default %(default)s)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    e = sub.add_parser("example", help="write a procedural example scene")
    e.add_argument("name", help="example name (table_set, bookshelf, vehicle, room, surroundings)")
    e.add_argument("out", help="output .blend path")
    from .render_many import add_parser as add_render_many  # render-many takes every render option above

    add_render_many(sub, r)
    return parser


class _ProgressBar:
    """A tqdm bar on stderr, created on the first update (so early errors print one clean line)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                self.enabled = False
                return
            self.bar = tqdm(total=total, unit="view", file=sys.stderr, dynamic_ncols=True)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "render-many":
            from .render_many import main as render_many

            return render_many(args)
        if args.command == "example":
            from .examples import write_example

            path = write_example(args.name, args.out)
            print(f"wrote {path}", file=sys.stderr)
            return 0
        config = RenderConfig(n_train=args.train, n_val=args.val, n_test=args.test, width=args.res, height=args.res,
                              samples=args.samples, engine=args.engine, rotations=tuple(args.rotations),
                              seed=args.seed, hemisphere=args.hemisphere, camera_angle_x=args.fov,
                              use_scene_cameras=args.use_scene_cameras, threads=args.threads,
                              device=args.device, frame=tuple(args.frame), placement=args.placement)
        config.validate()
        from .dataset import render_dataset

        bar = _ProgressBar(not args.quiet)
        try:
            result = render_dataset(args.blend, args.out, config, progress=bar)
        finally:
            bar.close()
        if result.coverage is not None:
            print(result.coverage.summary_line(), file=sys.stderr)
            warning = result.coverage.warning_line()
            if warning:
                print(warning, file=sys.stderr)
        print(f"{result.out_dir}: {result.rendered} views rendered, {result.skipped} already done, "
              f"{result.seconds:.1f} s", file=sys.stderr)
        return 0
    except DatasetError as exc:
        print(f"dataset-tools: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("dataset-tools: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
