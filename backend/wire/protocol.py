"""Wire protocol of the job service: typed messages, their encoding as ZeroMQ multipart frames, and
strict validation of everything a peer sends.

A message is a list of frames: frame 0 is a small UTF-8 JSON header
``{"v": 1, "type": ..., <fields>..., "arrays": [{"name", "dtype", "shape"}, ...]}`` and every further
frame holds the raw little-endian, C-ordered bytes of one array listed in ``"arrays"`` (same order).
Frames are sent zero-copy (``send_multipart(frames, copy=False)``) and arrays are decoded with
:func:`numpy.frombuffer`; nothing is ever pickled.

Standard library and numpy only (no torch, no pyzmq): the Blender add-on imports this module from the
runtime wheel it bundles. Frame-level checks and JSON conversion live in :mod:`backend.wire.codec`.

>>> frames = encode(Ping(token=7))
>>> decode(frames)
Ping(token=7)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from backend.wire import presets
from backend.wire.codec import (
    DEFAULT_LIMITS,
    DEVICE_NAME,
    DTYPES,
    JOB_ID,
    PROTOCOL_VERSION,
    ErrorCode,
    Limits,
    ProtocolError,
    as_buffer,
    check_client_token,
    check_job_id,
    decode_arrays,
    dtype_name,
    expect_array,
    json_bytes,
    loads_json,
    new_job_id,
    to_json,
    type_hints,
    from_json,
    ARRAY_NAME,
)

__all__ = ["DEFAULT_LIMITS", "DTYPES", "PROTOCOL_VERSION", "ErrorCode", "Limits", "ProtocolError", "new_job_id",
           "JobOptions", "ProgressEvent", "ResultArrays", "JobResult", "Message", "Submit", "Accepted", "Progress",
           "Result", "Error", "Cancel", "CancelAck", "Status", "JobInfo", "StatusReply", "Ping", "Pong", "Fetch",
           "MESSAGE_TYPES", "CLIENT_TYPES", "SERVER_TYPES", "encode", "decode"]

_META_ARRAY = "_meta_json"


# ----------------------------------------------------------------------------------------------
# Options, progress events and results (shared with the pipeline and the add-on)


@dataclass(frozen=True)
class JobOptions:
    """What the client asks of a segmentation job (validated with :meth:`validate`)."""

    UNKNOWN_FIELD_CODE: ClassVar[str] = ErrorCode.BAD_OPTIONS
    PRESETS: ClassVar[tuple[str, ...]] = presets.PRESET_NAMES
    MASK_SOURCES: ClassVar[tuple[str, ...]] = presets.MASK_SOURCE_NAMES
    GEOMETRIES: ClassVar[tuple[str, ...]] = presets.GEOMETRIES

    preset: str = presets.DEFAULT_JOB_PRESET
    """Named training preset: one of :attr:`PRESETS`."""
    iterations: int | None = None
    """Training iterations; None keeps the preset's."""
    mask_source: str = "classical"
    """2D mask provider: one of :attr:`MASK_SOURCES` (``given`` needs masks in the submit)."""
    geometry: str = "auto"
    """``depth`` (given depth is the geometry), ``nerf`` (learn density) or ``auto``."""
    thresholds: tuple[float, ...] = ()
    """Strictly increasing cut thresholds for the returned labels; empty keeps the defaults."""
    max_points: int = presets.DEFAULT_MAX_POINTS
    """Most points in the returned point cloud."""
    device: str | None = None
    """Torch device override (``cpu``, ``cuda``, ``cuda:N``, ``mps``); None uses the server's."""
    seed: int = 0
    """Random seed of the job."""

    def validate(self) -> None:
        """Raise :class:`ProtocolError` (``bad_options``) naming the first invalid field."""

        def bad(msg: str) -> ProtocolError:
            return ProtocolError(ErrorCode.BAD_OPTIONS, msg)

        if self.preset not in self.PRESETS:
            raise bad(f"preset must be one of {list(self.PRESETS)}, got {self.preset!r}")
        if self.iterations is not None and not 1 <= self.iterations <= 10_000_000:
            raise bad(f"iterations must be in [1, 1e7], got {self.iterations}")
        if self.mask_source not in self.MASK_SOURCES:
            raise bad(f"mask_source must be one of {list(self.MASK_SOURCES)}, got {self.mask_source!r}")
        if self.geometry not in self.GEOMETRIES:
            raise bad(f"geometry must be one of {list(self.GEOMETRIES)}, got {self.geometry!r}")
        if len(self.thresholds) > 64:
            raise bad(f"at most 64 thresholds, got {len(self.thresholds)}")
        for t in self.thresholds:
            if not (math.isfinite(t) and t >= 0):
                raise bad(f"thresholds must be finite and >= 0, got {t}")
        if any(b <= a for a, b in zip(self.thresholds, self.thresholds[1:])):
            raise bad("thresholds must be strictly increasing")
        if not 1 <= self.max_points <= 50_000_000:
            raise bad(f"max_points must be in [1, 5e7], got {self.max_points}")
        if self.device is not None and not DEVICE_NAME.match(self.device):
            raise bad(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")
        if not 0 <= self.seed < 2**32:
            raise bad(f"seed must be in [0, 2**32), got {self.seed}")


@dataclass(frozen=True)
class ProgressEvent:
    """What a running job reports through its ``progress`` callback."""

    stage: str
    """Pipeline stage, e.g. ``masks``, ``training``, ``segmentation``."""
    step: int = 0
    """Steps done in this stage."""
    total: int = 0
    """Steps in this stage (0 when unknown)."""
    message: str = ""
    """Human-readable detail."""
    eta: float | None = None
    """Estimated seconds left in the job, if known."""
    losses: Mapping[str, float] = field(default_factory=dict)
    """Current loss values by name (training)."""


class ResultArrays:
    """Names of the standard arrays of a :class:`JobResult` (all optional, checked when present)."""

    POINTS = "points"  #: float32 [N, 3], Blender (world) units
    COLORS = "colors"  #: uint8 [N, 3]
    PARENTS = "parents"  #: int32 [2N-1], single-linkage tree, leaves (points) first, root its own parent
    ALTITUDES = "altitudes"  #: float32 [2N-1], merge height of each node (0 for leaves)
    LABELS = "labels"  #: int32 [T, N], labels at ``thresholds``
    THRESHOLDS = "thresholds"  #: float32 [T]


@dataclass
class JobResult:
    """A finished job's output: named arrays plus JSON-able metadata (e.g. ``meta["hierarchy"]``)."""

    arrays: dict[str, np.ndarray]
    """Arrays by name; see :class:`ResultArrays` for the standard ones."""
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable metadata (no NaN/inf)."""

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """Raise :class:`ProtocolError` when names, dtypes, shapes or metadata are invalid."""
        if not isinstance(self.arrays, dict) or not isinstance(self.meta, dict):
            raise ProtocolError(ErrorCode.BAD_ARRAY, "JobResult needs a dict of arrays and a dict of metadata")
        for name, arr in self.arrays.items():
            if not isinstance(name, str) or not ARRAY_NAME.match(name) or name.startswith("_"):
                raise ProtocolError(ErrorCode.BAD_ARRAY, f"invalid result array name {name!r}")
            if not isinstance(arr, np.ndarray):
                raise ProtocolError(ErrorCode.BAD_ARRAY, f"result {name!r} is not a numpy array")
            dtype_name(arr, name)
        a = self.arrays
        R = ResultArrays
        n = None
        if R.POINTS in a:
            expect_array(a[R.POINTS], R.POINTS, "float32", (None, 3), finite=True)
            n = a[R.POINTS].shape[0]
        if R.COLORS in a:
            expect_array(a[R.COLORS], R.COLORS, "uint8", (n, 3))
        if (R.PARENTS in a) != (R.ALTITUDES in a):
            raise ProtocolError(ErrorCode.BAD_ARRAY, "parents and altitudes come together")
        if R.PARENTS in a:
            expect_array(a[R.PARENTS], R.PARENTS, "int32", (None,))
            m = a[R.PARENTS].shape[0]
            expect_array(a[R.ALTITUDES], R.ALTITUDES, "float32", (m,), finite=True)
            if m and (a[R.PARENTS].min() < 0 or a[R.PARENTS].max() >= m):
                raise ProtocolError(ErrorCode.BAD_ARRAY, "parents must index nodes of the tree")
        if R.THRESHOLDS in a:
            expect_array(a[R.THRESHOLDS], R.THRESHOLDS, "float32", (None,), finite=True)
        if R.LABELS in a:
            t = a[R.THRESHOLDS].shape[0] if R.THRESHOLDS in a else None
            expect_array(a[R.LABELS], R.LABELS, "int32", (t, n))
        json_bytes(self.meta, "result metadata")


# ----------------------------------------------------------------------------------------------
# Messages


@dataclass
class Message:
    """Base of all messages; ``TYPE`` is the header's ``type``; array-valued fields are in ``ARRAYS``."""

    TYPE: ClassVar[str] = ""
    ARRAYS: ClassVar[tuple[str, ...]] = ()

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> None:
        """Semantic checks beyond field types (raise :class:`ProtocolError`)."""
        job = getattr(self, "job", None)
        if job is not None:
            check_job_id(job)
        check_client_token(getattr(self, "client_token", None))

    def _arrays(self) -> dict[str, np.ndarray]:
        """The array frames to send, by name."""
        return {}

    @classmethod
    def _build(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Message":
        """Make the message from checked header fields and decoded arrays."""
        if arrays:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"{cls.TYPE} carries no arrays, got {sorted(arrays)}")
        return cls(**fields)


@dataclass
class Submit(Message):
    """Client → server: a scene to segment. ``rgb`` uint8 [N,H,W,3|4] (4: RGBA, alpha used as the
    foreground), ``c2w`` float32 [N,4,4] camera-to-world (OpenGL axes), ``intrinsics`` float32/64
    [N,3,3] or [3,3], optional ``depth`` float32 [N,H,W] (planar, 0 = background), optional ``masks``:
    per view a bool [M_i,H,W] stack. Answered by :class:`Accepted` or :class:`Error`."""

    TYPE: ClassVar[str] = "submit"
    ARRAYS: ClassVar[tuple[str, ...]] = ("rgb", "c2w", "intrinsics", "depth", "masks")

    job: str
    """Client-chosen job id (``[A-Za-z0-9_-]{1,64}``, e.g. a uuid4 hex)."""
    rgb: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray | None = None
    masks: list[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)
    """Optional view names (empty or one per view)."""
    scale: float = 1.0
    """Normalisation already applied to poses/depth: ``normalised = (world - offset) * scale``."""
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    options: JobOptions = field(default_factory=JobOptions)
    client_token: str | None = None
    """The submitting client's secret token (``[A-Za-z0-9_-]{16,128}``): without CurveZMQ keys a job belongs
    to it (with keys, to the client's public key); None: to the connection's routing id."""

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"rgb": self.rgb, "c2w": self.c2w, "intrinsics": self.intrinsics}
        if self.depth is not None:
            out["depth"] = self.depth
        if self.masks is not None:
            h, w = self.rgb.shape[1:3]
            out["masks"] = (
                np.concatenate(self.masks, axis=0) if self.masks else np.zeros((0, h, w), np.bool_)
            )
            out["mask_counts"] = np.asarray([m.shape[0] for m in self.masks], np.int32)
        return out

    @classmethod
    def _build(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Submit":
        allowed = {"rgb", "c2w", "intrinsics", "depth", "masks", "mask_counts"}
        if extra := set(arrays) - allowed:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"unexpected submit arrays {sorted(extra)}")
        for req in ("rgb", "c2w", "intrinsics"):
            if req not in arrays:
                raise ProtocolError(ErrorCode.BAD_ARRAY, f"submit lacks the {req!r} array")
        if ("masks" in arrays) != ("mask_counts" in arrays):
            raise ProtocolError(ErrorCode.BAD_ARRAY, "masks and mask_counts come together")
        masks = None
        if "masks" in arrays:
            counts, stack = arrays["mask_counts"], arrays["masks"]
            expect_array(counts, "mask_counts", "int32", (None,))
            expect_array(stack, "masks", "bool", (None, None, None))
            if (counts < 0).any() or int(counts.sum(dtype=np.int64)) != stack.shape[0]:
                raise ProtocolError(ErrorCode.BAD_ARRAY, "mask_counts must be >= 0 and sum to the masks stacked")
            ends = np.cumsum(counts, dtype=np.int64)
            masks = [stack[e - c : e] for c, e in zip(counts.tolist(), ends.tolist())]
        return cls(
            rgb=arrays["rgb"], c2w=arrays["c2w"], intrinsics=arrays["intrinsics"],
            depth=arrays.get("depth"), masks=masks, **fields,
        )

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().validate(limits)
        rgb = self.rgb
        expect_array(rgb, "rgb", "uint8", (None, None, None, None))
        n, h, w, c = rgb.shape
        if c not in (3, 4):
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"rgb must have 3 or 4 channels, got {c}")
        if not 1 <= n <= limits.max_views:
            raise ProtocolError(ErrorCode.TOO_LARGE if n else ErrorCode.BAD_ARRAY,
                                f"views must be in [1, {limits.max_views}], got {n}")
        if not (1 <= h <= limits.max_height and 1 <= w <= limits.max_width):
            raise ProtocolError(ErrorCode.TOO_LARGE, f"image size {h}x{w} outside [1..{limits.max_height}]x[1..{limits.max_width}]")
        expect_array(self.c2w, "c2w", "float32", (n, 4, 4), finite=True)
        k = self.intrinsics
        if k.ndim == 2:
            expect_array(k, "intrinsics", ("float32", "float64"), (3, 3), finite=True)
        else:
            expect_array(k, "intrinsics", ("float32", "float64"), (n, 3, 3), finite=True)
        if (k[..., 0, 0] <= 0).any() or (k[..., 1, 1] <= 0).any():
            raise ProtocolError(ErrorCode.BAD_ARRAY, "intrinsics need positive focal lengths")
        if self.depth is not None:
            expect_array(self.depth, "depth", "float32", (n, h, w), finite=True)
            if (self.depth < 0).any():
                raise ProtocolError(ErrorCode.BAD_ARRAY, "depth must be >= 0 (0 = background)")
        if self.masks is not None:
            if not isinstance(self.masks, list) or len(self.masks) != n:
                raise ProtocolError(ErrorCode.BAD_ARRAY, f"masks must be a list of {n} stacks")
            for i, m in enumerate(self.masks):
                expect_array(m, f"masks[{i}]", "bool", (None, h, w))
                if m.shape[0] > limits.max_masks_per_view:
                    raise ProtocolError(ErrorCode.TOO_LARGE, f"view {i} has {m.shape[0]} masks (max {limits.max_masks_per_view})")
        if self.names and len(self.names) != n:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{len(self.names)} names for {n} views")
        if not (self.scale > 0):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"scale must be > 0, got {self.scale}")
        if len(self.offset) != 3:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "offset must have 3 values")
        self.options.validate()


