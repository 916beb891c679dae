"""``backend serve`` / ``backend submit`` / ``backend keys``: sub-commands of the job service.

Register them in the ``backend`` CLI with::

    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub); add_submit_parser(sub); add_fetch_parser(sub); add_keys_parser(sub)
    args = parser.parse_args(); return args.func(args)

This module and :mod:`backend.cli` are the only ones that import both the method and the service: the
server gets its job function (:func:`backend.method.job.run_job`, or ``--run-job module:function``) and its
resolved device from here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from backend import arg_types as T
from backend.progress_bars import JobBar, ProgressBars, job_plan
from backend.service.server import ConfigError, JobServer, JobServerConfig, load_run_job
from backend.wire.protocol import JobOptions, Limits

#: The job function ``backend serve`` runs unless ``--run-job`` names another.
DEFAULT_RUN_JOB = "backend.method.job:run_job"
#: Its admission estimate (peak memory by stage from the declared size).
DEFAULT_ESTIMATE = "backend.method.job:estimate_peak_bytes"
#: Where ``backend submit`` / ``backend fetch`` keep this user's client token (jobs belong to it).
DEFAULT_TOKEN_FILE = Path.home() / ".config" / "ultrametric-seg" / "client_token"

EXIT_FAILED = 1  # the server or the job failed
EXIT_BAD_INPUT = 2  # bad command line or input files: one ``error:`` line


def _error(message: object, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def writable_folder(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be used as an output folder (None: it can). Folders made to test it are removed again."""
    made = []
    try:
        if path.exists() and not path.is_dir():
            return f"{what} {path} exists and is not a folder"
        missing = path
        while not missing.exists() and missing != missing.parent:
            made.append(missing)
            missing = missing.parent
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        return f"{what} {path} is not writable: {e.strerror or e}"
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
    return None


