"""Benchmark the job service's wire path on loopback TCP against raw ZeroMQ.

1. Scene transfer: the submit of a 100-view 200x200 scene with depth (RGB uint8 + depth float32 +
   poses + intrinsics, ~28 MB). *Protocol*: the client encodes a ``Submit``
   (:func:`backend.wire.protocol.encode`, zero-copy frames) and sends it over DEALER -> ROUTER; the
   receiver decodes and fully validates it (:func:`backend.wire.protocol.decode`: dtypes, shapes,
   limits, finiteness) and acks. *Raw*: the same bytes as one frame over a PAIR socket, ack.
   Also the full server round trip ``JobClient.submit`` -> ``accepted`` (decode, validation,
   scene construction, state file) on a real :class:`backend.service.server.JobServer`.
2. Progress events: a job emitting 2,000 progress events back to back through the real server to
   a real ``JobClient`` (worker thread -> event queue -> ROUTER -> client decode), per event and
   each event's latency (emit -> client has it; back to back this is mostly queueing), against
   2,000 small JSON messages with a timestamp sent raw over PAIR; then 200 events paced one every
   2 ms, whose latency is the server's added delay per event.

    python3 bench/bench_transfer.py            # ~10-20 s on 2 cores
    python3 bench/bench_transfer.py --repeats 3 --events 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.wire import protocol as P  # noqa: E402


def make_payload(views: int = 100, size: int = 200, seed: int = 0) -> P.Submit:
    """The submit of a ``views`` x ``size`` x ``size`` scene with depth (random content)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (views, size, size, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 3.0, (views, size, size)).astype(np.float32)
    c2w = np.repeat(np.eye(4, dtype=np.float32)[None], views, 0)
    c2w[:, :3, 3] = rng.normal(size=(views, 3))
    f = 1.2 * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float32)
    return P.Submit(job=P.new_job_id(), rgb=rgb, c2w=c2w, intrinsics=np.repeat(K[None], views, 0), depth=depth)


def _receiver(ctx: zmq.Context, kind: int, handle, n: int) -> tuple[threading.Thread, str]:
    """A thread with its own socket (bound to a free loopback port, returned) that calls
    ``handle(sock, frames)`` for ``n`` messages."""
    ready, bound = threading.Event(), []

    def loop() -> None:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        bound.append(f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}")
        ready.set()
        for _ in range(n):
            handle(sock, sock.recv_multipart(copy=False))
        sock.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    if not ready.wait(5):
        raise RuntimeError("receiver did not start")
    return t, bound[0]


def bench_scene_protocol(ctx: zmq.Context, msg: P.Submit, repeats: int) -> list[float]:
    """Seconds per transfer: encode -> DEALER -> ROUTER -> decode + validate -> ack."""
    def handle(sock, frames):
        decoded = P.decode(frames[1:], accept=P.CLIENT_TYPES)
        assert isinstance(decoded, P.Submit) and decoded.depth.shape == msg.depth.shape
        sock.send_multipart([frames[0], b"ok"])

    t, endpoint = _receiver(ctx, zmq.ROUTER, handle, repeats + 1)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        sock.send_multipart(P.encode(msg), copy=False)
        sock.recv()
        if i:  # the first one is a warm-up (connection, page faults)
            times.append(time.perf_counter() - t0)
    sock.close()
    t.join(5)
    return times


def bench_scene_raw(ctx: zmq.Context, msg: P.Submit, repeats: int) -> list[float]:
    """Seconds per transfer of the same bytes as one frame over PAIR (receiver acks)."""
    blob = b"".join(memoryview(f).cast("B").tobytes() for f in P.encode(msg))
    def handle(sock, frames):
        assert len(frames[0].buffer) == len(blob)
        sock.send(b"ok")

    t, endpoint = _receiver(ctx, zmq.PAIR, handle, repeats + 1)
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        sock.send(blob, copy=False)
        sock.recv()
        if i:
            times.append(time.perf_counter() - t0)
    sock.close()
    t.join(5)
    return times


def _instant_job(scene, options, progress, should_stop, workdir):  # noqa: ANN001 - backend.service.server.RunJob
    return P.JobResult(arrays={}, meta={})


def bench_scene_server(msg: P.Submit, repeats: int, workdir: Path) -> list[float]:
    """Seconds from ``JobClient.submit`` to ``accepted`` on a real server (job itself instant)."""
    from backend.service.client import JobClient
    from backend.service.server import JobServer, JobServerConfig

    cfg = JobServerConfig(bind="tcp://127.0.0.1:*", device="cpu", workdir=workdir)
    times = []
    with JobServer(cfg, run_job=_instant_job) as server, JobClient(server.endpoint, timeout_s=30) as client:
        for i in range(repeats + 1):
            msg.job = P.new_job_id()
            t0 = time.perf_counter()
            job = client.submit(msg)
            if i:
                times.append(time.perf_counter() - t0)
            client.wait(job, timeout_s=30)
    return times


def _pace(step: int, start: float, pace_s: float) -> None:
    if pace_s > 0:
        while time.perf_counter() < start + step * pace_s:
            time.sleep(pace_s / 4)


