"""``backend serve``: the ZeroMQ job service.

One ROUTER socket, owned by the thread running :meth:`JobServer.serve_forever`, answers clients
(DEALER) with the messages of :mod:`backend.wire.protocol`. Jobs queue and run one at a time on the
server's device in a worker thread through one injectable function (:data:`RunJob`); the worker
talks back only through a thread-safe queue plus a wake-up socketpair polled next to the ROUTER
(zmq sockets are not thread-safe), so the poll loop never blocks on work.

Every job has a folder ``workdir/<job>/`` with ``state.json`` (rewritten on each state change),
``result.npz`` + ``result.json`` when done (kept ``result_ttl_s``, and only the newest ``max_finished_jobs`` /
``max_results_bytes``) and ``error.log`` when it failed; everything else a job wrote there (checkpoints, caches)
is removed when it ends. A server restarted after dying mid-job marks such jobs ``failed`` (code ``job_failed``).

The service survives its users: a job whose estimated peak memory (from its declared size, before any work)
exceeds ``memory_budget_bytes`` is refused (``too_large``); each client's unread replies are bounded
(``send_hwm`` messages, results shared zero-copy) and a client that does not read has its requests dropped
for ``slow_client_s``; a full disk fails the job or the submit, never the server; a job belongs to the client
that submitted it (its CurveZMQ public key, else its ``client_token``, else the routing id the ROUTER assigned
to its connection; never a routing id the client chose), other clients are told ``unknown_job`` and job ids are
per owner (``admin_keys`` see everything). The ``process`` executor (:mod:`backend.service.job_process`) runs
each job in a child process.

Binding anything but loopback (or ipc://) requires CurveZMQ keys (:mod:`backend.service.keys`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib
import ipaddress
import json
import logging
import math
import os
import queue
import secrets
import shutil
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from backend.wire import protocol as P
from backend.wire.protocol import ErrorCode, JobOptions, JobResult, Limits, ProgressEvent
from backend.wire.files import write_json_atomic
from backend.wire.result_files import RESULT_JSON, RESULT_NPZ, has_result, load_result, save_result
from backend.core.scene import Scene, SceneError
from backend.service.scene_transfer import scene_from_submit

log = logging.getLogger("backend.service.server")

#: The job function: ``run_job(scene, options, progress, should_stop, workdir) -> JobResult``.
#: ``progress`` may be called from any thread; ``should_stop()`` turns True on cancel (poll it at
#: least every ~0.5 s and return or raise promptly); ``workdir`` is the job's own folder.
RunJob = Callable[[Scene, JobOptions, Callable[[ProgressEvent], None], Callable[[], bool], Path], JobResult]

STATE_FILE = "state.json"
ERROR_LOG = "error.log"
#: Files of a finished job's folder that are kept (everything else, e.g. checkpoints, is removed at its end).
KEPT_FILES = frozenset({STATE_FILE, ERROR_LOG, RESULT_NPZ, RESULT_JSON})
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass(frozen=True)
class JobSize:
    """What a submit declares about its size (known before any work)."""

    views: int
    height: int
    width: int
    masks: int = 0
    """2D masks sent with the scene (all views)."""
    depth: bool = False

    @property
    def pixels(self) -> int:
        return self.views * self.height * self.width


#: ``estimate(size, options) -> {stage: peak bytes}`` of a job (admission control; injected like the job).
EstimateJob = Callable[[JobSize, JobOptions], dict]


def generic_estimate(size: JobSize, options: JobOptions) -> dict:
    """Peak bytes by stage of a job that holds its scene and a few per-pixel arrays (the default; ``backend
    serve`` injects :func:`backend.method.job.estimate_peak_bytes` for the real pipeline)."""
    scene = size.pixels * (4 + 4 + 4 * 4) + size.masks * size.height * size.width
    return {"input": 2 * scene, "work": 2 * scene + size.pixels * 64 + options.max_points * 64}


def fitting_hint(estimate: EstimateJob, size: JobSize, options: JobOptions, budget: int) -> str:
    """What would fit the budget, by the same estimate: the largest square views (same count) and the most views (same
    size), each checked (the estimate need not be linear in pixels)."""
    def fits(s: JobSize) -> bool:
        return max(estimate(s, options).values()) <= budget

    def largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
        """Largest x in [lo, hi] with ok(x) (ok monotone decreasing), lo - 1 when none."""
        if not ok(lo):
            return lo - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    per_view_masks = size.masks / max(size.views, 1)
    side = largest(1, max(size.height, size.width),
                   lambda x: fits(dataclasses.replace(size, height=x, width=x)))
    views = largest(1, size.views, lambda v: fits(dataclasses.replace(size, views=v,
                                                                       masks=int(round(per_view_masks * v)))))
    hints = []
    if side >= 1:
        hints.append(f"{size.views} views of {side}x{side} pixels would fit")
    if 1 <= views < size.views:
        hints.append(f"{views} views of {size.height}x{size.width} would fit")
    if not hints:
        return "even one 1x1 view would not fit: raise --memory-budget-gb"
    return "send fewer or smaller views (" + "; ".join(hints) + ")"


def physical_memory_bytes() -> int:
    """This machine's physical memory (16 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def owner_id(kind: str, value: str) -> str:
    """Stored form of a job owner (a hash: state files never hold client tokens)."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]


def is_router_assigned(identity: bytes) -> bool:
    """Whether a routing id is of the form a ROUTER gives a peer that set none (a zero byte and a 32-bit counter
    from a random start). A client may mimic the form, but not guess the value of another connection."""
    return len(identity) == 5 and identity[0] == 0


def job_key(owner: str | None, job: str) -> str:
    """The server's name of a job (its folder): the client's job id within its owner, so one client's ids say
    nothing about another's (``.`` is not in the id alphabet: keys never collide with bare ids)."""
    return job if owner is None else f"{job}.{owner[:16]}"