# -- serve -------------------------------------------------------------------------------------


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    d = JobServerConfig()
    p.add_argument("--bind", default=d.bind, type=T.endpoint,
                   help="ZeroMQ endpoint; loopback by default, other addresses need --keys, port * picks a free one "
                        "(default %(default)s)")
    p.add_argument("--device", default="auto", type=T.device,
                   help="torch device: auto, cpu, cuda, cuda:N (default %(default)s)")
    p.add_argument("--workdir", type=Path, default=d.workdir, help="folder of job states and results (default %(default)s)")
    p.add_argument("--keys", type=Path, default=None, help="CurveZMQ keys folder made by `backend keys DIR`")
    p.add_argument("--result-ttl", type=T.positive_float, default=d.result_ttl_s,
                   help="seconds finished results stay fetchable (default %(default)s)")
    p.add_argument("--max-message-mb", type=T.bounded(float, 0.01, 1 << 20), default=d.limits.max_total_bytes / 2**20,
                   help="largest accepted message frame in MiB (default %(default)s)")
    p.add_argument("--client-timeout", type=T.positive_float, default=d.client_timeout_s,
                   help="seconds of client silence that orphan a job (default %(default)s)")
    p.add_argument("--cancel-orphans", action="store_true", help="cancel jobs whose clients all went silent")
    p.add_argument("--run-job", default=DEFAULT_RUN_JOB, help="job function module:function (default %(default)s)")
    p.add_argument("--memory-budget-gb", type=T.positive_float, default=None,
                   help="refuse jobs whose estimated peak memory is above this (default: half of this machine's)")
    p.add_argument("--max-results", type=T.positive_int, default=d.max_finished_jobs,
                   help="most finished jobs kept with their results, oldest removed first (default %(default)s)")
    p.add_argument("--max-results-gb", type=T.positive_float, default=d.max_results_bytes / 2**30,
                   help="most GiB of finished jobs kept, oldest removed first (default %(default)s)")
    p.add_argument("--admin-key", type=Path, action="append", default=[],
                   help="a client's public key file (client.key) that may see, fetch and cancel every job; repeatable")
    p.add_argument("--executor", default="process", choices=["process", "local", "ray"],
                   help="where jobs run: process (a child process per job, one at a time: its exit returns the "
                        "job's memory, and a job that ignores a cancel is killed), local (a thread of this process) "
                        "or ray (one Ray task per job, several at once; pip install 'ultrametric-seg[ray]') "
                        "(default %(default)s)")
    p.add_argument("--ray-address", default="local",
                   help="with --executor ray: local (a Ray instance on this machine, loopback only), auto (the "
                        "cluster this machine belongs to) or HOST:PORT of a head node (default %(default)s)")
    p.add_argument("--max-jobs", type=T.positive_int, default=None,
                   help="jobs running at once (default: 1 with the local executor, 2 with ray)")
    p.add_argument("--cpus-per-job", type=T.positive_float, default=1.0,
                   help="with --executor ray: CPUs each job's task requests (default %(default)s)")
    p.add_argument("--gpus-per-job", type=T.bounded(float, 0, 64), default=0.0,
                   help="with --executor ray: GPUs each job's task requests; > 0 runs jobs on CUDA "
                        "(default %(default)s)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="logging level (default %(default)s)")


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
    """Exit codes: 0 stopped by a signal, 1 the server died of an unexpected error, 2 bad configuration."""
    from backend.arg_types import check_device_available
    from backend.method.trainer import resolve_device
    from backend.service.keys import KeysError, load_keypair

    if args.device != "auto" and (why := check_device_available(args.device)):
        return _error(why, EXIT_BAD_INPUT)
    device = str(resolve_device(args.device))
    if why := writable_folder(args.workdir, "--workdir"):
        return _error(why, EXIT_BAD_INPUT)
    if args.keys is not None and not args.keys.is_dir():
        return _error(f"--keys {args.keys} is not a folder: create keys with `backend keys {args.keys}`", EXIT_BAD_INPUT)
    try:
        admins = tuple(load_keypair(k, need_secret=False).public.decode("ascii") for k in args.admin_key)
    except KeysError as e:
        return _error(e, EXIT_BAD_INPUT)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    max_bytes = int(args.max_message_mb * 2**20)
    config = JobServerConfig(
        bind=args.bind, device=device, workdir=args.workdir, keys_dir=args.keys,
        result_ttl_s=args.result_ttl, client_timeout_s=args.client_timeout,
        cancel_orphaned_jobs=args.cancel_orphans, max_message_bytes=max_bytes,
        limits=Limits(max_total_bytes=max_bytes),
        memory_budget_bytes=None if args.memory_budget_gb is None else int(args.memory_budget_gb * 2**30),
        max_finished_jobs=args.max_results, max_results_bytes=int(args.max_results_gb * 2**30), admin_keys=admins,
        max_running=args.max_jobs or (2 if args.executor == "ray" else 1), shared_budget=args.executor != "ray",
    )
    try:
        run_job = _executor(args, device)
        estimate = load_run_job(DEFAULT_ESTIMATE) if args.run_job == DEFAULT_RUN_JOB else None
        server = JobServer(config, run_job, estimate=estimate)
    except ConfigError as e:
        return _error(e, EXIT_BAD_INPUT)
    stops = []

    def on_signal(*_) -> None:
        stops.append(1)
        if len(stops) > 1:  # a second Ctrl-C / SIGTERM: do not wait for the job, but leave no job "running"
            server.abandon("the server was stopped twice while the job was running; submit it again")
            sys.stderr.flush()
            os._exit(1)
        server.stop(timeout_s=0)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        server.start()
    except (ConfigError, KeysError) as e:
        return _error(e, EXIT_BAD_INPUT)
    except OSError as e:
        return _error(f"cannot start the server: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""),
                      EXIT_BAD_INPUT)
    except Exception as e:  # noqa: BLE001 - any other start-up failure: one line, no traceback
        return _error(f"cannot start the server: {type(e).__name__}: {e}", EXIT_BAD_INPUT)
    print(f"listening on {server.endpoint}", flush=True)
    while server._thread is not None and server._thread.is_alive():  # signals run in this thread between joins
        server._thread.join(0.2)
    code = 0
    if server.fatal_error is not None:
        code = _error(f"the server stopped on an unexpected error: {server.fatal_error!r}", EXIT_FAILED)
    if server.workers_alive():  # a local job still inside native code: it is left behind (marked failed)
        logging.getLogger("backend.service").warning("a job thread did not stop; exiting without waiting for it")
    # Every job's state is on disk and the socket is closed: exit now. The interpreter's own shutdown would tear
    # down torch and Open3D (2-3 s on a loaded machine) and abort under a job thread still in native code.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _executor(args: argparse.Namespace, device: str):
    """The job function of ``--executor`` / ``--run-job``; :class:`ConfigError` (one line) when it cannot be used."""
    load_run_job(args.run_job)  # a bad spec is refused at start, whichever executor imports it later
    if args.executor == "ray":
        from backend.service.executors import ExecutorError, RayConfig, ray_run_job, start_ray

        ray_cfg = RayConfig(address=args.ray_address, cpus_per_job=args.cpus_per_job, gpus_per_job=args.gpus_per_job)
        try:
            start_ray(ray_cfg)
            return ray_run_job(args.run_job, ray_cfg)
        except ExecutorError as e:
            raise ConfigError(str(e)) from None
    if args.executor == "process":
        from backend.service.job_process import process_run_job

        return process_run_job(args.run_job, device=device, on_peaks=_log_peaks)
    return _job_function(args.run_job, device)


def _log_peaks(peaks: dict) -> None:
    import threading

    text = ", ".join(f"{stage} {b / 2**30:.3f} GiB" for stage, b in peaks.items())
    logging.getLogger("backend.service").info("%s peak memory by stage: %s", threading.current_thread().name, text)


# -- submit ------------------------------------------------------------------------------------


def add_submit_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("submit", help="send a Blender-HS / NeRF-synthetic folder to a job server")
    p.add_argument("data", type=Path, help="scene folder (transforms_train.json ...)")
    _connection_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (points.ply, result.npz, hierarchy.json)")
    d = JobOptions()
    p.add_argument("--preset", default=d.preset, choices=JobOptions.PRESETS)
    p.add_argument("--iterations", type=T.bounded(int, 1, 10_000_000), default=d.iterations)
    p.add_argument("--mask-source", default=d.mask_source, choices=JobOptions.MASK_SOURCES)
    p.add_argument("--geometry", default=d.geometry, choices=JobOptions.GEOMETRIES)
    p.add_argument("--thresholds", type=T.thresholds, nargs="+", action=T.FlattenThresholds, metavar="T",
                   default=list(d.thresholds), help="cut thresholds (feature distances 1 - cos in (0, 2]), comma- or "
                   "space-separated")
    p.add_argument("--max-points", type=T.bounded(int, 1, 50_000_000), default=d.max_points)
    p.add_argument("--device", default=d.device, type=T.device)
    p.add_argument("--seed", type=T.seed, default=d.seed)
    p.set_defaults(func=cmd_submit)
    return p


def _connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default="tcp://127.0.0.1:5557", type=T.server_address,
                   help="server address tcp://HOST:PORT (default %(default)s)")
    p.add_argument("--server-key", type=Path, default=None, help="server.key (public) for CurveZMQ")
    p.add_argument("--client-key", type=Path, default=None, help="client.key_secret for CurveZMQ")
    p.add_argument("--timeout", type=T.positive_float, default=30.0,
                   help="seconds of server silence before giving up, also mid-job (default %(default)s)")
    p.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE,
                   help="this user's client token (made when missing); jobs submitted with it can be fetched "
                        "later with `backend fetch` (default %(default)s)")