def bench_progress_server(events: int, workdir: Path, pace_s: float = 0.0) -> tuple[float, list[float]]:
    """(seconds per event over the whole stream, latencies emit -> client) through the real server;
    events back to back, or one every ``pace_s``."""
    from backend.service.client import JobClient
    from backend.service.server import JobServer, JobServerConfig

    def chatty_job(scene, options, progress, should_stop, workdir):  # noqa: ANN001
        start = time.perf_counter()
        for step in range(events):
            _pace(step, start, pace_s)
            progress(P.ProgressEvent("training", step, events, message=repr(time.perf_counter()),
                                     eta=1.0, losses={"ultrametric": 0.5, "euclidean": 0.25}))
        return P.JobResult(arrays={}, meta={})

    scene = make_payload(views=1, size=8)
    cfg = JobServerConfig(bind="tcp://127.0.0.1:*", device="cpu", workdir=workdir)
    latencies: list[float] = []
    with JobServer(cfg, run_job=chatty_job) as server, JobClient(server.endpoint, timeout_s=30) as client:
        job = client.submit(scene)
        first = last = None
        for p in client.progress(job, timeout_s=120):
            if p.stage != "training":
                continue
            now = time.perf_counter()
            sent = float(p.message)
            first = sent if first is None else first
            last = now
            latencies.append(now - sent)
        client.wait(job)
    assert len(latencies) == events, f"{len(latencies)} of {events} progress events arrived"
    return (last - first) / events, latencies


def bench_progress_raw(ctx: zmq.Context, events: int, pace_s: float = 0.0) -> tuple[float, list[float]]:
    """The same stream as small JSON messages over PAIR from a sender thread."""
    recv = ctx.socket(zmq.PAIR)
    recv.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{recv.bind_to_random_port('tcp://127.0.0.1')}"

    def send() -> None:
        sock = ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        time.sleep(0.2)  # connected
        start = time.perf_counter()
        for step in range(events):
            _pace(step, start, pace_s)
            sock.send(json.dumps({"type": "progress", "stage": "training", "step": step, "total": events,
                                  "message": repr(time.perf_counter()),
                                  "losses": {"ultrametric": 0.5, "euclidean": 0.25}}).encode())
        sock.close(linger=1000)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    latencies, first, last = [], None, None
    for _ in range(events):
        body = json.loads(recv.recv())
        now = time.perf_counter()
        sent = float(body["message"])
        first = sent if first is None else first
        last = now
        latencies.append(now - sent)
    t.join(5)
    recv.close()
    return (last - first) / events, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5, help="timed transfers of the scene (after a warm-up)")
    parser.add_argument("--events", type=int, default=2000, help="progress events of the chatty job")
    parser.add_argument("--paced-events", type=int, default=200, help="progress events sent one every --pace-ms")
    parser.add_argument("--pace-ms", type=float, default=2.0)
    args = parser.parse_args()

    ctx = zmq.Context()
    msg = make_payload(args.views, args.size)
    mb = sum(memoryview(f).nbytes for f in P.encode(msg)) / 1e6
    t_proto = statistics.median(bench_scene_protocol(ctx, msg, args.repeats))
    t_raw = statistics.median(bench_scene_raw(ctx, msg, args.repeats))
    t0 = time.perf_counter()
    P.decode(P.encode(msg))
    t_codec = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t_server = statistics.median(bench_scene_server(msg, args.repeats, Path(tmp) / "a"))
        ev_server, lat_server = bench_progress_server(args.events, Path(tmp) / "b")
        _, lat_server_paced = bench_progress_server(args.paced_events, Path(tmp) / "c", args.pace_ms / 1e3)
    ev_raw, lat_raw = bench_progress_raw(ctx, args.events)
    _, lat_raw_paced = bench_progress_raw(ctx, args.paced_events, args.pace_ms / 1e3)
    ctx.term()

    ms = 1e3
    us = 1e6
    print(f"scene payload: {args.views} views {args.size}x{args.size} rgb+depth+poses = {mb:.1f} MB")
    print(f"  protocol (encode -> ROUTER -> decode+validate -> ack): {t_proto * ms:7.1f} ms  ({mb / t_proto:.0f} MB/s)")
    print(f"  raw PAIR copy of the same bytes (-> ack):              {t_raw * ms:7.1f} ms  ({mb / t_raw:.0f} MB/s)")
    print(f"  of which encode+decode+validate in process:            {t_codec * ms:7.1f} ms")
    print(f"  real server: JobClient.submit -> accepted:             {t_server * ms:7.1f} ms")
    print(f"progress: {args.events} events back to back")
    print(f"  server (worker -> ROUTER -> JobClient): {ev_server * us:6.1f} us/event, latency median "
          f"{statistics.median(lat_server) * ms:.2f} ms, p95 {np.percentile(lat_server, 95) * ms:.2f} ms")
    print(f"  raw PAIR JSON:                          {ev_raw * us:6.1f} us/event, latency median "
          f"{statistics.median(lat_raw) * ms:.2f} ms, p95 {np.percentile(lat_raw, 95) * ms:.2f} ms")
    lat_s, lat_r = statistics.median(lat_server_paced), statistics.median(lat_raw_paced)
    print(f"progress: {args.paced_events} events, one every {args.pace_ms:g} ms (latency emit -> received)")
    print(f"  server: median {lat_s * ms:.3f} ms, p95 {np.percentile(lat_server_paced, 95) * ms:.3f} ms")
    print(f"  raw:    median {lat_r * ms:.3f} ms, p95 {np.percentile(lat_raw_paced, 95) * ms:.3f} ms")
    print(f"SUMMARY transfer {mb:.0f} MB: protocol {t_proto * ms:.0f} ms vs raw {t_raw * ms:.0f} ms "
          f"(x{t_proto / t_raw:.2f}), server submit->accepted {t_server * ms:.0f} ms; progress "
          f"{ev_server * us:.0f} us/event vs raw {ev_raw * us:.0f} us/event (x{ev_server / ev_raw:.1f}, "
          f"added {(ev_server - ev_raw) * us:.0f} us/event); paced latency {lat_s * ms:.2f} ms vs raw "
          f"{lat_r * ms:.2f} ms (added {(lat_s - lat_r) * ms:.2f} ms/event)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
