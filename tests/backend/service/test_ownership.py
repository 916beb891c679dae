"""Issue #27: job ids are per client (``duplicate_job`` only for one's own), a connection without a token owns
nothing it could be impersonated for, and a ``too_large`` refusal suggests sizes that are admitted. Real servers on
loopback, real sockets."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from backend.method.job import estimate_peak_bytes
from backend.service.client import JobClient, JobError
from backend.service.server import JobServer, JobServerConfig, JobSize
from backend.wire import protocol as P
from tests.backend.service_jobs import make_scene, run_job

pytestmark = pytest.mark.timeout(120)
TOKEN_A = "owner-a-token-0123456789"
TOKEN_B = "owner-b-token-0123456789"


def make_server(tmp_path: Path, run=run_job, **kw) -> JobServer:
    estimate = kw.pop("estimate", None)
    cfg = JobServerConfig(bind="tcp://127.0.0.1:*", device="cpu", workdir=tmp_path / "jobs", **kw)
    return JobServer(cfg, run_job=run, estimate=estimate).start()


def test_job_ids_are_per_client_and_duplicate_job_only_for_ones_own(tmp_path):
    srv = make_server(tmp_path)
    try:
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_A) as a, \
                JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_B) as b:
            sa, sb = make_scene(seed=1), make_scene(n_views=2, seed=2)
            ja = a.submit(sa, job="shared-id")
            a.wait(ja)
            jb = b.submit(sb, job="shared-id")  # B cannot tell that A used the id: its own job is accepted
            rb = b.wait(jb)
            assert ja == jb == "shared-id"
            with pytest.raises(JobError) as e:
                a.submit(sa, job="shared-id")
            assert e.value.code == "duplicate_job"
            # each sees only its own job of that id
            assert len(rb.arrays["points"]) != len(a.fetch("shared-id").arrays["points"])
            assert [j.job for j in b.status().jobs] == ["shared-id"] and len(a.status().jobs) == 1
    finally:
        srv.stop()
    # a restart keeps both, each still with its owner
    srv = make_server(tmp_path)
    try:
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_B) as b:
            assert len(b.fetch("shared-id").arrays["points"]) == len(rb.arrays["points"])
    finally:
        srv.stop()


def _raw(endpoint: str, routing_id: bytes) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, routing_id)
    s.connect(endpoint)
    return s


def _ask(s: zmq.Socket, msg: P.Message) -> P.Message:
    s.send_multipart(P.encode(msg))
    assert s.poll(10_000)
    return P.decode(s.recv_multipart())


def test_a_connection_without_token_cannot_be_impersonated_by_its_routing_id(tmp_path):
    srv = make_server(tmp_path)
    victim_id = b"victim-routing-id"
    try:
        victim = _raw(srv.endpoint, victim_id)
        scene = make_scene(seed=4)
        victim.send_multipart(P.encode(P.Submit(job="anon-job", rgb=scene.rgb, c2w=scene.c2w, intrinsics=scene.K,
                                                depth=scene.depth)))
        kinds = []
        while True:  # its own submit's replies reach it: accepted, progress, result
            assert victim.poll(20_000)
            reply = P.decode(victim.recv_multipart())
            kinds.append(type(reply).__name__)
            if isinstance(reply, (P.Result, P.Error)):
                break
        assert kinds[0] == "Accepted" and kinds[-1] == "Result", kinds
        victim.close()
        thief = _raw(srv.endpoint, victim_id)  # the same routing id, chosen by another program
        try:
            for msg in (P.Fetch(job="anon-job"), P.Status(job="anon-job"), P.Cancel(job="anon-job")):
                reply = _ask(thief, msg)
                assert isinstance(reply, P.Error) and reply.code == "unknown_job", reply
            listing = _ask(thief, P.Status())
            assert isinstance(listing, P.StatusReply) and listing.jobs == []
        finally:
            thief.close()
    finally:
        srv.stop()


def test_a_connection_without_token_or_routing_id_cancels_its_own_job(tmp_path):
    """The Blender add-on's way: no token, no routing id; the ROUTER assigns one, unknown to other clients."""
    srv = make_server(tmp_path)
    try:
        ctx = zmq.Context.instance()
        own = ctx.socket(zmq.DEALER)
        own.setsockopt(zmq.LINGER, 0)
        own.connect(srv.endpoint)
        scene = make_scene(seed=6)
        own.send_multipart(P.encode(P.Submit(job="addon-job", rgb=scene.rgb, c2w=scene.c2w, intrinsics=scene.K,
                                             depth=scene.depth, options=P.JobOptions(iterations=100_000))))
        other = ctx.socket(zmq.DEALER)  # another token-less connection without a routing id
        other.setsockopt(zmq.LINGER, 0)
        other.connect(srv.endpoint)
        try:
            assert isinstance(_ask(other, P.Status()), P.StatusReply)
            reply = _ask(other, P.Cancel(job="addon-job"))
            assert isinstance(reply, P.Error) and reply.code == "unknown_job", reply
            deadline = time.monotonic() + 20
            acked = None
            own.send_multipart(P.encode(P.Cancel(job="addon-job")))
            while acked is None and time.monotonic() < deadline:
                assert own.poll(10_000)
                msg = P.decode(own.recv_multipart())
                if isinstance(msg, P.CancelAck):
                    acked = msg.state
            assert acked in ("cancelling", "cancelled"), acked
        finally:
            own.close()
            other.close()
    finally:
        srv.stop()