@dataclass
class Accepted(Message):
    """Server → client: the submit was queued; ``queue_position`` 0 means it runs now."""

    TYPE: ClassVar[str] = "accepted"
    job: str
    queue_position: int = 0


@dataclass
class Progress(Message):
    """Server → client: a job's progress (also sent while queued, with ``queue_position``)."""

    TYPE: ClassVar[str] = "progress"
    job: str
    stage: str
    step: int = 0
    total: int = 0
    message: str = ""
    eta: float | None = None
    """Estimated seconds left, if known."""
    losses: dict[str, float] = field(default_factory=dict)
    queue_position: int | None = None
    """Jobs ahead of this one while queued; None once running."""

    @classmethod
    def from_event(cls, job: str, event: ProgressEvent) -> "Progress":
        """Wire form of a job's :class:`ProgressEvent` (non-finite losses are named in the message)."""
        losses: dict[str, float] = {}
        bad: list[str] = []
        for k, v in dict(event.losses).items():
            if math.isfinite(float(v)):
                losses[str(k)] = float(v)
            else:
                bad.append(f"{k}={float(v)}")
        message = str(event.message) + (f" (non-finite losses: {', '.join(bad)})" if bad else "")
        eta = None if event.eta is None or not math.isfinite(float(event.eta)) else float(event.eta)
        return cls(job=job, stage=str(event.stage), step=int(event.step), total=int(event.total),
                   message=message, eta=eta, losses=losses)


