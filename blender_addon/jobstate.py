"""The job state machine shown by the panel (bpy-free; tested with plain pytest).

Phases::

    idle ─▶ rendering ─▶ submitted ─▶ queued ─▶ training ─▶ segmenting ─▶ done
                │             │          │          │            │
                └─────────────┴──────────┴──────────┴────────────┴──▶ failed | cancelled

(``submitted`` may skip ``queued``/``training`` when the server reports a later stage first; a finished
job may start again at ``rendering``; ``done`` may still become ``failed`` when importing the result
fails.) :func:`transition` enforces this table; :func:`apply_event` maps the client thread's events
(server messages and :mod:`blender_addon.events`) onto it, ignoring stale events (another job's, or
anything after a final phase) and never moving a job backwards.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass, field

from backend.wire import job_progress
from backend.wire import protocol as P
from .events import ClientFailed, Sent


class Phase(enum.StrEnum):
    IDLE = "idle"
    RENDERING = "rendering"
    SUBMITTED = "submitted"
    QUEUED = "queued"
    TRAINING = "training"
    SEGMENTING = "segmenting"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = frozenset({Phase.DONE, Phase.FAILED, Phase.CANCELLED})
#: Phases in which a job is under way (the Cancel button is enabled, Segment Scene is not).
ACTIVE = frozenset({Phase.RENDERING, Phase.SUBMITTED, Phase.QUEUED, Phase.TRAINING, Phase.SEGMENTING})

_ORDER = {p: i for i, p in enumerate(
    (Phase.IDLE, Phase.RENDERING, Phase.SUBMITTED, Phase.QUEUED, Phase.TRAINING, Phase.SEGMENTING))}
_STOP = {Phase.FAILED, Phase.CANCELLED}
_RESTART = {Phase.IDLE, Phase.RENDERING, Phase.SUBMITTED}

#: Allowed transitions (self-transitions update the step/message of a running phase).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.RENDERING, Phase.SUBMITTED, Phase.FAILED}),
    Phase.RENDERING: frozenset({Phase.RENDERING, Phase.SUBMITTED} | _STOP),
    Phase.SUBMITTED: frozenset({Phase.QUEUED, Phase.TRAINING, Phase.SEGMENTING, Phase.DONE} | _STOP),
    Phase.QUEUED: frozenset({Phase.QUEUED, Phase.TRAINING, Phase.SEGMENTING, Phase.DONE} | _STOP),
    Phase.TRAINING: frozenset({Phase.TRAINING, Phase.SEGMENTING, Phase.DONE} | _STOP),
    Phase.SEGMENTING: frozenset({Phase.SEGMENTING, Phase.DONE} | _STOP),
    Phase.DONE: frozenset(_RESTART | {Phase.FAILED}),
    Phase.FAILED: frozenset(_RESTART),
    Phase.CANCELLED: frozenset(_RESTART),
}

#: The plan of a job started without one (the add-on's default render, the cpu preset's 1,500 steps).
DEFAULT_PLAN = job_progress.JobPlan(views=32, resolution=200, iterations=1500, preset="cpu")

#: Server stage names (lower-case prefixes) reported while segmenting; every other running stage
#: (``starting``, ``masks``, ``training``...) counts as training.
SEGMENTING_STAGES = ("segment", "pointcloud", "point_cloud", "points", "fuse", "fusion", "tree", "export", "label")


class InvalidTransition(RuntimeError):
    """A transition the table :data:`TRANSITIONS` does not allow."""


@dataclass(frozen=True)
class JobState:
    """What the panel shows about the current (or last) job. Immutable: every change is a new value."""

    phase: Phase = Phase.IDLE
    job: str = ""
    """Job id (empty before submitting)."""
    stage: str = ""
    """The server's stage name (``queued``, ``starting``, ``masks``, ``training``...) or ``render``."""
    step: int = 0
    total: int = 0
    message: str = ""
    eta: float | None = None
    """Seconds left as estimated by the server, if known."""
    queue_position: int | None = None
    progress: float = 0.0
    """Overall progress in [0, 1] (monotone while the job runs)."""
    error_code: str = ""
    error: str = ""
    losses: dict = field(default_factory=dict)
    cancel_requested: bool = False
    started: float = 0.0
    """``time.monotonic()`` when the job started (0 before)."""
    tracker: job_progress.Tracker | None = None
    """The bar over all stages and the ETA (:mod:`backend.wire.job_progress`); None before a job."""

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def final(self) -> bool:
        return self.phase in FINAL

    @property
    def percent(self) -> float:
        return 100.0 * self.progress


