"""``backend serve`` / ``backend submit`` / ``backend keys``: sub-commands of the job service.

Register them in the ``backend`` CLI with::

    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub); add_submit_parser(sub); add_keys_parser(sub)
    args = parser.parse_args(); return args.func(args)

This module and :mod:`backend.cli` are the only ones that import both the method and the service: the
server gets its job function (:func:`backend.method.job.run_job`, or ``--run-job module:function``) and its
resolved device from here.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from backend.progress_bars import ProgressBars
from backend.service.server import ConfigError, JobServer, JobServerConfig, load_run_job
from backend.wire.protocol import JobOptions, Limits

#: The job function ``backend serve`` runs unless ``--run-job`` names another.
DEFAULT_RUN_JOB = "backend.method.job:run_job"


# -- serve -------------------------------------------------------------------------------------


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    d = JobServerConfig()
    p.add_argument("--bind", default=d.bind,
                   help="ZeroMQ endpoint; loopback by default, other addresses need --keys, port * picks a free one "
                        "(default %(default)s)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--workdir", type=Path, default=d.workdir, help="folder of job states and results (default %(default)s)")
    p.add_argument("--keys", type=Path, default=None, help="CurveZMQ keys folder made by `backend keys DIR`")
    p.add_argument("--result-ttl", type=float, default=d.result_ttl_s,
                   help="seconds finished results stay fetchable (default %(default)s)")
    p.add_argument("--max-message-mb", type=float, default=d.limits.max_total_bytes / 2**20,
                   help="largest accepted message frame in MiB (default %(default)s)")
    p.add_argument("--client-timeout", type=float, default=d.client_timeout_s,
                   help="seconds of client silence that orphan a job (default %(default)s)")
    p.add_argument("--cancel-orphans", action="store_true", help="cancel jobs whose clients all went silent")
    p.add_argument("--run-job", default=DEFAULT_RUN_JOB, help="job function module:function (default %(default)s)")
    p.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="run the ZeroMQ job server (Blender add-on and `backend submit` talk to it)")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return p


def _job_function(spec: str, device: str):
    """The job function of ``spec`` with the server's resolved device bound when it takes one."""
    import functools
    import inspect

    fn = load_run_job(spec)
    if "device" in inspect.signature(fn).parameters:
        return functools.partial(fn, device=device)
    return fn


def cmd_serve(args: argparse.Namespace) -> int:
    from backend.method.trainer import resolve_device

    device = str(resolve_device(args.device))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    max_bytes = int(args.max_message_mb * 2**20)
    config = JobServerConfig(
        bind=args.bind, device=device, workdir=args.workdir, keys_dir=args.keys,
        result_ttl_s=args.result_ttl, client_timeout_s=args.client_timeout,
        cancel_orphaned_jobs=args.cancel_orphans, max_message_bytes=max_bytes,
        limits=Limits(max_total_bytes=max_bytes),
    )
    try:
        server = JobServer(config, _job_function(args.run_job, device))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: server.stop(timeout_s=0))
        server.start()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"listening on {server.endpoint}", flush=True)
    while server._thread.is_alive():  # signals are handled by the main thread between joins
        server._thread.join(0.2)
    return 0


# -- submit ------------------------------------------------------------------------------------


def add_submit_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("submit", help="send a Blender-HS / NeRF-synthetic folder to a job server")
    p.add_argument("data", type=Path, help="scene folder (transforms_train.json ...)")
    p.add_argument("--server", default="tcp://127.0.0.1:5557", help="server address")
    p.add_argument("--out", type=Path, required=True, help="output folder (points.ply, result.npz, hierarchy.json)")
    p.add_argument("--server-key", type=Path, default=None, help="server.key (public) for CurveZMQ")
    p.add_argument("--client-key", type=Path, default=None, help="client.key_secret for CurveZMQ")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds of server silence before giving up")
    d = JobOptions()
    p.add_argument("--preset", default=d.preset, choices=JobOptions.PRESETS)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--mask-source", default=d.mask_source, choices=JobOptions.MASK_SOURCES)
    p.add_argument("--geometry", default=d.geometry, choices=JobOptions.GEOMETRIES)
    p.add_argument("--thresholds", type=float, nargs="*", default=list(d.thresholds))
    p.add_argument("--max-points", type=int, default=d.max_points)
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=cmd_submit)
    return p


def cmd_submit(args: argparse.Namespace) -> int:
    """Load the folder's train split, submit it, show progress (tqdm on stderr), write the result
    like ``backend segment`` (``points.ply``, ``hierarchy.json``, ``result.npz``; paths on stdout).
    Ctrl-C cancels the job on the server. Exit codes: 0 done, 1 error, 130 interrupted."""
    from backend.service.client import JobClient, JobError, ServerUnavailable
    from backend.method.data import load_scene
    from backend.wire.protocol import ProtocolError
    from backend.wire.result_files import write_outputs

    options = JobOptions(
        preset=args.preset, iterations=args.iterations, mask_source=args.mask_source, geometry=args.geometry,
        thresholds=tuple(args.thresholds), max_points=args.max_points, device=args.device, seed=args.seed,
    )
    job = None
    try:
        options.validate()
        scene = load_scene(args.data, split="train")
        with JobClient(args.server, args.server_key, args.client_key, timeout_s=args.timeout) as client:
            job = client.submit(scene, options)
            print(f"job {job} accepted by {args.server} (queue position {client.accepted[job]})", file=sys.stderr)
            try:
                with ProgressBars() as bars:
                    result = client.wait(job, on_progress=bars)
            except KeyboardInterrupt:
                state = client.cancel(job)
                print(f"\ninterrupted: job {job} {state}", file=sys.stderr)
                return 130
    except KeyboardInterrupt:
        print("\ninterrupted" + (f" (job {job} keeps running on the server)" if job else ""), file=sys.stderr)
        return 130
    except (ServerUnavailable, JobError, ProtocolError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in write_outputs(result, args.out):
        print(path)
    return 0


# -- keys --------------------------------------------------------------------------------------


def add_keys_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("keys", help="create CurveZMQ server and client keypairs for remote use")
    p.add_argument("dir", type=Path, help="folder to create the keys in")
    p.add_argument("--force", action="store_true", help="replace existing keys")
    p.set_defaults(func=cmd_keys)
    return p


def cmd_keys(args: argparse.Namespace) -> int:
    from backend.service.keys import CLIENT_SECRET, SERVER_PUBLIC, KeysError, create_keys

    try:
        folder = create_keys(args.dir, overwrite=args.force)
    except KeysError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"server: backend serve --bind tcp://0.0.0.0:5557 --keys {folder}")
    print(f"client: give it {folder / SERVER_PUBLIC} and {folder / CLIENT_SECRET} "
          f"(backend submit ... --server-key {folder / SERVER_PUBLIC} --client-key {folder / CLIENT_SECRET})")
    return 0
