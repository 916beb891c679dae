"""The running job as Blender sees it: one :class:`Session` per Blender process.

An operator renders the views, then :meth:`Session.start` hands the ``Submit`` to a
:class:`client.JobThread` and registers :func:`pump` with ``bpy.app.timers``. The thread never touches
bpy; :func:`pump` (a plain function: headless tests call it in a loop, since timers never fire in the
bpy module) drains its queue on the main thread, advances the :class:`jobstate.JobState`, writes it to
the scene's properties, reports failures, and imports the result when it arrives.

Results are cached as ``result.npz`` files (the backend's layout, :func:`messages.load_result_file`) so
the granularity slider still works on a result object after the .blend is reopened.
"""

from __future__ import annotations

import json
import queue
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import bpy

from . import importer
from backend.wire import protocol as P
from .client import ClientConfig, JobThread, drain
from .events import ClientFailed, ThreadDone
from .jobstate import JobState, Phase, apply_event, fail, format_eta, imported, stage_label, status_text
from .messages import ResultError, SegmentationResult, load_result_file, result_from_message
from .properties import state_of
from backend.wire.tree_cut import granularity_to_threshold, merge_altitudes, threshold_to_granularity

#: Seconds between two timer calls while a job runs.
PUMP_INTERVAL_S = 0.1


@dataclass
class LoadedResult:
    """A result held in memory with its sorted merge altitudes (for the granularity slider)."""

    result: SegmentationResult
    merges: np.ndarray

    @classmethod
    def of(cls, result: SegmentationResult) -> "LoadedResult":
        merges = (merge_altitudes(result.parents, result.altitudes, result.n_points) if result.has_tree
                  else np.zeros(0))
        return cls(result, merges)

    def threshold(self, granularity: float) -> float:
        """The cut threshold of ``granularity`` (tree: log segment count; labels only: nearest level)."""
        r = self.result
        if r.has_tree:
            return granularity_to_threshold(self.merges, r.n_points, granularity)
        i = int(round(float(granularity) * (len(r.thresholds) - 1)))
        return float(r.thresholds[i])

    def granularity(self, threshold: float) -> float:
        r = self.result
        if r.has_tree:
            return threshold_to_granularity(self.merges, r.n_points, threshold)
        if len(r.thresholds) < 2:
            return 0.0
        return float(np.searchsorted(r.thresholds, threshold) / (len(r.thresholds) - 1))


@dataclass
class Session:
    """The state of this Blender process's job (one at a time) and pings."""

    state: JobState = field(default_factory=JobState)
    scene_name: str = ""
    thread: JobThread | None = None
    events: queue.Queue = field(default_factory=queue.Queue)
    pings: list[tuple[JobThread, queue.Queue]] = field(default_factory=list)
    reports: list[tuple[str, str]] = field(default_factory=list)
    """Every (level, message) reported from the timer, oldest first."""
    result_object: str = ""
    """Name of the object the last job created."""
    timer_on: bool = False
    updating: bool = False
    """True while the add-on itself sets the slider (its update callback then does nothing)."""

    @property
    def busy(self) -> bool:
        return self.state.active or (self.thread is not None and self.thread.is_alive())


SESSION = Session()
_LOADED: dict[str, LoadedResult] = {}


def reset() -> None:
    global SESSION
    shutdown()
    SESSION = Session()


def shutdown() -> None:
    """Stop following the job (the server keeps it) and the timer."""
    s = SESSION
    if s.thread is not None:
        s.thread.stop()
    for t, _ in s.pings:
        t.stop()
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    s.timer_on = False


def report(level: str, message: str) -> None:
    """Report from outside an operator (timer): kept in ``SESSION.reports`` and shown by Blender."""
    SESSION.reports.append((level, message))
    try:
        bpy.ops.useg.report(level=level, message=message)
    except RuntimeError:
        pass  # background mode turns an ERROR report into an exception: it was reported
    except AttributeError:  # not registered
        print(f"Ultrametric Segmentation {level}: {message}")


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL_S, persistent=True)
    SESSION.timer_on = True