def phase_for_stage(stage: str, queue_position: int | None = None) -> Phase:
    """The phase a server progress ``stage`` belongs to."""
    s = stage.lower()
    if s == "queued" or queue_position is not None:
        return Phase.QUEUED
    if s.startswith(SEGMENTING_STAGES):
        return Phase.SEGMENTING
    return Phase.TRAINING


def transition(state: JobState, phase: Phase, now: float | None = None, **changes) -> JobState:
    """``state`` moved to ``phase`` with field ``changes``; raises :class:`InvalidTransition`.

    The job's :class:`job_progress.Tracker` follows the new stage / step (``now``: ``time.monotonic()``)."""
    phase = Phase(phase)
    if phase not in TRANSITIONS[state.phase]:
        raise InvalidTransition(f"job state cannot go from {state.phase} to {phase}")
    new = dataclasses.replace(state, phase=phase, **changes)
    if new.tracker is None or phase not in ACTIVE | {Phase.DONE}:
        return dataclasses.replace(new, progress=1.0) if phase == Phase.DONE and new.tracker is None else new
    now = time.monotonic() if now is None else now
    tracker = new.tracker.update(new.stage, new.step, new.total, now, server_eta=changes.get("eta"))
    return dataclasses.replace(new, tracker=tracker, progress=tracker.progress, eta=tracker.eta)


# -------------------------------------------------------------------------------------- operations


def start_rendering(state: JobState, total: int, now: float | None = None,
                    plan: job_progress.JobPlan | None = None) -> JobState:
    """A new job begins: rendering ``total`` views (``plan``: what the whole job will do, for the bar's
    stage weights; default :data:`DEFAULT_PLAN` with ``total`` views)."""
    now = time.monotonic() if now is None else now
    plan = plan or dataclasses.replace(DEFAULT_PLAN, views=max(int(total), 1))
    tracker = job_progress.Tracker.start(plan, now)
    return transition(JobState(phase=state.phase, tracker=tracker), Phase.RENDERING, now=now, stage="render",
                      total=int(total), message=f"rendering {total} views", started=now)


def render_progress(state: JobState, done: int, total: int, now: float | None = None) -> JobState:
    return transition(state, Phase.RENDERING, now=now, step=int(done), total=int(total),
                      message=f"rendered {done}/{total} views")


def imported(state: JobState, now: float | None = None) -> JobState:
    """The result is in the scene: the bar is full."""
    if state.phase != Phase.DONE:
        return state
    if state.tracker is None:
        return dataclasses.replace(state, progress=1.0, eta=0.0)
    tracker = state.tracker.finish(time.monotonic() if now is None else now)
    return dataclasses.replace(state, tracker=tracker, progress=1.0, eta=0.0, stage="done")


def fail(state: JobState, code: str, message: str) -> JobState:
    """The job failed locally or remotely (from any phase that allows it; a final phase stays)."""
    if Phase.FAILED not in TRANSITIONS[state.phase]:
        return state
    return transition(state, Phase.FAILED, error_code=code, error=message, message=message, eta=None)


def request_cancel(state: JobState) -> JobState:
    """The user pressed Cancel: before submitting the job ends here; after, the server decides."""
    if state.phase in (Phase.IDLE, Phase.RENDERING):
        return transition(state, Phase.CANCELLED, message="cancelled", eta=None) if state.phase != Phase.IDLE else state
    if state.final:
        return state
    return dataclasses.replace(state, cancel_requested=True, message="cancelling…")


