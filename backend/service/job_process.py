"""The ``process`` executor (``backend serve``'s default): each job runs in a child process of its own.

Why a child: its exit gives all of the job's memory back to the system (torch's and glibc's caches stay with a
process that ran a big job), a job that does not stop within :attr:`ProcessConfig.stop_grace_s` of a cancel or a
server stop is killed (so cancel and SIGTERM end every stage promptly, also inside native code), and no native
thread of the job is left in the server when it exits.

The parent side is a :data:`backend.service.server.RunJob` (:func:`process_run_job`): it starts
``python -m backend.service.job_process CTL_FD EVT_FD``, sends the job (the scene's arrays as raw out-of-band
pickle buffers, not copied into one message), relays the child's progress events and sends ``stop`` when
``should_stop()`` turns True. The child imports the job function by name (``module:function``), runs it and
sends back its result, or its error (class name, message, errno) which the parent raises again under the same
class name, so the server classifies it as before (``OutOfMemoryError``, ``MemoryError``, a full disk).

The child measures its own peak RSS per stage (``VmHWM``, reset at each stage change through
``/proc/self/clear_refs``) and reports it (:data:`PEAKS`): the server logs it, the benchmark reads it.

This module imports neither torch nor the method: the child imports only the job function it is told to run.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger("backend.service.job_process")

#: Key of the per-stage peak RSS (bytes) the child adds to its messages and the parent hands to ``on_peaks``.
PEAKS = "peak_rss_bytes"


@dataclass(frozen=True)
class ProcessConfig:
    """Settings of the process executor."""

    stop_grace_s: float = 1.0
    """A child that has not ended this long after ``stop`` is killed (SIGKILL)."""
    start_timeout_s: float = 120.0
    """A child that has not said it is ready by then (imports hang) is killed and the job fails."""
    poll_s: float = 0.05
    """How often the parent looks at ``should_stop`` while waiting for the child's messages."""


class JobProcessError(RuntimeError):
    """The job's child process died or broke the protocol."""


# ----------------------------------------------------------------------------------------------------------------
# Wire between parent and child: pickle protocol 5, large buffers out of band (sent as they are, never joined)


