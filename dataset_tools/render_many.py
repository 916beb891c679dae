"""``dataset-tools render-many INPUTS... OUT_ROOT``: render many .blend files, locally or on a Ray cluster.

One task per .blend file. Every task runs the ordinary ``render`` command (``python -m dataset_tools render
BLEND OUT_ROOT/<name> <options> --quiet``) in its own process, so one Blender session holds one scene, a
crash or a bad file only fails its own task, and each folder resumes exactly as ``render`` does (finished
views are verified and skipped; a finished folder costs one Blender start-up and the file check).

- Inputs: globs (``scenes/*.blend``, ``**`` allowed), .blend paths, folders (their ``*.blend``) and text
  files listing one path or glob per line (``#`` comments; relative entries are relative to the list file).
- Output: ``OUT_ROOT/<stem>/`` per file; stems that occur more than once (or clash with ``logs`` or
  ``summary.json``) become ``<stem>-<8 hex digits of the sha1 of the absolute path>``, stable across runs.
  Each task's Blender output goes to ``OUT_ROOT/logs/<name>.log``; ``OUT_ROOT/summary.json`` and a table
  on stdout report every file (views, newly rendered views, seconds, status, error line).
- Local (default): ``--workers N`` subprocesses at a time (default min(cores, files)).
- Ray (``--ray ADDRESS|auto|local``): one Ray task per file with ``--cpus-per-task`` / ``--gpus-per-task``;
  OUT_ROOT (and the .blend files) must be on a filesystem every node sees at the same path, which each
  task checks through a probe file the driver writes.

Nothing here imports bpy: the driver stays light and Ray is an optional import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import DatasetError

EXIT_ERROR = 2
RAY_HINT = "pip install 'ultrametric-seg[ray]'"
#: Names in OUT_ROOT that are not per-file folders (a file stem equal to one gets the hash suffix).
RESERVED = {"logs", "summary.json"}
#: Options of ``render`` that render-many sets itself instead of forwarding.
NOT_FORWARDED = {"help", "blend", "out", "quiet", "threads"}
_GLOB_CHARS = re.compile(r"[*?\[]")
_COUNTS = re.compile(r"(\d+) views rendered, (\d+) already done")
_ERROR = "dataset-tools: error: "


# ----------------------------------------------------------------------------------------------- inputs


def _is_blend(path: Path) -> bool:
    if path.suffix.lower() == ".blend":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head.startswith(b"BLENDER") or head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd")


def _glob(pattern: str, base: Path) -> list[Path]:
    p = Path(pattern).expanduser()
    if not p.is_absolute():
        p = base / p
    anchor = Path(p.anchor)
    matches = sorted(q for q in anchor.glob(str(p.relative_to(anchor))) if q.is_file())
    if not matches:
        raise DatasetError(f"no files match {pattern}")
    return matches


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the list file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    out: list[Path] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if _GLOB_CHARS.search(entry):
            out += _glob(entry, path.parent)
        else:
            p = Path(entry).expanduser()
            out.append(p if p.is_absolute() else path.parent / p)  # a missing entry fails as its own task
    return out


def expand_inputs(items: list[str], cwd: str | Path | None = None) -> list[Path]:
    """The .blend files named by ``items`` (globs, .blend paths, folders, list files), absolute, in order,
    without repeats. A missing ``*.blend`` path is kept (its task fails with ``no such file``); a glob with
    no match or a missing list file raises :class:`DatasetError`."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    found: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        p = p if p.is_absolute() else base / p
        if p.is_dir():
            found += sorted(q for q in p.glob("*.blend") if q.is_file())
        elif p.is_file():
            found += [p] if _is_blend(p) else _read_list(p)
        elif _GLOB_CHARS.search(item):
            found += _glob(item, base)
        elif p.suffix.lower() == ".blend":
            found.append(p)
        else:
            raise DatasetError(f"no such file: {item} (expected .blend files, globs, folders or list files)")
    seen, out = set(), []
    for p in found:
        p = Path(os.path.abspath(p))
        if p not in seen:
            seen.add(p)
            out.append(p)
    if not out:
        raise DatasetError(f"no .blend files in {' '.join(items)}")
    return out


