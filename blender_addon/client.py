"""The add-on's job client: one background thread per job speaking :mod:`blender_addon.protocol` over a
ZeroMQ DEALER socket, posting everything it hears to a :class:`queue.Queue` (bpy-free).

Blender's main thread never waits on the network: an operator starts a :class:`JobThread` and returns;
a timer drains the queue (:func:`drain`) and feeds :func:`blender_addon.jobstate.apply_event`. The
thread never blocks for long either: it polls the socket in short slices, pings the server while it
is quiet (``Ping(token=0)``, answered by ``Pong``) and gives up with
``ClientFailed(code="server_unavailable")`` after ``timeout_s`` of silence, so a server that is down
is reported within the timeout instead of hanging. The last event is always :class:`ThreadDone`.

pyzmq is imported inside the thread (it ships as a wheel with the extension); its absence becomes a
``ClientFailed(code="no_pyzmq")`` event rather than an import error in Blender.
"""

from __future__ import annotations

import ipaddress
import queue
import secrets
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from backend.wire import protocol as P
from .events import SERVER_UNAVAILABLE, ClientFailed, Sent, ThreadDone

DEFAULT_ADDRESS = "tcp://127.0.0.1:5557"
#: File name of the client keypair inside the client keys folder (``backend keys DIR``).
CLIENT_SECRET_FILE = "client.key_secret"
#: This Blender process's secret client token (``Submit.client_token``): without CurveZMQ keys the server gives
#: a job to the token that submitted it, so another Blender (another token) neither sees nor cancels it.
CLIENT_TOKEN = secrets.token_urlsafe(24)


@dataclass(frozen=True)
class ClientConfig:
    """How to reach the job server (filled from the add-on preferences)."""

    address: str = DEFAULT_ADDRESS
    """ZeroMQ endpoint of ``backend serve``."""
    server_public_key: str = ""
    """Path of the server's ``server.key`` for CurveZMQ; empty for a plain (local) connection."""
    client_keys: str = ""
    """Folder holding ``client.key_secret`` (or the file itself); needed with ``server_public_key``."""
    timeout_s: float = 10.0
    """Seconds of server silence (pings unanswered) before the job is reported unavailable."""
    heartbeat_s: float = 1.0
    """Ping the server after this many quiet seconds."""
    poll_s: float = 0.05
    """Longest single wait on the socket (how fast a Cancel is noticed)."""
    upload_mb_per_s: float = 20.0
    """Assumed upload speed: the wait for the first answer grows with the submit's size."""

    def validate(self) -> None:
        if not self.address.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"server address must look like tcp://HOST:PORT, got {self.address!r}")
        if bool(self.server_public_key) != bool(self.client_keys):
            raise ValueError("CurveZMQ needs both the server public key and the client keys folder (or neither)")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be > 0 s, got {self.timeout_s}")


def drain(events: queue.Queue) -> list:
    """Every event queued so far, without waiting."""
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out


def is_terminal(msg, job: str | None) -> bool:
    """Whether ``msg`` ends the conversation about ``job``."""
    if isinstance(msg, P.Result):
        return msg.job == job
    if isinstance(msg, P.Error):
        return msg.job in (None, job)
    if isinstance(msg, P.CancelAck):
        return msg.job == job and msg.state == "cancelled"
    return False


