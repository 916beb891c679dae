"""Low-level codec of the wire protocol: allowed dtypes, limits, error codes, and the checked conversion of
JSON header values and raw array frames. Standard library and numpy only (the Blender add-on imports it).

:mod:`backend.wire.protocol` builds the typed messages on top of these pieces.

>>> decode_arrays([{"name": "a", "dtype": "uint8", "shape": [2]}], [b"\\x01\\x02"], DEFAULT_LIMITS)["a"].tolist()
[1, 2]
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Version of the wire format; a peer speaking another version gets ``bad_version``.
PROTOCOL_VERSION = 1

#: The only dtypes that may cross the wire (by name; always little-endian on the wire).
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool")
}

# \A...\Z, not ^...$: "$" also matches before a final newline ("abc\n" would pass).
JOB_ID = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
ARRAY_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_.]{0,63}\Z")
DEVICE_NAME = re.compile(r"\A(cpu|cuda(:[0-9]{1,2})?|mps)\Z")
#: A client's ownership token (jobs belong to the client that submitted them; see ``client_token``).
CLIENT_TOKEN = re.compile(r"\A[A-Za-z0-9_-]{16,128}\Z")
_MAX_JSON_INT = 2**53


class ErrorCode(enum.StrEnum):
    """Codes of :class:`Error` replies and :class:`ProtocolError` (strings on the wire)."""

    BAD_MESSAGE = "bad_message"  #: frames/header malformed (JSON, fields, types, frame count)
    BAD_VERSION = "bad_version"  #: header ``v`` is not :data:`PROTOCOL_VERSION`
    BAD_TYPE = "bad_type"  #: unknown message type, or one the receiver does not accept
    BAD_ARRAY = "bad_array"  #: array spec/dtype/shape/frame length or values invalid
    TOO_LARGE = "too_large"  #: a limit of :class:`Limits` exceeded
    BAD_OPTIONS = "bad_options"  #: :class:`JobOptions` invalid
    BAD_SCENE = "bad_scene"  #: the submitted scene is inconsistent
    DUPLICATE_JOB = "duplicate_job"  #: a job with this id exists
    QUEUE_FULL = "queue_full"  #: too many queued jobs
    UNKNOWN_JOB = "unknown_job"  #: no such job (or its result expired)
    NOT_READY = "not_ready"  #: fetch without wait on a job that has not finished
    JOB_FAILED = "job_failed"  #: the job raised, or the server died while running it
    OUT_OF_MEMORY = "out_of_memory"  #: the job ran out of (GPU) memory
    CANCELLED = "cancelled"  #: the job was cancelled
    INTERNAL = "internal"  #: a bug in the server; it keeps serving


class ProtocolError(ValueError):
    """A message could not be encoded or decoded; ``code`` is an :class:`ErrorCode` value.

    ``job`` is the job id of the offending message when its header named a valid one.
    """

    def __init__(self, code: str, message: str, job: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.job = job


@dataclass(frozen=True)
class Limits:
    """Bounds every decoded message is checked against before any array is used."""

    max_views: int = 2000
    """Most views in one submitted scene."""
    max_height: int = 8192
    """Largest image height in pixels."""
    max_width: int = 8192
    """Largest image width in pixels."""
    max_total_bytes: int = 2**31
    """Most array bytes in one message (all frames after the header)."""
    max_header_bytes: int = 256 * 1024
    """Largest JSON header frame."""
    max_arrays: int = 64
    """Most array frames in one message."""
    max_ndim: int = 6
    """Highest array rank."""
    max_masks_per_view: int = 4096
    """Most 2D masks per view in a submit."""
    max_string_chars: int = 4096
    """Longest string field."""
    max_list_items: int = 100_000
    """Longest list (or object) in a header."""


DEFAULT_LIMITS = Limits()



def decode_arrays(specs: list, frames: Sequence[Any], limits: Limits) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    total = 0
    for spec, frame in zip(specs, frames):
        if not isinstance(spec, dict) or set(spec) != {"name", "dtype", "shape"}:
            raise ProtocolError(ErrorCode.BAD_ARRAY, "each array spec must be {name, dtype, shape}")
        name, dname, shape = spec["name"], spec["dtype"], spec["shape"]
        if not isinstance(name, str) or not ARRAY_NAME.match(name) or name in out:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"invalid or repeated array name {str(name)[:40]!r}")
        if not isinstance(dname, str) or dname not in DTYPES:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r}: dtype {str(dname)[:20]!r} not allowed ({sorted(DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > limits.max_ndim
                or not all(type(s) is int and 0 <= s <= limits.max_total_bytes for s in shape)):
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r}: shape must be <= {limits.max_ndim} sizes in [0, {limits.max_total_bytes}]")
        dt = DTYPES[dname]
        nbytes = math.prod(shape) * dt.itemsize
        total += nbytes
        if total > limits.max_total_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"arrays exceed {limits.max_total_bytes} bytes")
        buf = as_buffer(frame)
        if buf.nbytes != nbytes:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r}: frame has {buf.nbytes} bytes, {dname}{shape} needs {nbytes}")
        if nbytes == 0:
            arr = np.zeros(shape, dt)
        else:
            arr = np.frombuffer(buf, dtype=dt).reshape(shape)
            if not arr.flags.aligned:
                arr = arr.copy()
        if dname == "bool" and arr.size and np.any(arr.view(np.uint8) > 1):
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r}: bool bytes must be 0 or 1")
        out[name] = arr
    return out


# ----------------------------------------------------------------------------------------------
# Helpers


def new_job_id() -> str:
    """A fresh random job id (uuid4 hex)."""
    import uuid

    return uuid.uuid4().hex


def check_job_id(job: str) -> None:
    if not isinstance(job, str) or not JOB_ID.fullmatch(job):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"job id must match [A-Za-z0-9_-]{{1,64}}, got {str(job)[:70]!r}")


def check_client_token(token: str | None) -> None:
    if token is not None and (not isinstance(token, str) or not CLIENT_TOKEN.fullmatch(token)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "client_token must match [A-Za-z0-9_-]{16,128}")


def as_buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    try:
        mv = memoryview(frame if buf is None else buf)
    except TypeError:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"frame of type {type(frame).__name__} is not bytes-like") from None
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def dtype_name(arr: np.ndarray, name: str) -> str:
    for dname, dt in DTYPES.items():
        if arr.dtype == dt or arr.dtype == dt.newbyteorder(">"):
            return dname
    raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r}: dtype {arr.dtype} not allowed ({sorted(DTYPES)})")


def expect_array(arr: Any, name: str, dtypes: str | tuple[str, ...], shape: tuple[int | None, ...], finite: bool = False) -> None:
    """Check an array's dtype name(s), shape (None = any size) and optionally finiteness."""
    dtypes = (dtypes,) if isinstance(dtypes, str) else dtypes
    if not isinstance(arr, np.ndarray) or dtype_name(arr, name) not in dtypes:
        got = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ProtocolError(ErrorCode.BAD_ARRAY, f"{name} must be {'/'.join(dtypes)}, got {got}")
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
        raise ProtocolError(ErrorCode.BAD_ARRAY, f"{name} must have shape {want}, got {list(arr.shape)}")
    if finite and arr.size and not np.isfinite(arr).all():
        raise ProtocolError(ErrorCode.BAD_ARRAY, f"{name} contains NaN or inf")