def _disk_message(e: OSError) -> str:
    if e.errno in _DISK_FULL:
        return f"the server's disk is full ({e.strerror or e}); free space in its --workdir or lower --max-results-gb"
    return f"the server cannot write its workdir: {type(e).__name__}: {e}"


class ConfigError(ValueError):
    """The server configuration is unsafe or inconsistent."""


#: Seconds a stopping server waits for running jobs to end (the process executor kills its jobs within 1 s).
SHUTDOWN_WAIT_S = 3.0
#: Default admission budget: this fraction of the machine's physical memory.
DEFAULT_MEMORY_FRACTION = 0.5
#: The real pipeline's job function (what ``backend serve`` runs unless told otherwise).
DEFAULT_RUN_JOB_SPEC = "backend.method.job:run_job"


class State:
    """Job states (strings in ``state.json`` and :class:`backend.wire.protocol.JobInfo`)."""

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (DONE, FAILED, CANCELLED)


@dataclass
class JobServerConfig:
    """Configuration of :class:`JobServer` (``backend serve`` flags map onto these fields)."""

    bind: str = "tcp://127.0.0.1:5557"
    """ZeroMQ endpoint; ``tcp://127.0.0.1:*`` picks a free port (see :attr:`JobServer.endpoint`)."""
    device: str = "cpu"
    """Device jobs run on, as reported in status replies (``backend serve`` resolves ``auto`` before starting:
    the service itself never imports torch)."""
    workdir: Path = field(default_factory=lambda: Path.home() / ".cache" / "ultrametric-seg" / "jobs")
    """Folder of per-job folders (state, results, logs)."""
    result_ttl_s: float = 24 * 3600.0
    """How long finished jobs (and their results) stay fetchable."""
    limits: Limits = field(default_factory=Limits)
    """Bounds incoming messages are validated against."""
    max_message_bytes: int | None = None
    """ZMQ_MAXMSGSIZE (largest frame accepted; larger ones drop the peer); None: from ``limits``."""
    keys_dir: Path | None = None
    """CurveZMQ keys folder (:func:`backend.service.keys.create_keys`); required for non-loopback binds."""
    heartbeat_s: float = 2.0
    """ZMTP heartbeat interval, detecting dead TCP peers."""
    client_timeout_s: float = 60.0
    """A job whose clients have all been silent this long is orphaned (clients ping while waiting)."""
    cancel_orphaned_jobs: bool = False
    """Cancel orphaned jobs (default: let them finish; their results stay fetchable)."""
    max_queue: int = 32
    """Most jobs waiting (beyond the running ones)."""
    max_running: int = 1
    """Jobs run at once: 1 on one device; more when the job function spreads them over a cluster
    (``backend serve --executor ray``, :mod:`backend.service.executors`)."""
    status_max_jobs: int = 100
    """Most jobs listed in a status reply (newest first)."""
    poll_interval_s: float = 0.1
    """Housekeeping period of the loop (orphans, expiry, stop requests)."""
    memory_budget_bytes: int | None = None
    """Admission control: a job whose estimated peak memory exceeds this is refused (``too_large``) before any
    work; None: :data:`DEFAULT_MEMORY_FRACTION` of this machine's physical memory."""
    max_finished_jobs: int = 200
    """Most finished jobs kept (with their results); the oldest are removed first."""
    max_results_bytes: int = 10 * 2**30
    """Most bytes of finished jobs' folders kept; the oldest are removed first."""
    admin_keys: tuple[str, ...] = ()
    """CurveZMQ public keys (Z85 text) whose clients see and may fetch / cancel every job."""
    send_hwm: int = 64
    """Most replies queued for one client connection (ZMQ_SNDHWM); more are dropped."""
    slow_client_s: float = 2.0
    """A client whose queued replies reached ``send_hwm`` has its requests dropped for this long."""
    shared_budget: bool = True
    """Jobs running at once (``max_running`` > 1) share ``memory_budget_bytes``: a queued job waits until its
    estimate fits beside the running ones' (False when jobs run on other machines, e.g. a Ray cluster)."""

    def budget(self) -> int:
        if self.memory_budget_bytes is not None:
            return int(self.memory_budget_bytes)
        return int(DEFAULT_MEMORY_FRACTION * physical_memory_bytes())

    def validate(self) -> None:
        """Raise :class:`ConfigError` for unsafe or impossible settings."""
        if not is_local_endpoint(self.bind) and self.keys_dir is None:
            raise ConfigError(
                f"binding {self.bind} exposes the server beyond this machine and requires CurveZMQ keys: "
                "create them with `backend keys DIR` and start with `backend serve --keys DIR`"
            )
        for name in ("result_ttl_s", "client_timeout_s", "heartbeat_s", "poll_interval_s", "slow_client_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("max_queue", "max_running", "status_max_jobs", "max_finished_jobs", "max_results_bytes",
                     "send_hwm"):
            if not getattr(self, name) >= 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.memory_budget_bytes is not None and not self.memory_budget_bytes > 0:
            raise ConfigError(f"memory_budget_bytes must be > 0, got {self.memory_budget_bytes!r}")
        if self.max_message_bytes is not None and not self.max_message_bytes >= 1024:
            raise ConfigError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes!r}")
        if self.keys_dir is not None and not Path(self.keys_dir).is_dir():
            raise ConfigError(f"keys folder {self.keys_dir} does not exist: create it with `backend keys {self.keys_dir}`")
        wd = Path(self.workdir)
        if wd.exists() and not wd.is_dir():
            raise ConfigError(f"workdir {wd} exists and is not a folder")