class JobThread(threading.Thread):
    """Sends one ``submit`` (or, without one, a single ``ping``) and follows the job to its end.

    Events (in order): ``Sent``, then the server's ``Accepted`` / ``Progress`` ... and finally
    ``Result``, ``Error`` (``cancelled`` after :meth:`cancel`) or ``ClientFailed``; then ``ThreadDone``.
    In ping mode: ``Pong`` (or ``ClientFailed``), then ``ThreadDone``.
    """

    def __init__(self, config: ClientConfig, submit: P.Submit | None = None, events: queue.Queue | None = None):
        super().__init__(name=f"segment-job-{submit.job if submit else 'ping'}", daemon=True)
        self.config = config
        self.submit = submit
        self.job = submit.job if submit is not None else None
        self.events: queue.Queue = events if events is not None else queue.Queue()
        self._cancel = threading.Event()
        self._stop_flag = threading.Event()

    # -- control (any thread) --------------------------------------------------------------------

    def cancel(self) -> None:
        """Ask the server to cancel the job; its answer arrives as events."""
        self._cancel.set()

    def stop(self) -> None:
        """Stop following the job (the server keeps it); the thread ends within ``poll_s``."""
        self._stop_flag.set()

    # -- the thread ------------------------------------------------------------------------------

    def _post(self, event) -> None:
        self.events.put(event)

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - the UI must hear about every failure
            self._post(ClientFailed(self.job, "client_error", f"{type(e).__name__}: {e}"))
        finally:
            self._post(ThreadDone(self.job))

    def _socket(self, zmq):
        cfg = self.config
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        if cfg.server_public_key:
            import zmq.auth

            server_public, _ = zmq.auth.load_certificate(str(Path(cfg.server_public_key).expanduser()))
            keys = Path(cfg.client_keys).expanduser()
            if keys.is_dir():
                keys = keys / CLIENT_SECRET_FILE
            public, secret = zmq.auth.load_certificate(str(keys))
            if not secret:
                raise ValueError(f"{keys} holds no secret key (use {CLIENT_SECRET_FILE})")
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
        sock.connect(cfg.address)
        return sock

    def _run(self) -> None:
        cfg = self.config
        try:
            import zmq
        except ImportError as e:
            self._post(ClientFailed(self.job, "no_pyzmq", f"pyzmq is not available in this Blender ({e}); "
                                    "install the extension from its zip so the bundled wheel is installed"))
            return
        try:
            cfg.validate()
            sock = self._socket(zmq)
        except (OSError, ValueError, zmq.ZMQError) as e:
            self._post(ClientFailed(self.job, "bad_keys" if cfg.server_public_key else "bad_address", str(e)))
            return
        try:
            self._converse(zmq, sock)
        finally:
            sock.close(linger=0)

    def _converse(self, zmq, sock) -> None:
        cfg = self.config
        try:
            frames = P.encode(self.submit if self.submit is not None else P.Ping(token=1))
        except P.ProtocolError as e:
            self._post(ClientFailed(self.job, e.code, f"the request is invalid: {e.message}"))
            return
        nbytes = sum(memoryview(f).nbytes for f in frames)
        sock.send_multipart(frames, copy=False)
        if self.submit is not None:
            self._post(Sent(self.job, nbytes))
        first_wait = cfg.timeout_s + nbytes / (cfg.upload_mb_per_s * 1e6)
        heard_any = False
        heard = last_ping = time.monotonic()
        cancel_sent = False
        while not self._stop_flag.is_set():
            now = time.monotonic()
            if self._cancel.is_set() and not cancel_sent and self.job is not None:
                token = self.submit.client_token if self.submit is not None else None
                sock.send_multipart(P.encode(P.Cancel(job=self.job, client_token=token)), copy=False)
                cancel_sent = True
            silence = cfg.timeout_s if heard_any else first_wait
            if now - heard > silence:
                self._post(ClientFailed(self.job, SERVER_UNAVAILABLE, unavailable_message(cfg, now - heard)))
                return
            if now - max(heard, last_ping) >= cfg.heartbeat_s:
                sock.send_multipart(P.encode(P.Ping(token=0)), copy=False)
                last_ping = now
            if not sock.poll(max(1, int(cfg.poll_s * 1000)), zmq.POLLIN):
                continue
            heard, heard_any = time.monotonic(), True
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                try:
                    msg = P.decode(frames, _CLIENT_LIMITS, accept=P.SERVER_TYPES)
                except P.ProtocolError as e:
                    self._post(ClientFailed(self.job, e.code, f"the server sent a malformed message: {e.message}"))
                    return
                if isinstance(msg, P.Pong) and msg.token == 0:
                    continue  # heartbeat
                if getattr(msg, "job", None) not in (None, self.job):
                    continue  # another job's message (this socket follows one job)
                self._post(msg)
                if self.submit is None and isinstance(msg, (P.Pong, P.Error)):
                    return
                if is_terminal(msg, self.job):
                    return