def _reject_constant(c: str) -> None:
    raise ValueError(f"{c} is not valid JSON")


def loads_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} is not valid UTF-8 JSON: {str(e)[:120]}") from None


def json_bytes(obj: Any, what: str) -> bytes:
    try:
        return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{what} is not JSON-serialisable: {e}") from None


_HINTS: dict[type, dict[str, Any]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def to_json(value: Any, typ: Any, where: str) -> Any:
    """JSON form of a typed header value (tuples → lists, dataclasses → objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = type_hints(type(value))
        return {f.name: to_json(getattr(value, f.name), hints[f.name], f"{where}.{f.name}")
                for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v, Any, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json(v, Any, where) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _bad(where: str, want: str, value: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, f"field {where!r} must be {want}, got {str(value)[:40]!r}")


def from_json(value: Any, typ: Any, where: str, limits: Limits) -> Any:
    """Check a header value against its annotation and convert it (lists → tuples where typed so)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return from_json(value, inner[0], where, limits)
    if typ is Any:
        return value
    if typ is str:
        if not isinstance(value, str) or len(value) > limits.max_string_chars:
            raise _bad(where, f"a string of <= {limits.max_string_chars} chars", value)
        return value
    if typ is bool:
        if type(value) is not bool:
            raise _bad(where, "a boolean", value)
        return value
    if typ is int:
        if type(value) is not int or abs(value) > _MAX_JSON_INT:
            raise _bad(where, "an integer", value)
        return value
    if typ is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _bad(where, "a finite number", value)
        return float(value)
    if origin in (list, tuple):
        if not isinstance(value, list) or len(value) > limits.max_list_items:
            raise _bad(where, "a list", value)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0], where, limits) for v in value)
        if origin is tuple:
            if len(value) != len(args):
                raise _bad(where, f"a list of {len(args)} values", value)
            return tuple(from_json(v, a, where, limits) for v, a in zip(value, args))
        return [from_json(v, args[0], where, limits) for v in value]
    if origin in (dict, Mapping) or typ is dict:
        if not isinstance(value, dict) or len(value) > limits.max_list_items:
            raise _bad(where, "an object", value)
        vt = args[1] if args else Any
        return {k: from_json(v, vt, f"{where}.{k}", limits) for k, v in value.items()}
    if isinstance(typ, type) and dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise _bad(where, "an object", value)
        hints = type_hints(typ)
        fields = {f.name: f for f in dataclasses.fields(typ)}
        if extra := set(value) - set(fields):
            raise ProtocolError(getattr(typ, "UNKNOWN_FIELD_CODE", ErrorCode.BAD_MESSAGE),
                                f"unknown fields {sorted(extra)[:5]} in {where!r}")
        kwargs = {k: from_json(v, hints[k], f"{where}.{k}", limits) for k, v in value.items()}
        try:
            return typ(**kwargs)
        except TypeError as e:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{where}: {e}") from None
    raise ProtocolError(ErrorCode.INTERNAL, f"unsupported field type {typ!r} at {where}")  # pragma: no cover
