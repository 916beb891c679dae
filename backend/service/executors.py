"""Where a job's work runs: in the server's process (``local``, the default), or as a Ray task on a cluster
(``ray``), one per job, several at once.

Both are a :data:`backend.service.server.RunJob` function, so the server, its queue, the wire protocol and the
result files are the same either way. The Ray executor ships the job (scene, options, the job function's
``module:function`` name and the job folder) to a task that requests ``cpus_per_job`` / ``gpus_per_job``;
progress events come back and the server's cancel reaches the task through a small Ray actor (the
:class:`_Channel`), polled every :data:`POLL_S`. A task that does not stop within ``cancel_grace_s`` of a
cancel is killed (``ray.cancel(force=True)``). The job folder must be on a filesystem every Ray node sees
(local disk for a single machine; NFS or similar on a cluster).

Ray is optional (``pip install 'ultrametric-seg[ray]'``) and imported only when this executor is used; the job
function is imported by name inside the task, so this module never imports the method.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("backend.service.executors")

#: Seconds between two looks at the task (progress relayed, cancel forwarded).
POLL_S = 0.2
EXECUTORS = ("local", "ray")


class ExecutorError(RuntimeError):
    """The executor cannot start (Ray missing or unreachable, impossible resources)."""


@dataclass(frozen=True)
class RayConfig:
    """``backend serve --executor ray`` settings."""

    address: str = "local"
    """``local`` (start a Ray instance on this machine, loopback only), ``auto`` (the cluster this machine
    belongs to) or a head address (``HOST:6379``)."""
    cpus_per_job: float = 1.0
    """CPUs each job's task requests."""
    gpus_per_job: float = 0.0
    """GPUs each job's task requests (1 on a GPU cluster; jobs then run on the device Ray gives them)."""
    cancel_grace_s: float = 3.0
    """A cancelled task that has not stopped by itself after this long is killed."""


def import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ExecutorError("the Ray executor needs Ray: pip install 'ultrametric-seg[ray]'") from None


def start_ray(cfg: RayConfig, num_cpus: int | None = None) -> Any:
    """Connect to (or start) Ray as ``cfg.address`` says; returns the ``ray`` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if cfg.address == "local":
            # loopback only: nothing of the local instance listens on, or talks to, the network
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level=logging.WARNING, log_to_driver=False, object_store_memory=300 * 1024 * 1024)
        else:
            ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - Ray raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExecutorError(f"cannot start or reach Ray at {cfg.address!r}: {first}") from None
    return ray


def _channel_class(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class _Channel:
        """Progress events from the task to the server, the stop request from the server to the task."""

        def __init__(self) -> None:
            self.events: list = []
            self.stop = False

        def post(self, event: Any) -> None:
            self.events.append(event)

        def drain(self) -> list:
            out, self.events = self.events, []
            return out

        def request_stop(self) -> None:
            self.stop = True

        def stopped(self) -> bool:
            return self.stop

    return _Channel


def _task(spec: str, scene: Any, options: Any, channel: Any, workdir: str, device: str) -> Any:
    """Body of a job's Ray task: import the job function by name and run it, relaying progress and stop."""
    import inspect

    import ray

    module, _, name = spec.partition(":")
    run_job = getattr(importlib.import_module(module), name)
    extra = {"device": device} if "device" in inspect.signature(run_job).parameters else {}
    last = [0.0, False]

    def progress(event: Any) -> None:
        channel.post.remote(event)  # fire and forget

    def should_stop() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= POLL_S:
            last[0] = now
            last[1] = bool(ray.get(channel.stopped.remote()))
        return bool(last[1])

    return run_job(scene, options, progress, should_stop, Path(workdir), **extra)


def ray_run_job(spec: str, cfg: RayConfig) -> Callable[..., Any]:
    """A :data:`backend.service.server.RunJob` that runs ``spec`` (``module:function``) as one Ray task per job.

    Call :func:`start_ray` first. The returned function blocks its (server worker) thread while the task runs,
    relaying the task's progress events to ``progress`` and the server's ``should_stop`` to the task.
    """
    ray = import_ray()
    channel_cls = _channel_class(ray)
    task = ray.remote(_task).options(num_cpus=cfg.cpus_per_job, num_gpus=cfg.gpus_per_job, max_retries=0)

    def run(scene: Any, options: Any, progress: Callable[[Any], None], should_stop: Callable[[], bool],
            workdir: Path) -> Any:
        channel = channel_cls.remote()
        device = "cuda" if cfg.gpus_per_job > 0 else "cpu"
        ref = task.remote(spec, scene, options, channel, str(workdir), device)
        stop_sent: float | None = None
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=POLL_S)
                for event in ray.get(channel.drain.remote()):
                    progress(event)
                if ready:
                    try:
                        return ray.get(ref)
                    except ray.exceptions.TaskCancelledError:
                        raise InterruptedError("cancelled") from None
                    except ray.exceptions.RayTaskError as e:  # the job's own exception, re-raised here
                        raise e.as_instanceof_cause() from None
                if should_stop():
                    now = time.monotonic()
                    if stop_sent is None:
                        channel.request_stop.remote()
                        stop_sent = now
                    elif now - stop_sent > cfg.cancel_grace_s:
                        log.info("a cancelled task did not stop within %.0f s: killing it", cfg.cancel_grace_s)
                        ray.cancel(ref, force=True)
                        raise InterruptedError("cancelled")
        finally:
            ray.kill(channel)

    return run