@dataclass
class Result(Message):
    """Server → client: a finished job's :class:`JobResult` (arrays as frames, meta as a JSON frame)."""

    TYPE: ClassVar[str] = "result"
    ARRAYS: ClassVar[tuple[str, ...]] = ("arrays", "meta")
    job: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_job_result(self) -> JobResult:
        return JobResult(arrays=dict(self.arrays), meta=self.meta)

    def _arrays(self) -> dict[str, np.ndarray]:
        meta = np.frombuffer(json_bytes(self.meta, "result metadata"), np.uint8)
        return {**self.arrays, _META_ARRAY: meta}

    @classmethod
    def _build(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> "Result":
        if _META_ARRAY not in arrays:
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"result lacks {_META_ARRAY}")
        raw = arrays.pop(_META_ARRAY)
        expect_array(raw, _META_ARRAY, "uint8", (None,))
        meta = loads_json(raw.tobytes(), "result metadata")
        if not isinstance(meta, dict):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "result metadata must be a JSON object")
        return cls(arrays=arrays, meta=meta, **fields)

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().validate(limits)
        JobResult(self.arrays, self.meta).validate(limits)


@dataclass
class Error(Message):
    """Either direction: something failed; ``code`` is an :class:`ErrorCode` value."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    job: str | None = None

    def validate(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().validate(limits)
        if not re.fullmatch(r"[a-z_]{1,32}", self.code):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"invalid error code {self.code!r}")


@dataclass
class Cancel(Message):
    """Client → server: cancel a queued or running job. Answered by :class:`CancelAck`."""

    TYPE: ClassVar[str] = "cancel"
    job: str
    client_token: str | None = None


@dataclass
class CancelAck(Message):
    """Server → client: the job's state after the cancel request (``cancelled``, ``cancelling``,
    or the final state when it had already finished)."""

    TYPE: ClassVar[str] = "cancel_ack"
    job: str
    state: str


@dataclass
class Status(Message):
    """Client → server: ask for the server's state (one job when ``job`` is given)."""

    TYPE: ClassVar[str] = "status"
    job: str | None = None
    client_token: str | None = None