# ----------------------------------------------------------------------------------------- jobs


def set_state(scene, state: JobState) -> None:
    """Make ``state`` current and show it (scene properties, status bar, redraw)."""
    SESSION.state = state
    if scene is not None:
        SESSION.scene_name = scene.name
    publish()


def start(scene, submit: P.Submit, config: ClientConfig) -> JobThread:
    """Follow ``submit`` in a new client thread; :func:`pump` brings its events in."""
    s = SESSION
    if s.thread is not None and s.thread.is_alive():
        s.thread.stop()
    s.events = queue.Queue()
    s.scene_name = scene.name
    s.thread = JobThread(config, submit, s.events)
    s.thread.start()
    _ensure_timer()
    return s.thread


def ping(config: ClientConfig) -> JobThread:
    q: queue.Queue = queue.Queue()
    t = JobThread(config, None, q)
    t.start()
    SESSION.pings.append((t, q))
    _ensure_timer()
    return t


def cancel() -> bool:
    """Ask for the current job to end; returns whether there was one."""
    from .jobstate import request_cancel

    s = SESSION
    if not s.state.active:
        return False
    if s.thread is not None and s.thread.is_alive():
        s.thread.cancel()
    set_state(bpy.data.scenes.get(s.scene_name), request_cancel(s.state))
    return True


def pump() -> float | None:
    """Timer callback: apply every queued event; returns the next interval, or None when nothing runs.

    Never raises (Blender drops a timer that raises): an unexpected error fails the job with a report.
    """
    try:
        return _pump()
    except Exception as e:  # noqa: BLE001 - the UI must hear about it and the timer must survive
        s = SESSION
        if s.state.active:
            s.state = fail(s.state, "addon_error", f"{type(e).__name__}: {e}")
            publish()
        report("ERROR", f"Segmentation add-on error: {type(e).__name__}: {e}")
        if s.thread is not None:
            s.thread.stop()
        s.thread = None
        s.timer_on = False
        return None


def _pump() -> float | None:
    s = SESSION
    scene = bpy.data.scenes.get(s.scene_name)
    changed = False
    for event in drain(s.events):
        if isinstance(event, ThreadDone):
            continue
        before = s.state
        s.state = apply_event(s.state, event)
        changed = True
        if isinstance(event, P.Result) and s.state.phase == Phase.DONE and before.phase != Phase.DONE:
            _receive(scene, event)
        if s.state.phase != before.phase:
            if s.state.phase == Phase.FAILED:
                report("ERROR", f"Segmentation failed ({s.state.error_code}): {s.state.error}")
            elif s.state.phase == Phase.CANCELLED:
                report("WARNING", "Segmentation cancelled")
    for t, q in list(s.pings):
        for event in drain(q):
            if isinstance(event, P.Pong):
                report("INFO", f"The job server at {t.config.address} answered")
            elif isinstance(event, (ClientFailed, P.Error)):
                report("ERROR", f"Server check failed: {event.message}")
        if not t.is_alive() and q.empty():
            s.pings.remove((t, q))
    if changed:
        publish()
    thread_running = s.thread is not None and (s.thread.is_alive() or not s.events.empty())
    if thread_running or s.pings:
        return PUMP_INTERVAL_S
    if s.thread is not None and s.state.active:  # the thread ended without a final message
        set_state(scene, fail(s.state, "client_error", "the client stopped without an answer"))
        report("ERROR", s.state.error)
    s.thread = None
    s.timer_on = False
    return None


def _receive(scene, msg: P.Result) -> None:
    """Import a result (the state is already ``done``; a bad result turns it ``failed``)."""
    try:
        result = result_from_message(msg)
        path = save_result(result, msg.job)
        obj = show_result(scene, result, str(path), name=f"Segmentation {msg.job[:8]}")
    except (ResultError, importer.ImportFailed, OSError, RuntimeError, ValueError) as e:
        SESSION.state = fail(SESSION.state, "bad_result", f"the result could not be imported: {e}")
        return
    SESSION.state = imported(SESSION.state)
    report("INFO", f"Imported {result.n_points} points as {obj.name!r}")