def output_names(blends: list[Path]) -> list[str]:
    """Folder name per file: the stem, or ``<stem>-<sha1(path)[:8]>`` for stems that occur more than once
    (case-insensitively) or clash with a reserved name. Depends only on each path, not on the order."""
    counts: dict[str, int] = {}
    for b in blends:
        counts[b.stem.casefold()] = counts.get(b.stem.casefold(), 0) + 1
    names = []
    for b in blends:
        stem = b.stem or "scene"
        if counts[b.stem.casefold()] > 1 or stem.casefold() in RESERVED or stem.startswith("."):
            stem = f"{stem}-{hashlib.sha1(str(b).encode()).hexdigest()[:8]}"
        names.append(stem)
    return names


# ------------------------------------------------------------------------------------- render options


def _forwardable(render_parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in render_parser._actions if a.option_strings and a.dest not in NOT_FORWARDED]


def _option_tokens(action: argparse.Action, value) -> list[str]:
    """Command-line tokens that make ``action`` parse to ``value`` (inverse of argparse for our options)."""
    longs = [s for s in action.option_strings if s.startswith("--")] or action.option_strings
    opt = longs[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        neg = [s for s in action.option_strings if s.startswith("--no-")]
        pos = [s for s in action.option_strings if not s.startswith("--no-")]
        return [pos[0]] if value else [neg[0]]
    if isinstance(action, argparse._StoreTrueAction):
        return [opt] if value else []
    if isinstance(action, argparse._StoreFalseAction):
        return [] if value else [opt]
    if isinstance(action, argparse._CountAction):
        return [opt] * int(value or 0)

    def text(v) -> str:
        if isinstance(v, (tuple, list)):  # a custom type that parses "a,b,c" (e.g. --rotations)
            return ",".join(text(x) for x in v)
        return repr(v) if isinstance(v, float) else str(v)

    if isinstance(action, argparse._AppendAction):
        return [t for v in value for t in (opt, text(v))]
    if isinstance(action, argparse._StoreAction):
        if action.nargs in (None, "?"):
            return [opt, text(value)]
        return [opt, *(text(v) for v in value)]
    raise TypeError(f"render-many cannot forward option {opt} ({type(action).__name__})")


def forwarded_options(args: argparse.Namespace, actions: list[argparse.Action]) -> list[str]:
    """The ``render`` options the user set (values other than the defaults), as command-line tokens."""
    out: list[str] = []
    for action in actions:
        value = getattr(args, action.dest, action.default)
        if value != action.default:
            out += _option_tokens(action, value)
    return out


_FIELD_OF = {"train": "n_train", "val": "n_val", "test": "n_test", "fov": "camera_angle_x"}


def check_render_options(args: argparse.Namespace, actions: list[argparse.Action]) -> None:
    """Validate the render options once, before any task starts (each ``render`` validates them again)."""
    from .config import RenderConfig

    names = {f.name for f in fields(RenderConfig)}
    kwargs: dict = {}
    for action in actions:
        value = getattr(args, action.dest, action.default)
        if action.dest == "res":
            kwargs["width"] = kwargs["height"] = value
        elif _FIELD_OF.get(action.dest, action.dest) in names:
            kwargs[_FIELD_OF.get(action.dest, action.dest)] = tuple(value) if isinstance(value, list) else value
    RenderConfig(**kwargs).validate()


def add_parser(sub, render_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``render-many`` to the CLI's subparsers; it takes every option of ``render_parser`` as well."""
    m = sub.add_parser("render-many", help="render many .blend files (local processes or a Ray cluster)",
                       description="Render one Blender-HS folder per .blend file into OUT_ROOT/<file stem>/, "
                                   "each in its own Blender process; rerun the same command to resume.")
    m.add_argument("inputs", nargs="+", metavar="LIST_OR_GLOB",
                   help="glob of .blend files ('scenes/*.blend'), .blend paths, folders, or text files listing "
                        "one .blend (or glob) per line")
    m.add_argument("out_root", metavar="OUT_ROOT",
                   help="output root: one folder per file (on a Ray cluster, a path shared by every node)")
    g = m.add_argument_group("scheduling")
    g.add_argument("--workers", type=int, default=None,
                   help="files rendered at once (default: min(cores, files); with --ray local: the CPUs of the "
                        "local Ray instance; with a cluster: at most this many tasks in flight)")
    g.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run as Ray tasks: 'auto' (the cluster this node belongs to), 'local' (start a Ray "
                        "instance here), or an address (host:6379, ray://host:10001)")
    g.add_argument("--cpus-per-task", type=float, default=1.0,
                   help="Ray CPUs per file (default %(default)s; also the render threads unless --threads)")
    g.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="Ray GPUs per file (default %(default)s; Blender sees only the GPUs Ray assigns)")
    r = m.add_argument_group("render options (as for `render`)")
    for action in render_parser._actions:
        if action.option_strings and action.dest != "help":
            r._add_action(action)
    m.set_defaults(_render_actions=_forwardable(render_parser))
    return m


# ----------------------------------------------------------------------------------------------- tasks


@dataclass
class FileResult:
    """What happened to one .blend file (a row of the summary)."""

    blend: str
    name: str
    out: str
    status: str = "pending"  # done (new views rendered), skipped (already complete), failed, interrupted
    views: int | None = None
    rendered: int | None = None
    seconds: float = 0.0
    error: str = ""
    returncode: int | None = None
    log: str = ""
    host: str = ""
    coverage: str = ""
    """The render's coverage line (``coverage: N of M content objects seen in >= 3 of K views ...``)."""


def _error_line(log_tail: str, returncode: int) -> str:
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(_ERROR):
            return ln[len(_ERROR):]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"the render process was killed by {name}"
    last = lines[-1] if lines else ""
    return f"render exited with status {returncode}" + (f": {last}" if last else "")


def _tail(path: Path, n: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_one(blend: str, name: str, out_root: str, options: list[str], probe: str | None = None,
            python: str | None = None, on_start=None) -> dict:
    """Render one file with ``python -m dataset_tools render`` in a child process; returns a FileResult dict.

    Runs in the driver's worker threads (local) or inside a Ray task (any node). ``probe`` is the name of
    a file in ``out_root`` that the driver wrote: a task that cannot see it is on a node without the shared
    output folder and fails without rendering. ``on_start(proc)`` receives the child process.
    """
    root = Path(out_root)
    res = FileResult(blend=blend, name=name, out=str(root / name), log=str(root / "logs" / f"{name}.log"),
                     host=socket.gethostname())
    t0 = time.perf_counter()
    if probe is not None and not (root / probe).is_file():
        res.status, res.error = "failed", (f"{out_root} is not visible on node {res.host}: OUT_ROOT must be on a "
                                           "filesystem shared by every node, at the same path")
        return asdict(res)
    log = Path(res.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python or sys.executable, "-m", "dataset_tools", "render", blend, res.out, *options, "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        if on_start is not None:
            on_start(proc)
        try:
            res.returncode = proc.wait()
        except BaseException:  # Ctrl-C in the driver, or a cancelled Ray task: stop the child too
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    res.seconds = time.perf_counter() - t0
    tail = _tail(log)
    if res.returncode == 0:
        m = None
        for m in _COUNTS.finditer(tail):
            pass
        if m is not None:
            res.rendered, res.views = int(m[1]), int(m[1]) + int(m[2])
        try:
            counts = json.loads((Path(res.out) / "meta.json").read_text())["counts"]
            res.views = int(sum(counts.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        res.status = "skipped" if res.rendered == 0 else "done"
        lines = [ln.strip() for ln in tail.splitlines() if ln.startswith("coverage: ")]
        res.coverage = lines[-1] if lines else ""
    elif res.returncode == 130:
        res.status, res.error = "interrupted", "interrupted (rerun the same command to resume)"
    else:
        res.status, res.error = "failed", _error_line(tail, res.returncode)
    return asdict(res)


# -------------------------------------------------------------------------------------------- runners


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class _Reporter:
    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet, self.done = total, quiet, 0

    def __call__(self, r: dict) -> None:
        self.done += 1
        if self.quiet:
            return
        what = r["error"] if r["status"] in ("failed", "interrupted") else \
            f"{r['views'] if r['views'] is not None else '?'} views ({r['rendered'] if r['rendered'] is not None else '?'} new)"
        print(f"render-many: [{self.done}/{self.total}] {r['name']}: {r['status']}, {what}, {r['seconds']:.1f} s",
              file=sys.stderr, flush=True)


def run_local(tasks: list[tuple[str, str]], out_root: Path, options: list[str], workers: int, report,
              results: dict[int, dict]) -> None:
    """Run ``tasks`` ((blend, name) pairs) with ``workers`` child processes at a time; fills ``results``."""
    procs: dict[int, subprocess.Popen] = {}
    lock = threading.Lock()

    def start(i, blend, name):
        def keep(proc):
            with lock:
                procs[i] = proc
        return run_one(blend, name, str(out_root), options, on_start=keep)

    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(start, i, b, n): i for i, (b, n) in enumerate(tasks)}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished:
                i = futures[fut]
                results[i] = fut.result()
                report(results[i])
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        with lock:
            running = [p for p in procs.values() if p.poll() is None]
        for p in running:
            p.terminate()
        for p in running:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    pool.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nobody listens on (Ray itself retries for minutes)."""
    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # let Ray interpret it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise DatasetError(f"cannot reach Ray at {address}: {exc.strerror or exc}") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise DatasetError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray


def run_ray(tasks: list[tuple[str, str]], out_root: Path, options: list[str], address: str,
            cpus_per_task: float, gpus_per_task: float, workers: int | None, report,
            results: dict[int, dict]) -> None:
    """One Ray task per file (``num_cpus=cpus_per_task``, ``num_gpus=gpus_per_task``); fills ``results``."""
    ray = _import_ray()
    import logging

    init = dict(logging_level=logging.WARNING, log_to_driver=False)
    _check_reachable(address)
    try:
        if address == "local":
            # a local instance binds to loopback only (nothing of it is reachable from, or talks to, the network)
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     object_store_memory=200 * 1024 * 1024, **init)
        else:
            ray.init(address=address, **init)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types (ConnectionError, RuntimeError, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = "" if address == "local" else (" (a cluster with token authentication, the default from Ray 2.59 "
                                               "on: set RAY_AUTH_MODE=token and the cluster's token in "
                                               "RAY_AUTH_TOKEN or ~/.ray/auth_token)")
        raise DatasetError(f"cannot start or reach Ray at {address!r}: {first}{hint}") from None
    probe = out_root / f".render-many-probe-{uuid.uuid4().hex}"
    refs: dict = {}
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= cpus_per_task and r.get("GPU", 0) >= gpus_per_task for r in nodes):
            largest = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
            raise DatasetError(f"no Ray node has {cpus_per_task:g} CPUs and {gpus_per_task:g} GPUs for one task "
                               f"(largest: {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs); "
                               "lower --cpus-per-task / --gpus-per-task")
        probe.write_text(socket.gethostname())
        remote = ray.remote(run_one).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=1,
                                              name="render-many")
        window = workers if (workers and address != "local") else len(tasks)
        queue = list(enumerate(tasks))
        while queue or refs:
            while queue and len(refs) < window:
                i, (blend, name) = queue.pop(0)
                refs[remote.remote(blend, name, str(out_root), options, probe.name)] = i
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                i = refs.pop(ref)
                blend, name = tasks[i]
                try:
                    results[i] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a lost worker or node, a failed import on the node
                    first = (str(exc).strip().splitlines() or [""])[0]
                    results[i] = asdict(FileResult(blend=blend, name=name, out=str(out_root / name),
                                                   status="failed", error=f"ray: {type(exc).__name__}: {first}"))
                report(results[i])
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)
        raise
    finally:
        probe.unlink(missing_ok=True)
        ray.shutdown()


# --------------------------------------------------------------------------------------------- summary


def format_table(results: list[dict]) -> str:
    """The summary as a text table; files are shown relative to the folder that holds them all."""
    rows = [("file", "folder", "views", "new", "seconds", "status", "error")]
    try:
        top = os.path.commonpath([os.path.dirname(r["blend"]) for r in results])
    except ValueError:
        top = ""
    for r in results:
        rows.append((os.path.relpath(r["blend"], top) if top else r["blend"], r["name"], "-" if r["views"] is None else str(r["views"]),
                     "-" if r["rendered"] is None else str(r["rendered"]), f"{r['seconds']:.1f}", r["status"],
                     r["error"]))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    right = {2, 3, 4}
    lines = []
    for row in rows:
        cells = [row[c].rjust(widths[c]) if c in right else row[c].ljust(widths[c]) for c in range(len(widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)


def write_summary(path: Path, summary: dict) -> None:
    from .writers import atomic_write

    atomic_write(path, (json.dumps(summary, indent=2) + "\n").encode())


# ------------------------------------------------------------------------------------------------ main


def main(args: argparse.Namespace) -> int:
    """The ``render-many`` command (called by :func:`dataset_tools.cli.main`; DatasetError propagates)."""
    actions = args._render_actions
    check_render_options(args, actions)
    if args.workers is not None and args.workers < 1:
        raise DatasetError(f"--workers must be >= 1, got {args.workers}")
    if args.cpus_per_task <= 0 or args.gpus_per_task < 0:
        raise DatasetError("--cpus-per-task must be > 0 and --gpus-per-task >= 0")
    if args.ray is None and args.gpus_per_task:
        raise DatasetError("--gpus-per-task needs --ray (local runs use the render's --device)")
    if args.ray is not None:
        _import_ray()  # fail before anything is written
    blends = expand_inputs(args.inputs)
    out_root = Path(os.path.abspath(Path(args.out_root).expanduser()))
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create output folder {out_root}: {exc.strerror or exc}") from None
    names = output_names(blends)
    tasks = [(str(b), n) for b, n in zip(blends, names)]
    options = forwarded_options(args, actions)
    if args.ray is None:
        workers = min(args.workers or _cores(), len(tasks))
        threads = args.threads or max(1, _cores() // workers)
    else:
        workers = args.workers
        threads = args.threads or max(1, int(args.cpus_per_task))
    options += ["--threads", str(threads)]

    t0 = time.perf_counter()
    summary = {"command": "render-many", "out_root": str(out_root), "mode": "ray" if args.ray else "local",
               "ray_address": args.ray, "workers": workers, "cpus_per_task": args.cpus_per_task,
               "gpus_per_task": args.gpus_per_task, "render_options": options,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report = _Reporter(len(tasks), args.quiet)
    if not args.quiet:
        where = f"Ray ({args.ray})" if args.ray else f"{workers} local worker{'s' * (workers != 1)}"
        print(f"render-many: {len(tasks)} file{'s' * (len(tasks) != 1)} -> {out_root} on {where}",
              file=sys.stderr, flush=True)
    interrupted, by_index = False, {}
    try:
        if args.ray is None:
            run_local(tasks, out_root, options, workers, report, by_index)
        else:
            run_ray(tasks, out_root, options, args.ray, args.cpus_per_task, args.gpus_per_task, workers, report,
                    by_index)
    except KeyboardInterrupt:
        interrupted = True
    results = [by_index.get(i) or asdict(FileResult(blend=b, name=n, out=str(out_root / n), status="interrupted",
                                                    error="interrupted (rerun the same command to resume)"))
               for i, (b, n) in enumerate(tasks)]
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    summary["counts"] = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed",
                                                                            "interrupted")}
    summary["files"] = [{**r, "seconds": round(r["seconds"], 3)} for r in results]
    write_summary(out_root / "summary.json", summary)
    print(format_table(results), flush=True)
    if interrupted:
        print("dataset-tools: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    failed = [r for r in results if r["status"] != "done" and r["status"] != "skipped"]
    if failed:
        first = failed[0]
        print(f"{_ERROR}{len(failed)} of {len(results)} files failed (first: {Path(first['blend']).name}: "
              f"{first['error']}); see {out_root / 'summary.json'}", file=sys.stderr)
        return EXIT_ERROR
    print(f"render-many: {len(results)} file{'s' * (len(results) != 1)} in {summary['seconds']:.1f} s "
          f"({summary['counts']['done']} rendered, {summary['counts']['skipped']} already complete)",
          file=sys.stderr)
    return 0
