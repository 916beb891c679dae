"""CurveZMQ key files of the job service (``backend keys DIR``).

Layout of a keys folder made by :func:`create_keys`::

    DIR/server.key            server public key   (give to clients)
    DIR/server.key_secret     server keypair      (stays on the server)
    DIR/client.key            client public key
    DIR/client.key_secret     client keypair      (give to the client, e.g. the Blender add-on)
    DIR/authorized_clients/   public keys the server accepts (client.key is copied here;
                              add more ``*.key`` files for more clients)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
CLIENT_PUBLIC = "client.key"
CLIENT_SECRET = "client.key_secret"
AUTHORIZED_DIR = "authorized_clients"


class KeysError(ValueError):
    """Key files are missing or unreadable."""


@dataclass(frozen=True)
class Keypair:
    """A CurveZMQ keypair (Z85 bytes); ``secret`` is None for a public key alone."""

    public: bytes
    secret: bytes | None = None


def create_keys(folder: Path, overwrite: bool = False) -> Path:
    """Create server and client keypairs in ``folder`` (see the module docstring); returns it."""
    if not zmq.has("curve"):
        raise KeysError("this libzmq was built without CURVE support")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise KeysError(f"{folder} exists and is not a folder")
    if (folder / SERVER_SECRET).exists() and not overwrite:
        raise KeysError(f"{folder / SERVER_SECRET} exists; use --force to replace the keys "
                        "(clients holding the old ones will be refused)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)  # secrets are never readable by others, not even for an instant
    try:
        zmq.auth.create_certificates(str(folder), "server")
        zmq.auth.create_certificates(str(folder), "client")
    finally:
        os.umask(old)
    auth = folder / AUTHORIZED_DIR
    auth.mkdir(mode=0o700, exist_ok=True)
    auth.chmod(0o700)  # whatever the umask: who may connect is not for others to change
    shutil.copy(folder / CLIENT_PUBLIC, auth / CLIENT_PUBLIC)
    for secret in (SERVER_SECRET, CLIENT_SECRET):
        (folder / secret).chmod(0o600)
    return folder


def load_keypair(path: Path | str, need_secret: bool) -> Keypair:
    """Read a ``.key`` / ``.key_secret`` certificate file."""
    path = Path(path)
    if need_secret and path.suffix == ".key" and path.with_suffix(".key_secret").exists():
        path = path.with_suffix(".key_secret")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise KeysError(f"cannot read CurveZMQ key {path}: {e}") from None
    if need_secret and not secret:
        raise KeysError(f"{path} holds no secret key (use the .key_secret file)")
    return Keypair(public, secret)


def server_keypair(folder: Path) -> tuple[Keypair, Path]:
    """The server keypair and the authorised-clients folder of a keys folder."""
    folder = Path(folder)
    auth = folder / AUTHORIZED_DIR
    if not auth.is_dir():
        raise KeysError(f"{auth} is missing: create keys with `backend keys {folder}`")
    return load_keypair(folder / SERVER_SECRET, need_secret=True), auth
