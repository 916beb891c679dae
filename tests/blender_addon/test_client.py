"""The client thread against a real in-process job server on loopback (bpy-free)."""

from __future__ import annotations

import socket
import time

import pytest

from backend.wire import protocol as P
from blender_addon.client import ClientConfig, JobThread, drain
from blender_addon.events import SERVER_UNAVAILABLE, ClientFailed, Sent, ThreadDone
from blender_addon.messages import SegmentOptions, build_submit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from backend.service.server import JobServer, JobServerConfig
    from tests.backend.service_jobs import run_job

    srv = JobServer(JobServerConfig(bind="tcp://127.0.0.1:*", device="cpu", workdir=tmp_path_factory.mktemp("jobs")),
                    run_job=run_job).start()
    yield srv.endpoint
    srv.stop()


def _submit(iterations=3):
    from tests.backend.service_jobs import make_scene

    sc = make_scene(n_views=2)
    return build_submit(sc.rgb, sc.c2w, sc.K, sc.depth, SegmentOptions(iterations=iterations))


def _run(thread: JobThread, limit=20.0):
    thread.start()
    thread.join(limit)
    assert not thread.is_alive()
    return drain(thread.events)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_job_events_in_order(server):
    events = _run(JobThread(ClientConfig(address=server), _submit()))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Sent" and kinds[1] == "Accepted" and kinds[-2:] == ["Result", "ThreadDone"]
    assert "Progress" in kinds
    result = events[-2]
    assert result.arrays["points"].shape[1] == 3 and "parents" in result.arrays


def test_cancel(server):
    t = JobThread(ClientConfig(address=server), _submit(iterations=3000))
    t.start()
    deadline = time.monotonic() + 10
    seen = []
    while time.monotonic() < deadline and not any(isinstance(e, P.Progress) for e in seen):
        seen += drain(t.events)
        time.sleep(0.02)
    t.cancel()
    t.join(10)
    seen += drain(t.events)
    assert any(isinstance(e, P.Error) and e.code == "cancelled" for e in seen) or \
        any(isinstance(e, P.CancelAck) and e.state == "cancelled" for e in seen)
    assert isinstance(seen[-1], ThreadDone)


def test_server_down_is_reported_within_timeout():
    t0 = time.monotonic()
    events = _run(JobThread(ClientConfig(address=f"tcp://127.0.0.1:{free_port()}", timeout_s=0.5), _submit()))
    assert time.monotonic() - t0 < 5
    failed = [e for e in events if isinstance(e, ClientFailed)]
    assert failed and failed[0].code == SERVER_UNAVAILABLE and "backend serve" in failed[0].message
    assert isinstance(events[0], Sent)


def test_ping_and_bad_address(server):
    events = _run(JobThread(ClientConfig(address=server), None))
    assert isinstance(events[0], P.Pong)
    events = _run(JobThread(ClientConfig(address="http://nope"), None))
    assert isinstance(events[0], ClientFailed) and events[0].code == "bad_address"


@pytest.mark.parametrize("address,loopback", [
    ("tcp://127.0.0.1:5557", True), ("tcp://127.8.0.3:1", True), ("tcp://localhost:5557", True),
    ("tcp://[::1]:5557", True), ("ipc:///tmp/useg.sock", True), ("tcp://192.168.1.20:5557", False),
    ("tcp://gpu-box.example.org:5557", False), ("tcp://[2001:db8::1]:5557", False), ("bogus", False),
])
def test_loopback_needs_no_online_access(address, loopback):
    from blender_addon.client import is_loopback, network_refusal

    assert is_loopback(address) is loopback
    assert network_refusal(address, online_access=True) is None
    assert (network_refusal(address, online_access=False) is None) is loopback
