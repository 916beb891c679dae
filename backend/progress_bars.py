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
