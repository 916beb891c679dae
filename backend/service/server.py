"""``backend serve``: the ZeroMQ job service.

One ROUTER socket, owned by the thread running :meth:`JobServer.serve_forever`, answers clients
(DEALER) with the messages of :mod:`backend.wire.protocol`. Jobs queue and run one at a time on the
server's device in a worker thread through one injectable function (:data:`RunJob`); the worker
talks back only through a thread-safe queue plus a wake-up socketpair polled next to the ROUTER
(zmq sockets are not thread-safe), so the poll loop never blocks on work.

Every job has a folder ``workdir/<job>/`` with ``state.json`` (rewritten on each state change),
``result.npz`` + ``result.json`` when done (kept ``result_ttl_s``) and ``error.log`` when it failed.
A server restarted after dying mid-job marks such jobs ``failed`` (code ``job_failed``).

Binding anything but loopback (or ipc://) requires CurveZMQ keys (:mod:`backend.service.keys`).
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import json
import logging
import math
import os
import queue
import shutil
import socket
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from backend.wire import protocol as P
from backend.wire.protocol import ErrorCode, JobOptions, JobResult, Limits, ProgressEvent
from backend.wire.result_files import has_result, load_result, save_result
from backend.core.scene import Scene, SceneError
from backend.service.scene_transfer import scene_from_submit

log = logging.getLogger("backend.service.server")

#: The job function: ``run_job(scene, options, progress, should_stop, workdir) -> JobResult``.
#: ``progress`` may be called from any thread; ``should_stop()`` turns True on cancel (poll it at
#: least every ~0.5 s and return or raise promptly); ``workdir`` is the job's own folder.
RunJob = Callable[[Scene, JobOptions, Callable[[ProgressEvent], None], Callable[[], bool], Path], JobResult]

STATE_FILE = "state.json"
ERROR_LOG = "error.log"


class ConfigError(ValueError):
    """The server configuration is unsafe or inconsistent."""


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
    """Most jobs waiting (beyond the running one)."""
    status_max_jobs: int = 100
    """Most jobs listed in a status reply (newest first)."""
    poll_interval_s: float = 0.1
    """Housekeeping period of the loop (orphans, expiry, stop requests)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` for unsafe or impossible settings."""
        if not is_local_endpoint(self.bind) and self.keys_dir is None:
            raise ConfigError(
                f"binding {self.bind} exposes the server beyond this machine and requires CurveZMQ keys: "
                "create them with `backend keys DIR` and start with `backend serve --keys DIR`"
            )
        if self.result_ttl_s <= 0 or self.client_timeout_s <= 0 or self.heartbeat_s <= 0:
            raise ConfigError("result_ttl_s, client_timeout_s and heartbeat_s must be > 0")


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
    """Import ``module:function`` (e.g. ``backend.method.job:run_job``)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"--run-job must be module:function, got {spec!r}")
    return getattr(importlib.import_module(module), name)


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
            "options": dataclasses.asdict(self.options),
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

    def __init__(self, config: JobServerConfig, run_job: RunJob):
        config.validate()
        self.config = config
        self.run_job: RunJob = run_job
        self.device = config.device
        self.workdir = Path(config.workdir)
        self.endpoint: str | None = None
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._running: str | None = None
        self._worker: threading.Thread | None = None
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
            except BaseException as e:
                self._start_error = e
                self._ready.set()
                raise
            self._sock = sock
            self._ready.set()
            log.info("job server on %s (device %s, workdir %s)", self.endpoint, self.device, self.workdir)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_r.fileno(), zmq.POLLIN)
            while not self._stop.is_set():
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
            self._shutdown()
        finally:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
            if auth is not None:
                auth.stop()
            ctx.term()

    def _bind(self, ctx: zmq.Context) -> tuple[zmq.Socket, object | None]:
        cfg = self.config
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting with its routing id takes over
        max_msg = cfg.max_message_bytes or (cfg.limits.max_total_bytes + cfg.limits.max_header_bytes)
        sock.setsockopt(zmq.MAXMSGSIZE, int(max_msg))
        sock.setsockopt(zmq.SNDHWM, 100_000)
        hb = int(cfg.heartbeat_s * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, hb)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * hb)
        auth = None
        if cfg.keys_dir is not None:
            from zmq.auth.thread import ThreadAuthenticator

            from backend.service.keys import server_keypair

            keys, authorized = server_keypair(Path(cfg.keys_dir))
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
        return sock, auth

    def _shutdown(self) -> None:
        # The running job sees should_stop() (self._stop is set) and ends as failed, not cancelled.
        if self._worker is not None:
            self._worker.join(10.0)
        self._handle_events()
        for rec in self._jobs.values():
            if rec.state not in State.FINISHED:
                self._finish(rec, State.FAILED, ErrorCode.JOB_FAILED, "the server stopped before the job finished")

    # -- persistence --------------------------------------------------------------------------

    def _write_state(self, rec: _Job) -> None:
        folder = self.workdir / rec.job
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(rec.state_json()))
        os.replace(tmp, folder / STATE_FILE)

    def _recover(self) -> None:
        """Load jobs left on disk; unfinished ones died with a previous server: mark them failed."""
        now = time.time()
        for folder in sorted(self.workdir.iterdir()):
            path = folder / STATE_FILE
            if not path.is_file():
                continue
            try:
                st = json.loads(path.read_text())
                rec = _Job(job=str(st["job"]), state=str(st["state"]), created=float(st["created"]),
                           updated=float(st["updated"]), stage=str(st.get("stage", "")),
                           error_code=st.get("error_code"), error_message=st.get("error_message"))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignoring unreadable %s: %s", path, e)
                continue
            if rec.job != folder.name:
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
            self._jobs[rec.job] = rec
        self._expire(now)

    def _expire(self, now: float) -> None:
        for rec in list(self._jobs.values()):
            if rec.state in State.FINISHED and now - rec.updated > self.config.result_ttl_s:
                shutil.rmtree(self.workdir / rec.job, ignore_errors=True)
                del self._jobs[rec.job]

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
            log.warning("client %s is not reading; dropped a %s", identity.hex(), msg.TYPE)
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
        self._last_seen[identity] = time.monotonic()
        try:
            msg = P.decode(frames[1:], self.config.limits, accept=P.CLIENT_TYPES)
        except P.ProtocolError as e:
            self._send(identity, P.Error(code=e.code, message=e.message, job=e.job))
            return
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

    def _on_ping(self, identity: bytes, msg: P.Ping) -> None:
        self._send(identity, P.Pong(token=msg.token))

    def _on_submit(self, identity: bytes, msg: P.Submit) -> None:
        if msg.job in self._jobs or (self.workdir / msg.job).exists():
            self._send(identity, P.Error(code=ErrorCode.DUPLICATE_JOB, message=f"job {msg.job} exists; use a new id", job=msg.job))
            return
        if len(self._queue) >= self.config.max_queue:
            self._send(identity, P.Error(code=ErrorCode.QUEUE_FULL,
                                         message=f"{len(self._queue)} jobs are queued (max {self.config.max_queue}); retry later",
                                         job=msg.job))
            return
        try:
            scene = scene_from_submit(msg)
        except SceneError as e:
            self._send(identity, P.Error(code=ErrorCode.BAD_SCENE, message=str(e), job=msg.job))
            return
        options = msg.options if msg.options.device else dataclasses.replace(msg.options, device=self.device)
        now = time.time()
        rec = _Job(job=msg.job, state=State.QUEUED, created=now, updated=now, options=options, scene=scene,
                   subscribers={identity})
        self._jobs[rec.job] = rec
        self._write_state(rec)
        self._queue.append(rec.job)
        position = len(self._queue) - 1 + (1 if self._running is not None else 0)
        self._send(identity, P.Accepted(job=rec.job, queue_position=position))  # before any progress
        self._start_next()
        self._announce_queue()

    def _on_cancel(self, identity: bytes, msg: P.Cancel) -> None:
        rec = self._jobs.get(msg.job)
        if rec is None:
            self._send(identity, P.Error(code=ErrorCode.UNKNOWN_JOB, message=f"no job {msg.job}", job=msg.job))
            return
        if rec.state == State.QUEUED:
            self._queue.remove(rec.job)
            self._finish(rec, State.CANCELLED, ErrorCode.CANCELLED, "cancelled while queued")
            self._announce_queue()
        elif rec.state == State.RUNNING:
            rec.cancel.set()
            rec.state = State.CANCELLING
            rec.updated = time.time()
        self._send(identity, P.CancelAck(job=rec.job, state=rec.state))

    def _on_status(self, identity: bytes, msg: P.Status) -> None:
        if msg.job is not None:
            if msg.job not in self._jobs:
                self._send(identity, P.Error(code=ErrorCode.UNKNOWN_JOB, message=f"no job {msg.job}", job=msg.job))
                return
            jobs = [self._jobs[msg.job].info()]
        else:
            recs = sorted(self._jobs.values(), key=lambda r: r.created, reverse=True)
            jobs = [r.info() for r in recs[: self.config.status_max_jobs]]
        self._send(identity, P.StatusReply(device=self.device, server_version=self.version, jobs=jobs,
                                           queue=list(self._queue), running=self._running))

    def _on_fetch(self, identity: bytes, msg: P.Fetch) -> None:
        rec = self._jobs.get(msg.job)
        if rec is None:
            self._send(identity, P.Error(code=ErrorCode.UNKNOWN_JOB,
                                         message=f"no job {msg.job} (unknown, or its result expired)", job=msg.job))
        elif rec.state == State.DONE:
            try:
                result = load_result(self.workdir / rec.job)
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

    # -- queue and worker ---------------------------------------------------------------------

    def _queued_progress(self, rec: _Job) -> P.Progress:
        k = rec.queue_position or 0
        return P.Progress(job=rec.job, stage="queued", message=f"waiting for {k} job(s) ahead", queue_position=k)

    def _announce_queue(self) -> None:
        """Send each queued job its new position when it changed."""
        ahead = 1 if self._running is not None else 0
        for i, job in enumerate(self._queue):
            rec = self._jobs[job]
            if rec.queue_position != ahead + i:
                rec.queue_position = ahead + i
                self._publish(rec, self._queued_progress(rec))

    def _start_next(self) -> None:
        if self._running is not None or not self._queue or self._stop.is_set():
            return
        rec = self._jobs[self._queue.popleft()]
        rec.state, rec.updated, rec.queue_position, rec.stage = State.RUNNING, time.time(), None, "starting"
        self._write_state(rec)
        self._running = rec.job
        scene, rec.scene = rec.scene, None
        self._worker = threading.Thread(target=self._work, args=(rec.job, scene, rec.options, rec.cancel),
                                        name=f"job-{rec.job}", daemon=True)
        self._worker.start()
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
            (folder / ERROR_LOG).write_text(traceback.format_exc())
            if should_stop():
                outcome = self._stopped(job, cancel)
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
                rec.stage, rec.step, rec.total = str(ev.stage), int(ev.step), int(ev.total)
                try:
                    msg = P.Progress.from_event(rec.job, ev)
                except (TypeError, ValueError) as e:
                    log.warning("job %s sent a bad progress event: %s", rec.job, e)
                    continue
                self._publish(rec, msg)
            elif isinstance(event, _JobEnded):
                self._running, self._worker = None, None
                if event.state == State.DONE:
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
                self._queue.remove(rec.job)
                self._finish(rec, State.CANCELLED, ErrorCode.CANCELLED, f"cancelled: no client heard for {timeout:.0f} s")
                self._announce_queue()
            else:
                rec.cancel.set()
                rec.state = State.CANCELLING
        for identity, seen in list(self._last_seen.items()):
            if now - seen > 10 * timeout:
                del self._last_seen[identity]
        self._expire(time.time())

