"""Client of the job service (:mod:`backend.service.server`): a DEALER socket speaking :mod:`backend.wire.protocol`.

Every wait is a poll with a deadline, never a blocking receive: when the server stays silent for
``timeout_s`` (it is pinged every ``heartbeat_s`` meanwhile) :class:`ServerUnavailable` says so,
with the address.

>>> with JobClient("tcp://127.0.0.1:5557") as client:          # doctest: +SKIP
...     job = client.submit(scene, JobOptions(preset="fast"))
...     for p in client.progress(job):
...         print(p.stage, p.step, p.total)
...     result = client.wait(job)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from backend.wire import protocol as P
from backend.service.keys import Keypair, load_keypair
from backend.wire.protocol import ErrorCode, JobOptions, JobResult, Limits
from backend.core.scene import Scene
from backend.service.scene_transfer import submit_from_scene


class ServerUnavailable(ConnectionError):
    """The server did not answer in time (not running, unreachable, or refusing our keys), or it
    closed the connection while a request was outstanding (``reason`` says which)."""

    def __init__(self, address: str, waited_s: float, what: str, keyed: bool, reason: str | None = None,
                 keys_hint: bool = True):
        hint = (
            " (check the server public key and that this client's public key is in the server's authorized_clients)"
            if keyed
            else " (if the server was started with --keys, pass its public key and a client keypair)"
        )
        if reason is None:
            text = (f"no reply from the job server at {address} within {waited_s:.1f} s while waiting for {what}; "
                    "is `backend serve` running and reachable there?")
        else:
            text = f"no reply from the job server at {address} while waiting for {what}: {reason}"
        super().__init__(text + (hint if keys_hint else ""))
        self.address = address
        self.reason = reason


class NoReply(TimeoutError):
    """The server is alive (answers pings) but did not answer a request in time."""


class JobError(RuntimeError):
    """The server answered with an error (``code`` is an :class:`backend.wire.protocol.ErrorCode` value)."""

    def __init__(self, code: str, message: str, job: str | None = None):
        super().__init__(f"{code}: {message}" + (f" (job {job})" if job else ""))
        self.code, self.message, self.job = code, message, job


_JOB_TYPES = (P.Accepted, P.Progress, P.Result, P.CancelAck)
#: Connection events watched on the DEALER (socket monitor): a failed handshake means the server
#: refuses us (or is no job server); losing an established connection while a request is
#: outstanding means its reply will not come.
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                     zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_MONITORED = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
              | functools.reduce(operator.or_, _HANDSHAKE_FAILED))


def _handshake_failure(event: int, value: int) -> str:
    """Words for a failed ZMTP handshake (``value``: libzmq's protocol error code)."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "the server refused this client's CurveZMQ key"
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # the server hung up mid-handshake
        return ("the server closed the connection during the handshake (a server started with --keys does "
                "this to clients without keys)")
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "the security handshake failed: CurveZMQ keys are set on one side only"
    if value in (zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC, zmq.PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE):
        return "the CurveZMQ handshake failed (wrong server public key?)"
    if value == zmq.PROTOCOL_ERROR_ZMTP_INVALID_METADATA:
        return "the peer at this address is not a job server (its ZeroMQ socket type does not match)"
    return f"the connection handshake failed (libzmq event {event:#x}, error {value:#x})"
#: Error codes answering a request about a job (rather than ending the job).
_REQUEST_ERRORS = (ErrorCode.UNKNOWN_JOB, ErrorCode.BAD_MESSAGE, ErrorCode.BAD_TYPE, ErrorCode.INTERNAL)


class JobClient:
    """Submit scenes, follow progress, fetch results. Not thread-safe (one thread per client)."""

    def __init__(
        self,
        address: str,
        server_public_key: bytes | str | Path | None = None,
        client_keys: Keypair | str | Path | None = None,
        timeout_s: float = 10.0,
        heartbeat_s: float = 1.0,
        limits: Limits | None = None,
        resync_s: float = 15.0,
        client_token: str | None = None,
    ):
        """``server_public_key``: Z85 bytes or a ``server.key`` file; ``client_keys``: a
        :class:`backend.service.keys.Keypair` or a ``client.key_secret`` file (both or neither).
        ``timeout_s``: longest server silence (and request wait) before :class:`ServerUnavailable`, also while
        following a job (re-subscribing does not reset it). ``client_token``: this client's secret
        (``[A-Za-z0-9_-]{16,128}``, see :func:`load_client_token`); jobs belong to it when the server has no
        keys, so another process with the same token may fetch or cancel them; default: a fresh one."""
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0 and timeout_s < float("inf")):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if (server_public_key is None) != (client_keys is None):
            raise ValueError("CurveZMQ needs both server_public_key and client_keys (see `backend keys`)")
        self.address = address
        self.timeout_s = float(timeout_s)
        self.heartbeat_s = float(heartbeat_s)
        #: While following a job, re-subscribe after this long without any news of it.
        self.resync_s = float(resync_s)
        self.limits = limits or Limits(max_total_bytes=2**40)  # trust the server's result sizes
        self.client_token = client_token or secrets.token_urlsafe(24)
        P.check_client_token(self.client_token)
        self._last_heard = time.monotonic()
        self._server_key = None if server_public_key is None else _public_key(server_public_key)
        self._keys = None if client_keys is None else (
            client_keys if isinstance(client_keys, Keypair) else load_keypair(client_keys, need_secret=True))
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._tokens = itertools.count(1)
        self._inbox: dict[str, deque[P.Message]] = {}
        self._replies: deque[P.Message] = deque()
        self._terminal: dict[str, P.Message] = {}
        self._mine: set[str] = set()
        self._ended: set[str] = set()
        #: Jobs with an explicit request outstanding (fetch, cancel): their replies are kept even
        #: once the job ended (otherwise late duplicates for ended jobs are dropped).
        self._asking: set[str] = set()
        self._refused: str | None = None
        self._linked = False  # a handshake succeeded on the current connection
        self._routing_id = b"c" + os.urandom(15)  # stable across reconnects (server: ROUTER_HANDOVER)
        #: Queue position reported when each job was accepted.
        self.accepted: dict[str, int] = {}
        self._connect()

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.ROUTING_ID, self._routing_id)
        hb = max(100, int(self.heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_IVL, hb)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * hb)
        if self._server_key is not None:
            sock.curve_serverkey = self._server_key
            sock.curve_publickey = self._keys.public
            sock.curve_secretkey = self._keys.secret
        self._monitor = sock.get_monitor_socket(_MONITORED)
        sock.connect(self.address)
        self._sock = sock

    def close(self) -> None:
        """Close the socket (jobs keep running on the server; fetch them later by id)."""
        if self._sock is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = self._monitor = None
            self._linked = False

    def _link_events(self) -> tuple[bool, str | None]:
        """Drain the connection monitor: (an established connection was lost, the last handshake
        failure). A connection that closes before its handshake (e.g. a listener going away) is no loss."""
        lost, refused = False, None
        while self._monitor is not None and self._monitor.poll(0, zmq.POLLIN):
            ev = recv_monitor_message(self._monitor)
            event = ev["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._linked = True
            elif event == zmq.EVENT_DISCONNECTED:
                lost, self._linked = lost or self._linked, False
            elif event in _HANDSHAKE_FAILED:
                refused = _handshake_failure(event, ev.get("value", 0))
        return lost, refused

    def _reset(self) -> None:
        """Reconnect with a fresh socket, dropping whatever was queued for the lost connection."""
        self.close()
        self._connect()

    def __enter__(self) -> "JobClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, msg: P.Message, wait: bool = True) -> int:
        """Queue ``msg`` on the socket without ever blocking indefinitely: a DEALER with no live
        connection (server down, handshake refused) cannot take a message, so wait for one up to
        ``timeout_s`` (raising :class:`ServerUnavailable`), or with ``wait=False`` drop it (→ 0)."""
        if hasattr(msg, "client_token") and msg.client_token is None:
            msg.client_token = self.client_token
        frames = P.encode(msg)
        start = time.monotonic()
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return sum(memoryview(f).nbytes for f in frames)
            except zmq.Again:
                pass
            if not wait:
                return 0
            waited = time.monotonic() - start
            _, refused = self._link_events()
            refused = refused or self._refused
            if refused or waited > self.timeout_s:
                self._refused = None
                self._reset()
                raise ServerUnavailable(self.address, waited, f"a connection to send {msg.TYPE}",
                                        self._server_key is not None, refused)
            self._sock.poll(min(100, max(1, int((self.timeout_s - waited) * 1000))), zmq.POLLOUT)

    def _send_request(self, msg: P.Message) -> int:
        """Send a message that expects a reply, first forgetting disconnects of earlier connections
        (so only one during this request fails it; a refused handshake stays remembered)."""
        _, refused = self._link_events()
        self._refused = refused or self._refused
        return self._send(msg)

    @contextlib.contextmanager
    def _asking_about(self, job: str) -> Iterator[None]:
        """Keep messages for ``job`` while an explicit request about it is outstanding."""
        self._asking.add(job)
        try:
            yield
        finally:
            self._asking.discard(job)
            if job in self._ended:
                self._inbox.pop(job, None)

    def _file(self, msg: P.Message) -> None:
        job = getattr(msg, "job", None)
        if isinstance(msg, P.Pong) and msg.token == 0:
            return  # heartbeat reply
        if job in self._ended and job not in self._asking:
            return  # late duplicate (e.g. of a resync) for a job already returned by wait()
        if job is not None and (isinstance(msg, _JOB_TYPES) or isinstance(msg, P.Error)):
            self._inbox.setdefault(job, deque()).append(msg)
        else:
            self._replies.append(msg)

    def _pump(self, done: Callable[[], bool], what: str, reply_within: float | None = None,
              until: float | None = None, heard_since: float | None = None) -> bool:
        """Receive until ``done()`` (→ True) or the monotonic time ``until`` (→ False), pinging
        after ``heartbeat_s`` of quiet. Raises :class:`ServerUnavailable` after ``timeout_s`` (or
        ``reply_within``) without any message, when the security handshake fails, or (requests,
        i.e. ``reply_within`` given) when the server drops the connection meanwhile, which is how it
        refuses a message over its size limit; :class:`NoReply` when the server is alive but
        ``done`` is still false ``reply_within`` seconds after the start. ``heard_since``: when the server was
        last heard (a deadline on silence that spans several calls; default: now)."""
        start = heard = last_ping = time.monotonic()
        if heard_since is not None:
            heard = min(heard, heard_since)
        silence = self.timeout_s if reply_within is None else max(self.timeout_s, reply_within)
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while not done():
            now = time.monotonic()
            disconnected, refused = self._link_events()
            refused, self._refused = refused or self._refused, None
            dropped = disconnected and not refused and reply_within is not None
            if refused or dropped or now - heard > silence:
                self._reset()
                reason = refused or ("the server closed the connection before answering (it does so for a message "
                                     "larger than its --max-message-mb, or when it stops)" if dropped else None)
                raise ServerUnavailable(self.address, now - heard, what, self._server_key is not None, reason,
                                        keys_hint=not dropped)
            if reply_within is not None and now - start > reply_within:
                raise NoReply(f"the job server at {self.address} answers pings but not {what} within "
                              f"{reply_within:.1f} s")
            if until is not None and now >= until:
                return False
            if now - max(heard, last_ping) >= self.heartbeat_s:
                self._send(P.Ping(token=0), wait=False)  # not connected now: the silence check decides
                last_ping = now
            wait = min(self.heartbeat_s, silence - (now - heard))
            if reply_within is not None:
                wait = min(wait, reply_within - (now - start))
            if until is not None:
                wait = min(wait, until - now)
            if dict(poller.poll(max(1, int(wait * 1000)))).get(self._sock):
                heard = self._last_heard = time.monotonic()
                while True:
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._file(P.decode(frames, self.limits, accept=P.SERVER_TYPES))
                    except P.ProtocolError as e:  # a broken server message: surface, do not hang
                        self._replies.append(P.Error(code=e.code, message=f"from the server: {e.message}", job=None))
        return True

    def _request(self, msg: P.Message, kinds: tuple[type, ...], match=lambda m: True,
                 job: str | None = None) -> P.Message:
        """Send ``msg`` and return its reply (a message of ``kinds`` passing ``match``); an error
        reply (without job, or for ``job`` with a request-level code) raises :class:`JobError`."""
        self._send_request(msg)

        def find() -> tuple[deque, P.Message] | None:
            for m in self._replies:
                if isinstance(m, P.Error) or (isinstance(m, kinds) and match(m)):
                    return self._replies, m
            for m in self._inbox.get(job, ()) if job else ():
                if isinstance(m, P.Error) and m.code in _REQUEST_ERRORS:
                    return self._inbox[job], m
            return None

        self._pump(lambda: find() is not None, f"a reply to {msg.TYPE}", reply_within=self.timeout_s)
        box, reply = find()
        box.remove(reply)
        if isinstance(reply, P.Error):
            raise JobError(reply.code, reply.message, reply.job)
        return reply

    def _has(self, job: str, kinds: tuple[type, ...], codes: tuple[str, ...] | None = None) -> bool:
        """Whether a message of ``kinds`` (errors: only with ``codes`` when given) is queued for ``job``."""
        return any(isinstance(m, kinds) and (codes is None or not isinstance(m, P.Error) or m.code in codes)
                   for m in self._inbox.get(job, ()))

    def _job_message(self, job: str, kinds: tuple[type, ...]) -> P.Message | None:
        """Remove and return the first message of ``kinds`` (or an error) queued for ``job``."""
        box = self._inbox.get(job, ())
        for m in box:
            if isinstance(m, kinds):
                box.remove(m)
                return m
        return None

    # -- API ----------------------------------------------------------------------------------

    def ping(self, timeout_s: float | None = None) -> float:
        """Round-trip time to the server in seconds (:class:`ServerUnavailable` after ``timeout_s``, default
        the client's)."""
        t0 = time.perf_counter()
        token = next(self._tokens)
        saved = self.timeout_s
        if timeout_s is not None:
            self.timeout_s = min(saved, float(timeout_s))
        try:
            self._request(P.Ping(token=token), (P.Pong,), lambda m: m.token == token)
        finally:
            self.timeout_s = saved
        return time.perf_counter() - t0

    def status(self, job: str | None = None) -> P.StatusReply:
        """The server's jobs, queue and device (one job when ``job`` is given)."""
        return self._request(P.Status(job=job), (P.StatusReply,), job=job)

    def submit(self, scene: Scene | P.Submit, options: JobOptions | None = None, job: str | None = None) -> str:
        """Send a scene (or a ready :class:`backend.wire.protocol.Submit`); returns the job id once the
        server accepted it. Raises :class:`JobError` when refused, ``ProtocolError`` when invalid."""
        msg = scene if isinstance(scene, P.Submit) else submit_from_scene(scene, options, job)
        if msg.client_token is None:
            msg.client_token = self.client_token
        msg.validate()  # before the upload: a bad option fails here, not after sending megabytes
        self.ping(timeout_s=min(self.timeout_s, 5.0))  # no server: fail in seconds, before the upload

        def answered() -> bool:
            return any(isinstance(m, (P.Accepted, P.Error)) for m in self._inbox.get(msg.job, ()))

        with self._asking_about(msg.job):  # e.g. a duplicate id of a job that ended here
            nbytes = self._send_request(msg)
            # The server only answers once the whole message arrived: allow ~20 MB/s on top.
            self._pump(answered, f"the submit of job {msg.job}", reply_within=self.timeout_s + nbytes / 20e6)
            reply = self._job_message(msg.job, (P.Accepted, P.Error))
            if isinstance(reply, P.Error):
                raise JobError(reply.code, reply.message, msg.job)
            self._ended.discard(msg.job)
            self._mine.add(msg.job)
        self.accepted[msg.job] = reply.queue_position
        return msg.job

    def progress(self, job: str, timeout_s: float | None = None) -> Iterator[P.Progress]:
        """Yield the job's progress messages until it ends (then :meth:`wait` returns at once).
        ``timeout_s`` bounds the whole job; server silence raises :class:`ServerUnavailable`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._last_heard = time.monotonic()
        self._follow(job)
        while job not in self._terminal:
            msg = self._job_message(job, (P.Progress, P.Result, P.Error))
            if msg is None:
                now = time.monotonic()
                if deadline is not None and now > deadline:
                    raise TimeoutError(f"job {job} did not finish within {timeout_s} s")
                until = now + self.resync_s if deadline is None else min(deadline, now + self.resync_s)
                if not self._pump(lambda: self._has(job, (P.Progress, P.Result, P.Error)), f"job {job}", until=until,
                                  heard_since=self._last_heard):
                    # Quiet for long: re-subscribe (answers the current progress, or the result
                    # should it have been lost, e.g. over a reconnect).
                    self._send(P.Fetch(job=job, wait=True))
                continue
            if isinstance(msg, P.Progress):
                yield msg
            else:
                self._terminal[job] = msg

    def wait(self, job: str, timeout_s: float | None = None,
             on_progress: Callable[[P.Progress], None] | None = None) -> JobResult:
        """The job's result once it finished; raises :class:`JobError` when it failed or was
        cancelled (``code`` ``job_failed``, ``out_of_memory``, ``cancelled``, ``unknown_job``...)."""
        for p in self.progress(job, timeout_s):
            if on_progress is not None:
                on_progress(p)
        end = self._terminal.pop(job)
        self._inbox.pop(job, None)
        self._ended.add(job)
        if isinstance(end, P.Error):
            raise JobError(end.code, end.message, job)
        return end.to_job_result()

    def fetch(self, job: str) -> JobResult:
        """The result of a finished job (``not_ready`` error while it still runs)."""
        with self._asking_about(job):
            self._send_request(P.Fetch(job=job, wait=False))
            self._pump(lambda: self._has(job, (P.Result, P.Error)), f"the fetch of job {job}",
                       reply_within=self.timeout_s)
            end = self._job_message(job, (P.Result, P.Error))
        if isinstance(end, P.Error):
            raise JobError(end.code, end.message, job)
        return end.to_job_result()

    def cancel(self, job: str) -> str:
        """Cancel a job; returns its state then (``cancelled``, ``cancelling`` or a final state).
        A running job stops within ~1 s; :meth:`wait` then raises ``cancelled``."""
        with self._asking_about(job):
            self._send_request(P.Cancel(job=job))
            self._pump(lambda: self._has(job, (P.CancelAck, P.Error), _REQUEST_ERRORS), f"the cancel of job {job}",
                       reply_within=self.timeout_s)
            for m in list(self._inbox[job]):
                if isinstance(m, P.CancelAck):
                    self._inbox[job].remove(m)
                    return m.state
                if isinstance(m, P.Error) and m.code in _REQUEST_ERRORS:
                    self._inbox[job].remove(m)
                    raise JobError(m.code, m.message, job)
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(self, job: str) -> None:
        """Subscribe to a job this client did not submit (e.g. after reconnecting), or again to one
        whose end :meth:`wait` already returned (the server answers its final message again)."""
        if job in self._terminal:
            return
        if job not in self._mine or job in self._ended:
            self._ended.discard(job)
            self._send(P.Fetch(job=job, wait=True))
            self._mine.add(job)


def _public_key(key: bytes | str | Path) -> bytes:
    if isinstance(key, bytes) and len(key) == 40:
        return key
    return load_keypair(Path(key), need_secret=False).public


def load_client_token(path: str | Path, create: bool = True) -> str:
    """This user's client token kept in ``path`` (made, readable by the user only, when missing): jobs
    submitted with it can be fetched or cancelled later by any process that reads it (``backend fetch``)."""
    path = Path(path)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        if not create:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    try:
        P.check_client_token(token)
    except P.ProtocolError:
        raise ValueError(f"{path} does not hold a client token (16-128 of A-Z a-z 0-9 _ -); remove it") from None
    return token