def _run_nothing(scene, options, progress, should_stop, workdir):
    raise ValueError("admitted (this test runs nothing)")


def test_too_large_suggests_sizes_that_are_admitted(tmp_path):
    budget = 4 * 2**30
    srv = make_server(tmp_path, run=_run_nothing, memory_budget_bytes=budget, estimate=estimate_peak_bytes)
    opts = P.JobOptions()
    try:
        with JobClient(srv.endpoint, timeout_s=20, client_token=TOKEN_A) as c:
            with pytest.raises(JobError) as e:
                c.submit(make_scene(n_views=2, h=3000, w=3000))
            assert e.value.code == "too_large"
            m = re.search(r"(\d+) views of (\d+)x(\d+) pixels would fit", e.value.message)
            assert m, e.value.message
            views, side = int(m.group(1)), int(m.group(2))
            assert views == 2
            fits = max(estimate_peak_bytes(JobSize(views, side, side, depth=True), opts).values())
            over = max(estimate_peak_bytes(JobSize(views, side + 1, side + 1, depth=True), opts).values())
            assert fits <= budget < over  # the largest that fits, by the server's own estimate
            job = c.submit(make_scene(n_views=views, h=side, w=side))  # and the server admits it
            with pytest.raises(JobError) as e2:
                c.wait(job)
            assert e2.value.code == "job_failed" and "admitted" in e2.value.message
    finally:
        srv.stop()
    assert np.isfinite(fits)


def _slow_job(scene, options, progress, should_stop, workdir):
    for step in range(300):
        if should_stop():
            raise InterruptedError("cancelled")
        progress(P.ProgressEvent("training", step, 300))
        time.sleep(0.01)
    return run_job(scene, options, progress, should_stop, workdir)


@pytest.mark.parametrize("share,together", [(0.6, False), (0.4, True)])
def test_jobs_at_once_share_the_memory_budget(tmp_path, share, together):
    budget = 8 * 2**30

    def estimate(size, options):
        return {"work": int(share * budget)}

    srv = make_server(tmp_path, run=_slow_job, memory_budget_bytes=budget, estimate=estimate, max_running=2)
    try:
        with JobClient(srv.endpoint, timeout_s=20, client_token=TOKEN_A) as c:
            first = c.submit(make_scene(seed=1))
            second = c.submit(make_scene(seed=2))
            assert c.accepted[second] == (0 if together else 1)
            time.sleep(0.5)
            states = {j.job: j.state for j in c.status().jobs}
            assert states[first] == "running" and states[second] == ("running" if together else "queued"), states
            c.wait(first)
            c.wait(second)  # the second runs once the first has ended
    finally:
        srv.stop()