def _client(args: argparse.Namespace):
    """A JobClient of the connection arguments; ValueError / OSError / KeysError for bad key or token files."""
    from backend.service.client import JobClient, load_client_token

    if (args.server_key is None) != (args.client_key is None):
        raise ValueError("CurveZMQ needs both --server-key and --client-key")
    token = load_client_token(args.token_file)
    return JobClient(args.server, args.server_key, args.client_key, timeout_s=args.timeout, client_token=token)


def cmd_submit(args: argparse.Namespace) -> int:
    """Load the folder's train split, submit it, show progress (tqdm on stderr), write the result
    like ``backend segment`` (``points.ply``, ``hierarchy.json``, ``result.npz``; paths on stdout).
    Ctrl-C cancels the job on the server. Exit codes: 0 done, 1 error, 130 interrupted."""
    from backend.method.data import DataError, load_scene
    from backend.core.scene import SceneError
    from backend.service.client import JobError, ServerUnavailable
    from backend.service.keys import KeysError
    from backend.wire.protocol import ProtocolError

    options = JobOptions(
        preset=args.preset, iterations=args.iterations, mask_source=args.mask_source, geometry=args.geometry,
        thresholds=tuple(sorted(args.thresholds)), max_points=args.max_points, device=args.device, seed=args.seed,
    )
    if why := writable_folder(args.out, "--out"):  # before the job runs, not after
        return _error(why, EXIT_BAD_INPUT)
    try:
        options.validate()
        scene = load_scene(args.data, split="train")
        client = _client(args)
    except (DataError, SceneError, ProtocolError, KeysError, OSError, ValueError) as e:
        return _error(e, EXIT_BAD_INPUT)
    job = None
    try:
        with client:
            job = client.submit(scene, options)
            print(f"job {job} accepted by {args.server} (queue position {client.accepted[job]}); if this command "
                  f"stops, get the result later with: backend fetch {job} --server {args.server} --out {args.out}",
                  file=sys.stderr)
            try:
                with JobBar(job_plan(scene, options)) as bar:
                    result = client.wait(job, on_progress=bar)
                    bar.finish()
            except KeyboardInterrupt:
                state = client.cancel(job)
                print(f"\ninterrupted: job {job} {state}", file=sys.stderr)
                return 130
    except KeyboardInterrupt:
        print("\ninterrupted" + (f" (job {job} keeps running on the server)" if job else ""), file=sys.stderr)
        return 130
    except (ServerUnavailable, JobError, ProtocolError, OSError, ValueError) as e:
        return _error(e, EXIT_FAILED)
    return _write_result(result, args.out, job)


