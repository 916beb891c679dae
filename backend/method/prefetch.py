"""Background production of training steps' host work (issue #16): while step ``k`` runs on the device, worker
threads prepare steps ``k + 1 .. k + depth`` (pixel sampling, mask tree, pairs, kNN graph, stencils).

The producer is any function ``step -> batch`` that depends on the step number only (the trainer draws each
step's random numbers from a generator seeded with ``(seed, step)``), so batches are identical whatever the
number of workers or the depth, and identical to calling the function in the loop. NumPy, SciPy and Higra
release the GIL in their heavy parts, so threads overlap with the device and with each other.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """Ordered prefetch of ``produce(step)`` for ``step`` in ``[start, stop)``.

    ``get(step)`` returns the batch of ``step`` (the steps must be asked in order) and keeps ``depth`` later steps
    in flight on ``workers`` threads. An exception raised by ``produce`` is raised again by the ``get`` of that
    step. ``waited_s`` accumulates the time ``get`` blocked (host work left on the critical path).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, produce: Callable[[int], T], start: int, stop: int, depth: int = 2, workers: int = 1):
        if depth < 1 or workers < 1:
            raise ValueError(f"depth and workers must be >= 1, got {depth}, {workers}")
        self.produce = produce
        self.stop = stop
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="umseg-prefetch")
        self._futures: dict[int, Future] = {}
        self._next = start
        self.waited_s = 0.0
        self.waits: list[float] = []
        """Seconds each ``get`` blocked, in order (the first one includes filling the pipeline)."""
        self._fill(start)

    def _fill(self, current: int) -> None:
        while self._next < self.stop and self._next <= current + self.depth:
            self._futures[self._next] = self._pool.submit(self.produce, self._next)
            self._next += 1

    def get(self, step: int) -> T:
        """The batch of ``step``; schedules the following ones."""
        fut = self._futures.pop(step, None)
        if fut is None:  # out of order (e.g. the step counter was moved): produce it now
            self._cancel()
            self._next = step + 1
            self._fill(step)
            t0 = time.perf_counter()
            out = self.produce(step)
            self.waits.append(time.perf_counter() - t0)
            self.waited_s += self.waits[-1]
            return out
        self._fill(step)
        t0 = time.perf_counter()
        try:
            return fut.result()
        finally:
            self.waits.append(time.perf_counter() - t0)
            self.waited_s += self.waits[-1]

    def _cancel(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._futures.clear()

    def close(self) -> None:
        """Cancel pending work and wait for running producers."""
        self._cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