@dataclass(frozen=True)
class JobInfo:
    """One job's state in a :class:`StatusReply`."""

    job: str
    state: str
    """``queued``, ``running``, ``cancelling``, ``done``, ``failed`` or ``cancelled``."""
    stage: str = ""
    step: int = 0
    total: int = 0
    queue_position: int | None = None
    created: float = 0.0
    """Unix time of the submit."""
    updated: float = 0.0
    """Unix time of the last state change."""
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class StatusReply(Message):
    """Server → client: jobs known to the server (newest first, capped), the queue and the device."""

    TYPE: ClassVar[str] = "status_reply"
    device: str
    server_version: str
    jobs: list[JobInfo] = field(default_factory=list)
    queue: list[str] = field(default_factory=list)
    """Queued job ids, next first."""
    running: str | None = None
    protocol: int = PROTOCOL_VERSION


@dataclass
class Ping(Message):
    """Client → server liveness check (also the client's heartbeat); answered by :class:`Pong`."""

    TYPE: ClassVar[str] = "ping"
    token: int = 0


@dataclass
class Pong(Message):
    """Server → client: reply to :class:`Ping` with the same ``token``, and what the server runs jobs on (so a
    client can choose a preset that fits and say how long a job will take there)."""

    TYPE: ClassVar[str] = "pong"
    token: int = 0
    device: str = ""
    """The jobs' torch device (``cpu``, ``cuda``, ``cuda:0``...); empty from a server that does not say."""
    cpu_cores: int = 0
    """CPU cores of the server's machine (0: unknown)."""
    load: float = 0.0
    """The machine's 1-minute load average (0: unknown): with ``cpu_cores`` a hint of how busy it is."""