def show_result(scene, result: SegmentationResult, path: str, name: str = "Segmentation"):
    """Import ``result`` (cached at ``path``) as the scene's current result object."""
    if scene is None:
        raise importer.ImportFailed("the scene of the job is gone")
    loaded = LoadedResult.of(result)
    _LOADED[path] = loaded
    props = state_of(scene)
    t = result.default_threshold()
    obj, c = importer.import_result(scene, result, t, props.coloured_segments, name=name, result_path=path)
    SESSION.updating = True
    try:
        props.result_object = obj
        props.granularity = loaded.granularity(t)
        props.threshold = t
        props.segments = c.n_segments
        props.levels = result.levels_note()
    finally:
        SESSION.updating = False
    SESSION.result_object = obj.name
    if importer.show_colours_in_viewports(bpy.context.window_manager):
        report("INFO", "3D viewports switched to Material Preview to show the segment colours")
    return obj


def publish() -> None:
    """Write :attr:`SESSION.state` to the scene properties and redraw the UI."""
    s = SESSION
    st = s.state
    scene = bpy.data.scenes.get(s.scene_name)
    if scene is not None and hasattr(scene, "ultrametric_seg"):
        props = state_of(scene)
        props.phase = str(st.phase)
        props.status = status_text(st)
        props.message = st.message[:1000]
        props.stage = stage_label(st) if st.tracker is not None else st.stage
        props.eta = format_eta(st.eta) if not st.final else ""
        props.progress = st.percent
        props.job_id = st.job
        props.error = st.error[:1000] if st.phase == Phase.FAILED else ""
        props.active = st.active
    wm = bpy.context.window_manager
    for window in (wm.windows if wm is not None else []):
        for area in window.screen.areas:
            area.tag_redraw()


# ----------------------------------------------------------------------------------------- results


def cache_dir() -> Path:
    """Folder of cached results: the extension's user folder, else the temp folder."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, path="results", create=True))
    except (ValueError, RuntimeError, OSError):
        d = Path(tempfile.gettempdir()) / "ultrametric_seg_results"
        d.mkdir(parents=True, exist_ok=True)
        return d


def save_result(result: SegmentationResult, job: str) -> Path:
    """Write ``result`` as ``<cache>/<job>/result.npz`` (meta inside as JSON); returns the path."""
    folder = cache_dir() / (job or f"import_{int(time.time() * 1000)}")
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"points": result.points, "colors": result.colors, "labels": result.labels,
              "thresholds": result.thresholds}
    if result.has_tree:
        arrays.update(parents=result.parents, altitudes=result.altitudes)
    path = folder / "result.npz"
    np.savez(path, **arrays, meta=np.array(json.dumps({**result.meta, "job": job})))
    return path


def loaded_result(obj) -> LoadedResult | None:
    """The result behind a result object (memory, else its cached file), or None."""
    path = str(obj.get(importer.RESULT_PATH_PROP, "")) if obj is not None else ""
    if not path:
        return None
    if path not in _LOADED:
        try:
            _LOADED[path] = LoadedResult.of(load_result_file(path))
        except (ResultError, OSError, ValueError):
            return None
    return _LOADED[path]


def recolour_from_properties(scene) -> bool:
    """Recolour the scene's result object for its granularity (the slider's update); returns whether
    anything was recoloured."""
    if SESSION.updating:
        return False
    props = state_of(scene)
    obj = props.result_object
    loaded = loaded_result(obj)
    if loaded is None:
        return False
    t = loaded.threshold(props.granularity)
    c = importer.result_cut(loaded.result, t)
    importer.apply_cut(obj, c, props.coloured_segments)
    SESSION.updating = True
    try:
        props.threshold = t
        props.segments = c.n_segments
    finally:
        SESSION.updating = False
    return True
