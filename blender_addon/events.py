"""Events the client thread posts besides the server's own messages (bpy-free, zmq-free).

The thread's queue carries either a :mod:`blender_addon.protocol` server message (``Accepted``,
``Progress``, ``Result``, ``Error``, ``CancelAck``, ``Pong``) or one of these local events.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``code`` of a :class:`ClientFailed` when the server stayed silent past the timeout.
SERVER_UNAVAILABLE = "server_unavailable"


@dataclass(frozen=True)
class Sent:
    """The submit left this machine (queued in the socket); the server has not answered yet."""

    job: str
    nbytes: int


@dataclass(frozen=True)
class ClientFailed:
    """The job could not be followed for a local reason: the server did not answer within the
    timeout (``code`` :data:`SERVER_UNAVAILABLE`), pyzmq or the key files are missing
    (``no_pyzmq``, ``bad_keys``), or a message could not be encoded/decoded (a protocol error code)."""

    job: str | None
    code: str
    message: str


@dataclass(frozen=True)
class ThreadDone:
    """The client thread ended (always the last event it posts)."""

    job: str | None