@dataclass
class Fetch(Message):
    """Client → server: the result of a job by id (e.g. after reconnecting). With ``wait`` a job
    still queued/running streams progress and its result to this client later; without it such
    a job answers ``not_ready``."""

    TYPE: ClassVar[str] = "fetch"
    job: str
    wait: bool = True
    client_token: str | None = None


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Submit, Accepted, Progress, Result, Error, Cancel, CancelAck, Status, StatusReply, Ping, Pong, Fetch)
}
#: Types a server accepts from clients.
CLIENT_TYPES: tuple[type[Message], ...] = (Submit, Cancel, Status, Ping, Fetch)
#: Types a client accepts from the server.
SERVER_TYPES: tuple[type[Message], ...] = (Accepted, Progress, Result, Error, CancelAck, StatusReply, Pong)


# ----------------------------------------------------------------------------------------------
# Encoding


def encode(msg: Message, limits: Limits = DEFAULT_LIMITS, validate: bool = True) -> list[Any]:
    """Frames of ``msg``: ``[header bytes, array buffer, ...]`` ready for
    ``socket.send_multipart(frames, copy=False)`` (array frames are views, not copies, when the
    arrays are already C-contiguous little-endian). Raises :class:`ProtocolError` when the
    message is invalid (``validate``) or exceeds ``limits``."""
    if type(msg) not in MESSAGE_TYPES.values():
        raise ProtocolError(ErrorCode.BAD_TYPE, f"not a protocol message: {type(msg).__name__}")
    if validate:
        msg.validate(limits)
    header: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": msg.TYPE}
    hints = type_hints(type(msg))
    for f in dataclasses.fields(msg):
        if f.name not in msg.ARRAYS:
            header[f.name] = to_json(getattr(msg, f.name), hints[f.name], f.name)
    specs, frames = [], []
    total = 0
    for name, arr in msg._arrays().items():
        if not isinstance(arr, np.ndarray):
            raise ProtocolError(ErrorCode.BAD_ARRAY, f"array {name!r} is not a numpy array")
        dname = dtype_name(arr, name)
        arr = arr.astype(DTYPES[dname], order="C", copy=False)  # (ascontiguousarray would make 0-d 1-d)
        specs.append({"name": name, "dtype": dname, "shape": list(arr.shape)})
        frames.append(arr.reshape(-1).view(np.uint8))
        total += arr.nbytes
    if len(frames) > limits.max_arrays:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(frames)} arrays (max {limits.max_arrays})")
    if total > limits.max_total_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{total} array bytes (max {limits.max_total_bytes})")
    header["arrays"] = specs
    head = json_bytes(header, "header")
    if len(head) > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header of {len(head)} bytes (max {limits.max_header_bytes})")
    return [head, *frames]