def _write_result(result, out: Path, job: str) -> int:
    from backend.wire.result_files import write_outputs

    try:
        paths = write_outputs(result, out)
    except OSError as e:
        return _error(f"cannot write the result of job {job} to {out}: {e} (fetch it again with "
                      f"`backend fetch {job} --out DIR`)", EXIT_FAILED)
    for path in paths:
        print(path)
    return 0


# -- fetch -------------------------------------------------------------------------------------


def add_fetch_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("fetch", help="get the result of a job submitted earlier (by `backend submit`)")
    p.add_argument("job", help="job id (printed by `backend submit`)")
    _connection_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (points.ply, result.npz, hierarchy.json)")
    p.add_argument("--wait", action="store_true", help="wait for a job still queued or running (default: fail)")
    p.set_defaults(func=cmd_fetch)
    return p


def cmd_fetch(args: argparse.Namespace) -> int:
    """Write a job's result like ``backend submit``. Exit codes: 0 done, 1 server/job error, 2 bad input."""
    from backend.service.client import JobError, ServerUnavailable
    from backend.service.keys import KeysError
    from backend.wire.protocol import ProtocolError, check_job_id

    try:
        check_job_id(args.job)
    except ProtocolError as e:
        return _error(e.message, EXIT_BAD_INPUT)
    if why := writable_folder(args.out, "--out"):
        return _error(why, EXIT_BAD_INPUT)
    try:
        client = _client(args)
    except (KeysError, OSError, ValueError) as e:
        return _error(e, EXIT_BAD_INPUT)
    try:
        with client:
            if args.wait:
                with ProgressBars() as bars:
                    result = client.wait(args.job, on_progress=bars)
            else:
                result = client.fetch(args.job)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ServerUnavailable, JobError, ProtocolError, OSError, ValueError) as e:
        return _error(e, EXIT_FAILED)
    return _write_result(result, args.out, args.job)


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
        return _error(e, EXIT_BAD_INPUT)
    except OSError as e:
        return _error(f"cannot create keys in {args.dir}: {e.strerror or e}", EXIT_BAD_INPUT)
    print(f"server: backend serve --bind tcp://0.0.0.0:5557 --keys {folder}")
    print(f"client: give it {folder / SERVER_PUBLIC} and {folder / CLIENT_SECRET} "
          f"(backend submit ... --server-key {folder / SERVER_PUBLIC} --client-key {folder / CLIENT_SECRET})")
    return 0