def is_local_endpoint(endpoint: str) -> bool:
    """Whether a bind endpoint is reachable only from this machine (loopback TCP, ipc, inproc)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp" or ";" in rest:
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", interface names, host names
        return False


def load_run_job(spec: str) -> RunJob:
    """Import ``module:function`` (e.g. ``backend.method.job:run_job``); :class:`ConfigError` names what is wrong
    (no colon, a module that cannot be imported, no such function, not callable), never a traceback."""
    module, colon, name = str(spec).partition(":")
    if not colon or not module or not name or not name.isidentifier() \
            or not all(part.isidentifier() for part in module.split(".")):
        raise ConfigError(f"--run-job must be module:function (e.g. {DEFAULT_RUN_JOB_SPEC}), got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"--run-job {spec}: cannot import {module}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a module that fails while importing
        raise ConfigError(f"--run-job {spec}: importing {module} failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise ConfigError(f"--run-job {spec}: module {module} has no {name}")
    if not callable(fn):
        raise ConfigError(f"--run-job {spec}: {module}.{name} is a {type(fn).__name__}, not a function")
    return fn


def server_version() -> str:
    try:
        from importlib.metadata import version

        return version("ultrametric-seg")
    except Exception:  # noqa: BLE001 - not installed
        return "0+unknown"


# ----------------------------------------------------------------------------------------------
# Jobs and worker events


@dataclass
class _Job:
    """The server's record of one job (main-thread state, except ``cancel``)."""

    job: str
    state: str
    created: float
    updated: float
    options: JobOptions = field(default_factory=JobOptions)
    scene: Scene | None = None
    subscribers: set[bytes] = field(default_factory=set)
    cancel: threading.Event = field(default_factory=threading.Event)
    stage: str = ""
    step: int = 0
    total: int = 0
    queue_position: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    owner: str | None = None
    """:func:`owner_id` of the submitting client (None: a job of an older server, visible to admins only)."""
    started: float | None = None
    """Monotonic time the job started running (for the log)."""
    disk_bytes: int = 0
    """Bytes of its folder once finished (the results cap)."""
    peak_bytes: int = 0
    """Its estimated peak memory (admission control)."""
    key: str = ""
    """The server's name of the job and its folder (:func:`job_key`; set from ``job`` and ``owner`` when empty)."""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = job_key(self.owner, self.job)

    def info(self) -> P.JobInfo:
        return P.JobInfo(
            job=self.job, state=self.state, stage=self.stage, step=self.step, total=self.total,
            queue_position=self.queue_position, created=self.created, updated=self.updated,
            error_code=self.error_code, error_message=self.error_message,
        )

    def state_json(self) -> dict:
        return {
            "job": self.job, "state": self.state, "created": self.created, "updated": self.updated,
            "stage": self.stage, "step": self.step, "total": self.total,
            "error_code": self.error_code, "error_message": self.error_message,
            "options": dataclasses.asdict(self.options), "owner": self.owner,
        }


@dataclass(frozen=True)
class _ProgressPosted:
    job: str
    event: ProgressEvent


@dataclass(frozen=True)
class _JobEnded:
    job: str
    state: str
    result: JobResult | None = None
    error_code: str | None = None
    error_message: str | None = None


# ----------------------------------------------------------------------------------------------
# Server