def apply_event(state: JobState, event, now: float | None = None) -> JobState:
    """The state after one event of the client thread (see the module docstring)."""
    job = getattr(event, "job", None)
    if isinstance(event, Sent):
        if state.phase not in (Phase.RENDERING, Phase.IDLE) and state.job != event.job:
            return state
        return transition(state, Phase.SUBMITTED, now=now, job=event.job, stage="sending",
                          message=f"sent {event.nbytes / 1e6:.1f} MB", step=0, total=0)
    if state.final or (job is not None and state.job and job != state.job):
        return state  # stale: a finished job, or another job's message
    if isinstance(event, ClientFailed):
        return fail(state, event.code, event.message)
    if isinstance(event, P.Accepted):
        if event.queue_position > 0:
            return _advance(state, Phase.QUEUED, now, stage="queued", queue_position=event.queue_position,
                            message=f"accepted; {event.queue_position} job(s) ahead")
        return _advance(state, Phase.TRAINING, now, stage="starting", queue_position=None, message="accepted; starting")
    if isinstance(event, P.Progress):
        phase = phase_for_stage(event.stage, event.queue_position)
        msg = event.message or (f"{event.stage} {event.step}/{event.total}" if event.total else event.stage)
        return _advance(state, phase, now, stage=event.stage, step=event.step, total=event.total, message=msg,
                        eta=event.eta, queue_position=event.queue_position, losses=dict(event.losses))
    if isinstance(event, P.Result):
        n = event.arrays.get("points")
        n = 0 if n is None else n.shape[0]
        return transition(state, Phase.DONE, now=now, stage="import", step=0, total=1,
                          message=f"received {n} points; importing", queue_position=None)
    if isinstance(event, P.Error):
        if event.code == P.ErrorCode.CANCELLED:
            return transition(state, Phase.CANCELLED, message="cancelled", eta=None)
        return fail(state, event.code, event.message)
    if isinstance(event, P.CancelAck):
        if event.state == "cancelled":
            return transition(state, Phase.CANCELLED, message="cancelled", eta=None)
        return dataclasses.replace(state, message=f"cancel: {event.state}")
    return state


def _advance(state: JobState, phase: Phase, now: float | None = None, **changes) -> JobState:
    """Move forward to ``phase``, or stay (updating the fields) when the job is already further on."""
    if _ORDER.get(phase, 99) < _ORDER.get(state.phase, 99):
        phase = state.phase
    return transition(state, phase, now=now, **changes)


# -------------------------------------------------------------------------------------- display


def format_eta(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``; empty when unknown."""
    return job_progress.format_duration(seconds)


def stage_label(state: JobState) -> str:
    """What the job is doing, by name: the tracker's stage (render, upload, masks, training, segmentation,
    import) while it runs, else the phase."""
    if state.tracker is not None and (state.active or (state.phase == Phase.DONE and state.progress < 1.0)):
        return state.tracker.stage_name
    return str(state.phase)


def status_text(state: JobState) -> str:
    """One line for the status bar, e.g. ``Segment: training 120/2000 · 31% · ETA 1m 20s``."""
    if state.phase == Phase.IDLE:
        return ""
    if state.phase == Phase.FAILED:
        return f"Segment: failed ({state.error_code}): {state.error}"
    parts = [f"Segment: {stage_label(state)}"]
    if state.total > 0 and not state.final:
        parts[0] += f" {state.step}/{state.total}"
    if state.queue_position:
        parts.append(f"{state.queue_position} ahead")
    parts.append(f"{state.percent:.0f}%")
    eta = format_eta(state.eta)
    if eta and not state.final:
        parts.append(f"ETA {eta}")
    if state.cancel_requested and not state.final:
        parts.append("cancelling…")
    return " · ".join(parts)
