"""Terminal progress for the ``backend`` commands: one tqdm bar per pipeline stage on stderr.

Fed with anything shaped like :class:`backend.wire.protocol.ProgressEvent` (``stage``, ``step``, ``total``,
``losses``, ``message``, optional ``eta``) or the service's :class:`backend.wire.protocol.Progress` message
(which adds ``queue_position``); used by ``backend train / segment / eval / demo`` and ``backend submit``.
"""

from __future__ import annotations

import sys
from typing import Any


class ProgressBars:
    """A context manager; call it with each progress event."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if event.stage != self.stage or self.bar is None:
            self.close()
            self.stage = event.stage
            # initial = the first event's step: the rate counts the steps made while the bar is shown, so a
            # stage that starts at step 200 (a resumed run) or reports its first step after a long set-up shows
            # '?' and then a true average, never thousands of steps a second
            self.bar = tqdm(total=event.total or None, desc=event.stage, unit="step", file=sys.stderr,
                            dynamic_ncols=True, leave=True, initial=int(event.step or 0))
        bar = self.bar
        if event.total and bar.total != event.total:
            bar.total = event.total
        bar.n = event.step
        post = {k: f"{v:.4g}" for k, v in (event.losses or {}).items()}
        if getattr(event, "queue_position", None) is not None:
            post["ahead"] = event.queue_position
        if getattr(event, "eta", None) is not None:
            post["eta"] = f"{event.eta:.0f}s"
        if event.message and not event.losses:
            post["msg"] = event.message[:40]
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.stage = None

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class JobBar:
    """``backend submit``'s progress: ONE bar over the job's stages (upload, masks, training, segmentation,
    writing the result), weighted by measured stage times, never moving back, with the stage and an ETA from the
    measured step rate (:mod:`backend.wire.job_progress`, the same as the Blender add-on's). A context manager;
    call it with each progress event."""

    def __init__(self, plan, enabled: bool = True, clock=None):
        import time

        from backend.wire import job_progress

        self.enabled = enabled
        self.clock = clock or time.monotonic
        now = self.clock()
        expected = (0.0,) + job_progress.expected_seconds(plan)[1:]  # the views are rendered already
        self.tracker = job_progress.Tracker(expected=expected, started=now).update("upload", 0, 0, now)
        self.bar: Any = None

    def __call__(self, event: Any) -> None:
        self.tracker = self.tracker.update(event.stage, int(event.step or 0), int(event.total or 0), self.clock(),
                                           server_eta=getattr(event, "eta", None))
        self._show(event)

    def finish(self) -> None:
        self.tracker = self.tracker.finish(self.clock())
        self._show(None)

    def _show(self, event: Any) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        from backend.wire.job_progress import format_duration

        if self.bar is None:
            self.bar = tqdm(total=100, desc="job", unit="%", file=sys.stderr, dynamic_ncols=True, leave=True,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        self.bar.set_description_str(self.tracker.stage_name, refresh=False)
        self.bar.n = round(100 * self.tracker.progress, 1)
        post = {}
        if event is not None and event.total:
            post["step"] = f"{event.step}/{event.total}"
        if getattr(event, "queue_position", None) is not None:
            post["ahead"] = event.queue_position
        if self.tracker.eta is not None and self.tracker.progress < 1.0:
            post["eta"] = format_duration(self.tracker.eta)
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "JobBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_plan(scene: Any, options: Any):
    """The :class:`backend.wire.job_progress.JobPlan` of submitting ``scene`` with ``options`` (device unknown
    until the server runs it: ``options.device`` or cpu)."""
    from backend.wire import job_progress, presets

    return job_progress.JobPlan(views=max(int(scene.num_views), 1), resolution=max(int(scene.width), 1),
                                iterations=int(options.iterations or presets.preset_iterations(options.preset)),
                                preset=options.preset, engine="workbench", device=options.device or "cpu",
                                max_points=int(options.max_points))