#: Results may be large; the server is trusted with sizes (headers are still validated).
_CLIENT_LIMITS = P.Limits(max_total_bytes=2**40)


def unavailable_message(cfg: ClientConfig, waited_s: float) -> str:
    keyed = bool(cfg.server_public_key)
    hint = ("check the server public key and that this client's key is in the server's authorized_clients"
            if keyed else "if the server was started with --keys, set its public key and the client keys folder")
    return (f"no reply from the job server at {cfg.address} within {waited_s:.1f} s; is `backend serve` "
            f"running and reachable there? ({hint})")


def start_job(config: ClientConfig, submit: P.Submit, events: queue.Queue | None = None) -> JobThread:
    """Start a :class:`JobThread` for ``submit`` and return it (running)."""
    thread = JobThread(config, submit, events)
    thread.start()
    return thread


def ping(config: ClientConfig, events: queue.Queue | None = None) -> JobThread:
    """Start a thread that pings the server once (``Pong`` or ``ClientFailed`` arrive as events)."""
    thread = JobThread(config, None, events)
    thread.start()
    return thread


def is_loopback(address: str) -> bool:
    """Whether ``address`` stays on this machine: ``ipc://``, ``inproc://``, or ``tcp://`` to ``localhost``,
    127.0.0.0/8 or ``::1`` (what Blender allows with Online Access off)."""
    scheme, _, rest = address.strip().partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0] if not rest.startswith("[") else rest[1:rest.find("]")]
    host = host.split(";")[-1]  # tcp://SOURCE;HOST:PORT connects to HOST
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def network_refusal(address: str, online_access: bool) -> str | None:
    """Why the add-on must not contact ``address`` (``None``: it may). Blender's rule for extensions:
    with Online Access off (Preferences > System > Network) only loopback is allowed."""
    if online_access or is_loopback(address):
        return None
    return (f"Online access is off in Blender (Preferences > System > Network > Allow Online Access), so the "
            f"add-on contacts only a server on this machine (tcp://127.0.0.1:PORT), not {address}")


def probe(config: ClientConfig, within_s: float = 1.5) -> str | None:
    """Ping the server and wait for the answer (at most ``within_s`` seconds of silence): ``None`` when it
    answered, else why not. Segment Scene calls it before rendering, so a dead server is reported at once."""
    return probe_server(config, within_s)[0]


def probe_server(config: ClientConfig, within_s: float = 1.5) -> tuple[str | None, P.Pong | None]:
    """:func:`probe` and the server's ``Pong`` (its device, cores and load), when it answered."""
    events: queue.Queue = queue.Queue()
    thread = JobThread(replace(config, timeout_s=min(config.timeout_s, within_s)), None, events)
    thread.start()
    thread.join(within_s + 5.0)
    if thread.is_alive():
        return "the server check did not end", None
    seen = drain(events)
    return probe_outcome(seen), probe_pong(seen)


def probe_pong(events: list) -> P.Pong | None:
    """The ``Pong`` among a ping thread's ``events``, if any."""
    return next((e for e in events if isinstance(e, P.Pong)), None)


def probe_outcome(events: list) -> str | None:
    """``None`` if ``events`` (of a ping thread) hold a ``Pong``, else the failure's message."""
    for event in events:
        if isinstance(event, P.Pong):
            return None
        if isinstance(event, (ClientFailed, P.Error)):
            return event.message
    return "the server did not answer"