class JobServer:
    """The job service. ``serve_forever()`` in the calling thread, or ``start()``/``stop()`` for a
    background thread (tests, embedding). All zmq sockets live in the serving thread."""

    def __init__(self, config: JobServerConfig, run_job: RunJob, estimate: EstimateJob | None = None):
        config.validate()
        self.config = config
        self.run_job: RunJob = run_job
        self.estimate: EstimateJob = estimate or generic_estimate
        self.fatal_error: BaseException | None = None
        self._slow: dict[bytes, float] = {}
        self._results: OrderedDict[str, JobResult] = OrderedDict()  # shared by every queued Result reply
        self._req_owner: str | None = None
        self._req_admin = False
        self.device = config.device
        self.workdir = Path(config.workdir)
        self.endpoint: str | None = None
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._running: dict[str, threading.Thread] = {}  # job id -> its worker thread
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._last_seen: dict[bytes, float] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_error: BaseException | None = None
        self._sock: zmq.Socket | None = None
        self._last_sweep = 0.0
        self._last_peak = 0
        self.version = server_version()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> "JobServer":
        """Serve in a background thread; returns once bound (``endpoint`` set)."""
        self._thread = threading.Thread(target=self.serve_forever, name="job-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the job server did not start")
        if self._start_error is not None:
            raise self._start_error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the loop to end (running job cancelled, unfinished jobs marked failed) and wait."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def workers_alive(self) -> bool:
        """Whether a job's worker thread is still running (e.g. a local job inside native code at shutdown)."""
        return any(t.is_alive() for t in list(self._running.values()))

    def abandon(self, message: str) -> None:
        """Mark every unfinished job failed on disk now (a second signal: the process exits right after, without
        the loop's shutdown). Safe to call from a signal handler; clients are not told (they see the server go)."""
        self._stop.set()
        for rec in list(self._jobs.values()):
            if rec.state not in State.FINISHED:
                rec.state, rec.error_code, rec.error_message = State.FAILED, ErrorCode.JOB_FAILED, message
                rec.updated = time.time()
                self._write_state(rec)

    def __enter__(self) -> "JobServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Bind and serve until :meth:`stop` (or a signal handler calling it)."""
        ctx = zmq.Context()
        auth = None
        try:
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
                self._recover()
                sock, auth = self._bind(ctx)
            except BaseException as e:  # a start-up failure: start() raises it; the caller reports it
                self._start_error = e
                self._ready.set()
                if self._thread is threading.current_thread():
                    return  # start() raises it in its caller, which reports it (one line, no traceback here)
                raise
            self._sock = sock
            self._ready.set()
            log.info("job server on %s (device %s, workdir %s)", self.endpoint, self.device, self.workdir)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_r.fileno(), zmq.POLLIN)
            while not self._stop.is_set():
                try:
                    self._iteration(poller, sock)
                except zmq.ContextTerminated:
                    raise
                except Exception:  # noqa: BLE001 - a bug or a full disk must not stop the service
                    log.exception("error in the server loop; it goes on")
                    time.sleep(0.05)
            self._shutdown()
        except BaseException as e:
            if self._ready.is_set() and not isinstance(e, (KeyboardInterrupt, SystemExit)):
                log.exception("the job server stopped on an unexpected error")
            self.fatal_error = e
            raise
        finally:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
            if auth is not None:
                auth.stop()
            ctx.term()

    def _iteration(self, poller: zmq.Poller, sock: zmq.Socket) -> None:
        ready = dict(poller.poll(int(self.config.poll_interval_s * 1000)))
        if ready.get(self._wake_r.fileno()):
            self._drain_wake()
        self._handle_events()
        if ready.get(sock):
            for _ in range(100):  # bounded, so worker events stay prompt
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._handle_frames(frames)
                self._handle_events()
        self._housekeeping()

    def _bind(self, ctx: zmq.Context) -> tuple[zmq.Socket, object | None]:
        cfg = self.config
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting with its routing id takes over
        max_msg = cfg.max_message_bytes or (cfg.limits.max_total_bytes + cfg.limits.max_header_bytes)
        sock.setsockopt(zmq.MAXMSGSIZE, int(max_msg))
        sock.setsockopt(zmq.SNDHWM, int(cfg.send_hwm))  # per client connection; beyond it replies are dropped
        hb = int(cfg.heartbeat_s * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, hb)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * hb)
        auth = None
        if cfg.keys_dir is not None:
            from zmq.auth.thread import ThreadAuthenticator

            from backend.service.keys import KeysError, server_keypair

            try:
                keys, authorized = server_keypair(Path(cfg.keys_dir))
            except KeysError as e:
                sock.close(linger=0)
                raise ConfigError(str(e)) from None
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("backend.service.server.auth"))
            auth.start()
            auth.configure_curve(domain="*", location=str(authorized))
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_server = True
        try:
            sock.bind(cfg.bind)
        except zmq.ZMQError as e:
            sock.close(linger=0)
            if auth is not None:
                auth.stop()
            raise ConfigError(f"cannot bind {cfg.bind}: {e}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.endpoint.startswith("ipc://"):
            try:  # only this user may connect (the file is made by libzmq with the umask)
                os.chmod(self.endpoint[len("ipc://"):], 0o600)
            except OSError as e:
                log.warning("cannot restrict %s: %s", self.endpoint, e)
        return sock, auth

    def _shutdown(self) -> None:
        # The running job sees should_stop() (self._stop is set) and ends as failed, not cancelled. A job that has not
        # ended by the deadline (a local job inside native code) is left behind: marked failed below, and
        # ``backend serve`` exits without waiting for its thread.
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        for worker in list(self._running.values()):
            worker.join(max(0.0, deadline - time.monotonic()))
        self._handle_events()
        for rec in list(self._jobs.values()):
            if rec.state not in State.FINISHED:
                self._finish(rec, State.FAILED, ErrorCode.JOB_FAILED, "the server stopped before the job finished")

    # -- persistence --------------------------------------------------------------------------

    def _write_state(self, rec: _Job) -> str | None:
        """Persist the job's state; on a full (or failing) disk log it and return the reason (the server goes on
        with the state in memory)."""
        try:
            folder = self.workdir / rec.key
            folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(folder / STATE_FILE, rec.state_json())
        except OSError as e:
            log.error("job %s: cannot write its state: %s", rec.job, e)
            return _disk_message(e)
        return None

    def _prune(self, rec: _Job) -> None:
        """Remove what a finished job left besides its state, log and result (checkpoints, caches); note its size."""
        folder = self.workdir / rec.key
        total = 0
        try:
            for path in folder.iterdir():
                if path.name in KEPT_FILES and path.is_file():
                    total += path.stat().st_size
                elif path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("job %s: cannot clean its folder: %s", rec.job, e)
        rec.disk_bytes = total

    def _remove(self, rec: _Job) -> None:
        shutil.rmtree(self.workdir / rec.key, ignore_errors=True)
        self._jobs.pop(rec.key, None)
        self._results.pop(rec.key, None)

    def _recover(self) -> None:
        """Load jobs left on disk; unfinished ones died with a previous server: mark them failed."""
        now = time.time()
        for folder in sorted(self.workdir.iterdir()):
            path = folder / STATE_FILE
            if not path.is_file():
                continue
            try:
                st = json.loads(path.read_text(), parse_constant=_no_constant)
                rec = _Job(job=str(st["job"]), state=str(st["state"]), created=float(st["created"]),
                           updated=float(st["updated"]), stage=str(st.get("stage", "")),
                           error_code=_opt_str(st.get("error_code")), error_message=_opt_str(st.get("error_message")),
                           owner=_opt_str(st.get("owner")), key=folder.name)
                if not (math.isfinite(rec.created) and math.isfinite(rec.updated)):
                    raise ValueError("non-finite timestamps")
                if folder.name not in (rec.job, job_key(rec.owner, rec.job)) or rec.state not in (State.QUEUED, State.RUNNING, State.CANCELLING,
                                                               *State.FINISHED):
                    raise ValueError(f"job {rec.job!r} in state {rec.state!r} does not belong in {folder.name}")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                # A folder we cannot account for would block its id and never expire: remove it.
                log.warning("removing job folder %s with an unreadable %s: %s", folder, STATE_FILE, e)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if rec.state not in State.FINISHED:
                if has_result(folder):
                    rec.state = State.DONE
                else:
                    rec.state, rec.error_code = State.FAILED, ErrorCode.JOB_FAILED
                    rec.error_message = (f"the server stopped while the job was {st['state']} "
                                         f"(at stage {rec.stage or 'start'}); submit it again")
                rec.updated = now
                self._write_state(rec)
            self._prune(rec)
            self._jobs[rec.key] = rec
        self._expire(now)

    def _expire(self, now: float) -> None:
        """Remove finished jobs past the TTL, then the oldest ones beyond the count and bytes caps."""
        finished = sorted((r for r in self._jobs.values() if r.state in State.FINISHED), key=lambda r: r.updated)
        keep = []
        for rec in finished:
            if now - rec.updated > self.config.result_ttl_s:
                self._remove(rec)
            else:
                keep.append(rec)
        total = sum(r.disk_bytes for r in keep)
        while keep and (len(keep) > self.config.max_finished_jobs or total > self.config.max_results_bytes):
            rec = keep.pop(0)
            total -= rec.disk_bytes
            log.info("job %s removed (results cap: %d jobs, %d bytes)", rec.job, self.config.max_finished_jobs,
                     self.config.max_results_bytes)
            self._remove(rec)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, identity: bytes, msg: P.Message, validate: bool = True) -> bool:
        try:
            frames = P.encode(msg, self.config.limits if validate else P.Limits(max_total_bytes=2**62), validate)
        except P.ProtocolError as e:  # a bug in the server or the job: tell the client
            log.error("cannot encode %s: %s", msg.TYPE, e)
            frames = P.encode(P.Error(code=ErrorCode.INTERNAL, message=f"server could not encode its reply: {e.message}",
                                      job=getattr(msg, "job", None)))
        try:
            self._sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            if identity not in self._slow:
                log.warning("client %s is not reading its replies; dropping them and its requests for %.0f s",
                            identity.hex(), self.config.slow_client_s)
            self._slow[identity] = time.monotonic()
        except zmq.ZMQError as e:
            if e.errno != zmq.EHOSTUNREACH:
                raise
            # Not connected now; it may reconnect with the same routing id (subscriptions kept;
            # orphaned jobs are judged by client_timeout_s).
        return False

    def _publish(self, rec: _Job, msg: P.Message) -> None:
        for identity in list(rec.subscribers):
            self._send(identity, msg, validate=not isinstance(msg, P.Result))

    # -- requests -----------------------------------------------------------------------------

    def _handle_frames(self, frames: list) -> None:
        if len(frames) < 2:
            return  # no identity + message: nothing to answer
        identity = frames[0].bytes
        now = time.monotonic()
        self._last_seen[identity] = now
        slow = self._slow.get(identity)
        if slow is not None:
            if now - slow < self.config.slow_client_s:
                return  # it does not read its replies: drop its requests (bounded memory)
            del self._slow[identity]
        try:
            msg = P.decode(frames[1:], self.config.limits, accept=P.CLIENT_TYPES)
        except P.ProtocolError as e:
            self._send(identity, P.Error(code=e.code, message=e.message, job=e.job))
            return
        user = None
        try:
            user = frames[1].get("User-Id")  # the client's CurveZMQ public key (Z85), set by the authenticator
        except (zmq.ZMQError, AttributeError, UnicodeDecodeError):
            pass
        token = getattr(msg, "client_token", None)
        if user:
            self._req_owner = owner_id("key", user)
        elif token:
            self._req_owner = owner_id("token", token)
        elif is_router_assigned(identity):
            # No token, no key, no routing id of its own (the Blender add-on): the ROUTER's id for the connection
            # (random 32-bit start, never shown to any client) owns its jobs for as long as it is connected.
            self._req_owner = owner_id("connection", identity.hex())
        else:
            # No token, no key, a routing id the client chose (and could have copied from another): nothing
            # identifies it, so each such request gets a server-assigned identity of its own. Its submit's progress
            # and result reach the submitting connection; status / fetch / cancel by id need a token.
            self._req_owner = owner_id("anonymous", secrets.token_hex(16))
        self._req_admin = bool(user) and user in self.config.admin_keys
        try:
            handler = {
                P.Submit: self._on_submit, P.Cancel: self._on_cancel, P.Status: self._on_status,
                P.Ping: self._on_ping, P.Fetch: self._on_fetch,
            }[type(msg)]
            handler(identity, msg)
        except Exception as e:  # noqa: BLE001 - a bug must not stop the service
            log.exception("error handling %s", msg.TYPE)
            self._send(identity, P.Error(code=ErrorCode.INTERNAL, message=f"{type(e).__name__}: {e}",
                                         job=getattr(msg, "job", None)))

    def _visible(self, job: str) -> _Job | None:
        """The requesting client's job of that id (an admin: anyone's, the newest), else None (others' jobs look
        unknown)."""
        if self._req_admin:
            recs = [r for r in self._jobs.values() if r.job == job]
            return max(recs, key=lambda r: r.created) if recs else None
        for key in (job_key(self._req_owner, job), job):  # the bare id: a folder of an older server
            rec = self._jobs.get(key)
            if rec is not None and rec.owner == self._req_owner:
                return rec
        return None

    def _sees(self, rec: _Job) -> bool:
        return self._req_admin or rec.owner == self._req_owner

    def _unknown(self, identity: bytes, job: str) -> None:
        self._send(identity, P.Error(code=ErrorCode.UNKNOWN_JOB,
                                     message=f"no job {job} (unknown, expired, or submitted by another client)", job=job))

    def _admit(self, msg: P.Submit) -> str | None:
        """Why the job cannot run within the memory budget (None: it can), from its declared size alone; its estimated
        peak is kept in ``_last_peak`` (jobs running at once share the budget, see :meth:`_start_next`)."""
        n, h, w = msg.rgb.shape[:3]
        size = JobSize(views=int(n), height=int(h), width=int(w),
                       masks=sum(int(m.shape[0]) for m in msg.masks) if msg.masks else 0, depth=msg.depth is not None)
        peaks = self.estimate(size, msg.options)
        stage, peak = max(peaks.items(), key=lambda kv: kv[1])
        budget = self.config.budget()
        self._last_peak = int(peak)
        if peak <= budget:
            return None
        return (f"job {msg.job} ({n} views of {h}x{w}) would need about {peak / 2**30:.1f} GiB at its {stage} stage, "
                f"over this server's memory budget of {budget / 2**30:.1f} GiB (`backend serve --memory-budget-gb`); "
                + fitting_hint(self.estimate, size, msg.options, budget))

    def _on_ping(self, identity: bytes, msg: P.Ping) -> None:
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):  # Windows has no load average
            load = 0.0
        self._send(identity, P.Pong(token=msg.token, device=self.device, cpu_cores=os.cpu_count() or 0,
                                    load=round(float(load), 2)))

    def _on_submit(self, identity: bytes, msg: P.Submit) -> None:
        key = job_key(self._req_owner, msg.job)
        if self._visible(msg.job) is not None or (self.workdir / key).exists():  # only the client's own ids
            self._send(identity, P.Error(code=ErrorCode.DUPLICATE_JOB, message=f"job {msg.job} exists; use a new id", job=msg.job))
            return
        if len(self._queue) >= self.config.max_queue:
            self._send(identity, P.Error(code=ErrorCode.QUEUE_FULL,
                                         message=f"{len(self._queue)} jobs are queued (max {self.config.max_queue}); retry later",
                                         job=msg.job))
            return
        refused = self._admit(msg)
        if refused is not None:
            log.info("job %s refused: %s", msg.job, refused)
            self._send(identity, P.Error(code=ErrorCode.TOO_LARGE, message=refused, job=msg.job))
            return
        try:
            scene = scene_from_submit(msg)
        except SceneError as e:
            self._send(identity, P.Error(code=ErrorCode.BAD_SCENE, message=str(e), job=msg.job))
            return
        options = msg.options if msg.options.device else dataclasses.replace(msg.options, device=self.device)
        now = time.time()
        rec = _Job(job=msg.job, state=State.QUEUED, created=now, updated=now, options=options, scene=scene,
                   subscribers={identity}, owner=self._req_owner, peak_bytes=self._last_peak)
        failed = self._write_state(rec)
        if failed is not None:  # e.g. a full disk: refuse the job rather than keep it "queued" forever
            shutil.rmtree(self.workdir / rec.key, ignore_errors=True)
            self._send(identity, P.Error(code=ErrorCode.JOB_FAILED, message=f"job {rec.job} not stored: {failed}",
                                         job=rec.job))
            return
        self._jobs[rec.key] = rec
        self._queue.append(rec.key)
        position = len(self._queue) - 1 + self._ahead()
        self._send(identity, P.Accepted(job=rec.job, queue_position=position))  # before any progress
        self._start_next()
        self._announce_queue()

    def _on_cancel(self, identity: bytes, msg: P.Cancel) -> None:
        rec = self._visible(msg.job)
        if rec is None:
            self._unknown(identity, msg.job)
            return
        if rec.state == State.QUEUED:
            self._queue.remove(rec.key)
            self._finish(rec, State.CANCELLED, ErrorCode.CANCELLED, "cancelled while queued")
            self._announce_queue()
        elif rec.state == State.RUNNING:
            rec.cancel.set()
            rec.state = State.CANCELLING
            rec.updated = time.time()
        self._send(identity, P.CancelAck(job=rec.job, state=rec.state))

    def _on_status(self, identity: bytes, msg: P.Status) -> None:
        if msg.job is not None:
            rec = self._visible(msg.job)
            if rec is None:
                self._unknown(identity, msg.job)
                return
            jobs = [rec.info()]
        else:
            recs = sorted((r for r in self._jobs.values() if self._sees(r)), key=lambda r: r.created, reverse=True)
            jobs = [r.info() for r in recs[: self.config.status_max_jobs]]
        queue_ = [self._jobs[k].job for k in self._queue if self._sees(self._jobs[k])]
        running = next((self._jobs[k].job for k in self._running if self._sees(self._jobs[k])), None)  # the oldest
        self._send(identity, P.StatusReply(device=self.device, server_version=self.version, jobs=jobs,
                                           queue=queue_, running=running))

    def _on_fetch(self, identity: bytes, msg: P.Fetch) -> None:
        rec = self._visible(msg.job)
        if rec is None:
            self._unknown(identity, msg.job)
        elif rec.state == State.DONE:
            try:
                result = self._result(rec.key)
            except (OSError, ValueError) as e:
                self._send(identity, P.Error(code=ErrorCode.JOB_FAILED, message=f"result of {rec.job} unreadable: {e}", job=rec.job))
                return
            self._send(identity, P.Result(job=rec.job, arrays=result.arrays, meta=result.meta), validate=False)
        elif rec.state in State.FINISHED:
            self._send(identity, P.Error(code=rec.error_code or ErrorCode.JOB_FAILED,
                                         message=rec.error_message or rec.state, job=rec.job))
        elif msg.wait:
            rec.subscribers.add(identity)
            if rec.state == State.QUEUED:
                self._send(identity, self._queued_progress(rec))
            else:
                self._send(identity, P.Progress(job=rec.job, stage=rec.stage or "running", step=rec.step, total=rec.total))
        else:
            self._send(identity, P.Error(code=ErrorCode.NOT_READY, message=f"job {rec.job} is {rec.state}", job=rec.job))

    def _result(self, key: str) -> JobResult:
        """A finished job's result, cached: every queued reply of it shares the same (zero-copy) buffers."""
        result = self._results.get(key)
        if result is None:
            result = load_result(self.workdir / key)
            self._cache_result(key, result)
        self._results.move_to_end(key)
        return result

    def _cache_result(self, key: str, result: JobResult) -> None:
        self._results[key] = result
        while len(self._results) > 4:
            self._results.popitem(last=False)

    # -- queue and worker ---------------------------------------------------------------------

    def _queued_progress(self, rec: _Job) -> P.Progress:
        k = rec.queue_position or 0
        return P.Progress(job=rec.job, stage="queued", message=f"waiting for {k} job(s) ahead", queue_position=k)

    def _announce_queue(self) -> None:
        """Send each queued job its new position when it changed."""
        ahead = self._ahead()
        for i, job in enumerate(self._queue):
            rec = self._jobs[job]
            if rec.queue_position != ahead + i:
                rec.queue_position = ahead + i
                self._publish(rec, self._queued_progress(rec))

    def _ahead(self) -> int:
        """Running jobs a queued job waits behind (0 while a slot, and memory for the first queued job, is free)."""
        if len(self._running) >= self.config.max_running or (self._queue and not self._fits(self._queue[0])):
            return len(self._running)
        return 0

    def _fits(self, key: str) -> bool:
        """Whether the queued job ``key`` fits the memory budget beside the running jobs (always, alone)."""
        if not self._running or not self.config.shared_budget:
            return True
        used = sum(self._jobs[k].peak_bytes for k in self._running if k in self._jobs)
        return used + self._jobs[key].peak_bytes <= self.config.budget()

    def _start_next(self) -> None:
        while len(self._running) < self.config.max_running and self._queue and not self._stop.is_set():
            if not self._fits(self._queue[0]):  # jobs at once share this machine's memory budget
                return  # it starts when enough of the running jobs have ended
            self._start(self._jobs[self._queue.popleft()])

    def _start(self, rec: _Job) -> None:
        rec.state, rec.updated, rec.queue_position, rec.stage = State.RUNNING, time.time(), None, "starting"
        rec.started = time.monotonic()
        self._write_state(rec)
        log.info("job %s started (%d views of %dx%d, preset %s, on %s)", rec.job, rec.scene.num_views,
                 rec.scene.height, rec.scene.width, rec.options.preset, rec.options.device)
        scene, rec.scene = rec.scene, None
        worker = threading.Thread(target=self._work, args=(rec.key, scene, rec.options, rec.cancel),
                                  name=f"job-{rec.job}", daemon=True)
        self._running[rec.key] = worker
        worker.start()
        self._publish(rec, P.Progress(job=rec.job, stage="starting", message=f"running on {rec.options.device}"))

    def _post(self, event: object) -> None:
        self._events.put(event)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _work(self, job: str, scene: Scene, options: JobOptions, cancel: threading.Event) -> None:
        """Worker thread: run the job, persist its result, post the outcome."""
        folder = self.workdir / job

        def progress(event: ProgressEvent) -> None:
            if not isinstance(event, ProgressEvent):
                raise TypeError(f"progress() takes a ProgressEvent, got {type(event).__name__}")
            self._post(_ProgressPosted(job, event))

        def should_stop() -> bool:
            return cancel.is_set() or self._stop.is_set()

        outcome = _JobEnded(job, State.FAILED, error_code=ErrorCode.INTERNAL, error_message="the worker died")
        try:
            result = self.run_job(scene, options, progress, should_stop, folder)
            del scene
            if should_stop():
                outcome = self._stopped(job, cancel)
            elif not isinstance(result, JobResult):
                outcome = _JobEnded(job, State.FAILED, error_code=ErrorCode.JOB_FAILED,
                                    error_message=f"run_job returned {type(result).__name__}, not a JobResult")
            else:
                result.validate()
                save_result(result, folder)
                outcome = _JobEnded(job, State.DONE, result=result)
        except Exception as e:  # noqa: BLE001 - every failure becomes an error reply
            try:
                (folder / ERROR_LOG).write_text(traceback.format_exc())
            except OSError:
                pass  # e.g. the disk is full: the error still goes to the client and the log
            if should_stop():
                outcome = self._stopped(job, cancel)
            elif isinstance(e, OSError) and e.errno in _DISK_FULL:
                outcome = _JobEnded(job, State.FAILED, error_code=ErrorCode.JOB_FAILED, error_message=_disk_message(e))
            elif type(e).__name__ == "OutOfMemoryError" or isinstance(e, MemoryError):
                outcome = _JobEnded(job, State.FAILED, error_code=ErrorCode.OUT_OF_MEMORY,
                                    error_message=f"out of memory on {options.device}: {str(e)[:300]} "
                                                  "(try preset 'fast', fewer views or a smaller max_points)")
            else:
                outcome = _JobEnded(job, State.FAILED, error_code=ErrorCode.JOB_FAILED,
                                    error_message=f"{type(e).__name__}: {str(e)[:1000]}")
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        finally:
            self._post(outcome)

    @staticmethod
    def _stopped(job: str, cancel: threading.Event) -> _JobEnded:
        """Outcome of a job that stopped early: cancelled by request, or by the server shutting down."""
        if cancel.is_set():
            return _JobEnded(job, State.CANCELLED, error_code=ErrorCode.CANCELLED, error_message="cancelled")
        return _JobEnded(job, State.FAILED, error_code=ErrorCode.JOB_FAILED,
                         error_message="the server was stopped while the job was running; submit it again")

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            rec = self._jobs.get(event.job)
            if rec is None:
                continue
            if isinstance(event, _ProgressPosted):
                if rec.state != State.RUNNING:
                    continue
                ev = event.event
                stage_changed = str(ev.stage) != rec.stage
                rec.stage, rec.step, rec.total = str(ev.stage), int(ev.step), int(ev.total)
                if stage_changed:  # on disk too: a restart after a crash names the stage the job died in
                    rec.updated = time.time()
                    self._write_state(rec)
                try:
                    msg = P.Progress.from_event(rec.job, ev)
                except (TypeError, ValueError) as e:
                    log.warning("job %s sent a bad progress event: %s", rec.job, e)
                    continue
                self._publish(rec, msg)
            elif isinstance(event, _JobEnded):
                self._running.pop(rec.key, None)
                took = time.monotonic() - rec.started if rec.started is not None else float("nan")
                log.info("job %s ended %s after %.1f s%s", rec.job, event.state, took,
                         f" ({event.error_code}: {event.error_message})" if event.error_code else "")
                if event.state == State.DONE:
                    self._cache_result(rec.key, event.result)
                    self._finish(rec, State.DONE)
                    self._publish(rec, P.Result(job=rec.job, arrays=event.result.arrays, meta=event.result.meta))
                else:
                    self._finish(rec, event.state, event.error_code, event.error_message)
                self._start_next()
                self._announce_queue()

    def _finish(self, rec: _Job, state: str, code: str | None = None, message: str | None = None) -> None:
        rec.state, rec.error_code, rec.error_message = state, code, message
        rec.updated, rec.scene, rec.queue_position = time.time(), None, None
        self._write_state(rec)
        self._prune(rec)
        self._expire(time.time())
        if state != State.DONE:
            self._publish(rec, P.Error(code=code or ErrorCode.JOB_FAILED, message=message or state, job=rec.job))

    # -- housekeeping -------------------------------------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < min(1.0, self.config.client_timeout_s / 4):
            return
        self._last_sweep = now
        timeout = self.config.client_timeout_s
        for rec in list(self._jobs.values()):
            if rec.state not in (State.QUEUED, State.RUNNING):
                continue
            alive = [s for s in rec.subscribers if now - self._last_seen.get(s, -math.inf) < timeout]
            if alive or not self.config.cancel_orphaned_jobs:
                continue
            log.info("job %s: no client heard for %.0f s, cancelling", rec.job, timeout)
            if rec.state == State.QUEUED:
                self._queue.remove(rec.key)
                self._finish(rec, State.CANCELLED, ErrorCode.CANCELLED, f"cancelled: no client heard for {timeout:.0f} s")
                self._announce_queue()
            else:
                rec.cancel.set()
                rec.state = State.CANCELLING
        for identity, seen in list(self._last_seen.items()):
            if now - seen > 10 * timeout:
                del self._last_seen[identity]
        for identity, since in list(self._slow.items()):
            if now - since > self.config.slow_client_s:
                del self._slow[identity]
        self._expire(time.time())



def _no_constant(c: str) -> None:
    raise ValueError(f"{c} is not valid JSON")


def _opt_str(v: object) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"expected a string or null, got {type(v).__name__}")
    return v