# ----------------------------------------------------------------------------------------------
# Decoding


def decode(
    frames: Sequence[Any],
    limits: Limits = DEFAULT_LIMITS,
    accept: Sequence[type[Message]] | None = None,
) -> Message:
    """Parse and fully validate a message from its frames (``bytes``, ``memoryview`` or
    ``zmq.Frame``). Arrays are read-only views of the frames when aligned. ``accept`` restricts
    the message types. Raises :class:`ProtocolError` for anything malformed."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a message needs at least a header frame")
    if len(frames) > 1 + limits.max_arrays:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(frames) - 1} array frames (max {limits.max_arrays})")
    head = as_buffer(frames[0])
    if head.nbytes > limits.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header of {head.nbytes} bytes (max {limits.max_header_bytes})")
    header = loads_json(head.tobytes(), "header")
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "the header must be a JSON object")
    job = header.get("job")
    job = job if isinstance(job, str) and JOB_ID.fullmatch(job) else None
    try:
        return _decode_header(header, frames, limits, accept)
    except ProtocolError as e:
        e.job = e.job or job
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # defensive: never leak
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{type(e).__name__}: {e}", job) from None


def _decode_header(header: dict, frames: Sequence[Any], limits: Limits, accept) -> Message:
    v = header.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {v!r} (this side speaks {PROTOCOL_VERSION})")
    typ = header.get("type")
    cls = MESSAGE_TYPES.get(typ) if isinstance(typ, str) else None
    if cls is None:
        raise ProtocolError(ErrorCode.BAD_TYPE, f"unknown message type {str(typ)[:40]!r}")
    if accept is not None and cls not in accept:
        raise ProtocolError(ErrorCode.BAD_TYPE, f"{typ!r} is not accepted here")
    specs = header.get("arrays")
    if not isinstance(specs, list):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header 'arrays' must be a list")
    if len(specs) != len(frames) - 1:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header lists {len(specs)} arrays but {len(frames) - 1} array frames came")
    arrays = decode_arrays(specs, frames[1:], limits)

    hints = type_hints(cls)
    header_fields = [f for f in dataclasses.fields(cls) if f.name not in cls.ARRAYS]
    known = {"v", "type", "arrays"} | {f.name for f in header_fields}
    if extra := set(header) - known:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"unknown header fields {sorted(extra)[:5]} for {typ!r}")
    values: dict[str, Any] = {}
    for f in header_fields:
        if f.name in header:
            values[f.name] = from_json(header[f.name], hints[f.name], f.name, limits)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{typ!r} lacks the field {f.name!r}")
    msg = cls._build(values, arrays)
    msg.validate(limits)
    return msg