def send_obj(conn: Connection, obj: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send((head, [v.nbytes for v in views]))
    for v in views:
        conn.send_bytes(v)


def recv_obj(conn: Connection) -> Any:
    head, sizes = conn.recv()
    bufs = []
    for n in sizes:
        buf = bytearray(n)  # writable: arrays rebuilt on it are writable, as they were in the sender
        if n:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        bufs.append(buf)
    return pickle.loads(head, buffers=bufs)


def rebuild_error(name: str, message: str, errno_: int | None) -> BaseException:
    """The child's exception in the parent, under its class name (the server classifies errors by it)."""
    if name == "InterruptedError":
        return InterruptedError(message)
    if name == "MemoryError":
        return MemoryError(message)
    if errno_ in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # a full disk, as the server words it
        return OSError(errno_, message)
    if not name.isidentifier():
        name = "JobError"
    return type(name, (RuntimeError,), {"__module__": "job_process"})(message)


# ----------------------------------------------------------------------------------------------------------------
# Parent side


def process_run_job(spec: str, cfg: ProcessConfig | None = None, device: str | None = None,
                    on_peaks: Callable[[dict], None] | None = None) -> Callable[..., Any]:
    """A :data:`backend.service.server.RunJob` that runs ``spec`` (``module:function``) in a child process per job.

    ``device`` is passed to job functions that take one; ``on_peaks({stage: bytes})`` gets the child's peak RSS per
    stage when it ends (also after a failure)."""
    cfg = cfg or ProcessConfig()

    def run(scene: Any, options: Any, progress: Callable[[Any], None], should_stop: Callable[[], bool],
            workdir: Path) -> Any:
        return _run_child(spec, device, cfg, scene, options, progress, should_stop, Path(workdir), on_peaks)

    run.spec = spec  # type: ignore[attr-defined]
    return run


def _run_child(spec: str, device: str | None, cfg: ProcessConfig, scene: Any, options: Any,
               progress: Callable[[Any], None], should_stop: Callable[[], bool], workdir: Path,
               on_peaks: Callable[[dict], None] | None) -> Any:
    ctl_parent, ctl_child = socket.socketpair()
    evt_parent, evt_child = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend.service.job_process", str(ctl_child.fileno()), str(evt_child.fileno())],
            pass_fds=(ctl_child.fileno(), evt_child.fileno()), stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
            start_new_session=True,  # a terminal's Ctrl-C reaches the server only; it stops the child
        )
    finally:
        ctl_child.close()
        evt_child.close()
    ctl = Connection(ctl_parent.detach())
    evt = Connection(evt_parent.detach())
    stop_sent: float | None = None
    started = time.monotonic()
    ready = False
    peaks: dict = {}
    try:
        try:
            send_obj(ctl, {"spec": spec, "device": device, "workdir": str(workdir), "options": options,
                           "scene": scene})
        except OSError as e:
            raise JobProcessError(f"the job process did not take the job: {e}") from None
        del scene
        while True:
            if should_stop():
                now = time.monotonic()
                if stop_sent is None:
                    stop_sent = now
                    try:
                        ctl.send(("stop",))
                    except OSError:
                        pass
                elif now - stop_sent > cfg.stop_grace_s:
                    log.info("job process %d did not stop within %.1f s: killing it", proc.pid, cfg.stop_grace_s)
                    proc.kill()
                    raise InterruptedError("stopped (the job process was killed)")
            if not ready and time.monotonic() - started > cfg.start_timeout_s:
                proc.kill()
                raise JobProcessError(f"the job process did not start within {cfg.start_timeout_s:.0f} s")
            try:
                if not evt.poll(cfg.poll_s):
                    continue
                kind, *rest = evt.recv()
            except (EOFError, OSError):
                code = proc.wait()
                if stop_sent is not None:
                    raise InterruptedError("stopped") from None
                if code in (-signal.SIGKILL, 137):
                    raise MemoryError("the job process was killed (SIGKILL), most likely by the system running "
                                      "out of memory") from None
                raise JobProcessError(f"the job process ended unexpectedly (exit status {code})") from None
            if kind == "ready":
                ready = True
            elif kind == "progress":
                progress(rest[0])
            elif kind == "peaks":
                peaks = dict(rest[0])
            elif kind == "result":
                return recv_obj(evt)
            elif kind == "error":
                name, message, errno_, tb = rest
                log.debug("job process error:\n%s", tb)
                raise rebuild_error(name, message, errno_)
    finally:
        for c in (ctl, evt):
            c.close()
        if proc.poll() is None:
            try:
                proc.wait(cfg.stop_grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if on_peaks is not None and peaks:
            on_peaks(peaks)


# ----------------------------------------------------------------------------------------------------------------
# Child side


def _die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class PeakMeter:
    """Peak RSS (``VmHWM``) of this process per stage; the peak is reset when the stage changes."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.peaks: dict[str, int] = {}

    @staticmethod
    def hwm() -> int:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
        return 0

    def at(self, stage: str) -> None:
        if stage == self.stage:
            return
        self.close()
        self.stage = stage
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass

    def close(self) -> dict[str, int]:
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), self.hwm())
        return self.peaks


def child_main(ctl_fd: int, evt_fd: int) -> int:
    import importlib
    import inspect
    import traceback

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl, evt = Connection(ctl_fd), Connection(evt_fd)
    send_lock = threading.Lock()
    stop = threading.Event()

    def send(*msg: Any) -> None:
        with send_lock:
            evt.send(msg)

    try:
        job = recv_obj(ctl)
    except (EOFError, OSError):
        return 1

    def watch() -> None:  # the parent's stop, or the parent gone (EOF): stop; gone for good: exit
        try:
            while True:
                if ctl.recv()[0] == "stop":
                    stop.set()
        except (EOFError, OSError):
            stop.set()
            time.sleep(5.0)
            os._exit(1)

    threading.Thread(target=watch, name="job-process-control", daemon=True).start()
    meter = PeakMeter()

    def progress(event: Any) -> None:
        meter.at(str(getattr(event, "stage", "")) or meter.stage)
        send("progress", event)

    try:
        module, _, name = job["spec"].partition(":")
        fn = getattr(importlib.import_module(module), name)
        extra = {}
        if job["device"] is not None and "device" in inspect.signature(fn).parameters:
            extra["device"] = job["device"]
        send("ready")
        result = fn(job["scene"], job["options"], progress, stop.is_set, Path(job["workdir"]), **extra)
        del job
        send("peaks", meter.close())
        with send_lock:
            evt.send(("result",))
            send_obj(evt, result)
    except BaseException as e:  # noqa: BLE001 - every failure goes to the parent
        try:
            send("peaks", meter.close())
            send("error", type(e).__name__, str(e)[:4000], e.errno if isinstance(e, OSError) else None,
                 traceback.format_exc()[-20000:])
        except OSError:
            return 1
    return 0


if __name__ == "__main__":
    code = child_main(int(sys.argv[1]), int(sys.argv[2]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter shutdown with the job's native threads still around
