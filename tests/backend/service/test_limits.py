"""Issue #14: the service survives its users. Real servers on loopback, real sockets, no mocks; every loop bounded
in count and time."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from backend.service.client import JobClient, JobError, ServerUnavailable
from backend.service.keys import create_keys, load_keypair
from backend.service.server import JobServer, JobServerConfig
from backend.wire import protocol as P
from tests.backend.service.folders import job_folder
from tests.backend.service_jobs import make_scene, run_job

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(120)
TOKEN_A = "client-a-token-0123456789"
TOKEN_B = "client-b-token-0123456789"


def make_server(tmp_path: Path, run=run_job, estimate=None, **kw) -> JobServer:
    kw.setdefault("bind", "tcp://127.0.0.1:*")
    cfg = JobServerConfig(device="cpu", workdir=tmp_path / "jobs", **kw)
    return JobServer(cfg, run_job=run, estimate=estimate).start()


def spawn(workdir: Path, *extra: str, preexec=None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-B", "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu",
         "--workdir", str(workdir), "--run-job", "tests.backend.service_jobs:run_job", "--log-level", "WARNING",
         *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[-1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# 1 -------------------------------------------------------------------------------------------------------------
def test_large_job_refused_from_its_declared_size_before_any_work(tmp_path):
    from backend.method.job import estimate_peak_bytes

    ran = []

    def job(*a):
        ran.append(1)
        return run_job(*a)

    srv = make_server(tmp_path, run=job, estimate=estimate_peak_bytes, memory_budget_bytes=4 * 2**30)
    try:
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_A) as c:
            big = make_scene(n_views=1, h=2048, w=2048)
            with pytest.raises(JobError) as e:
                c.submit(big)
            assert e.value.code == "too_large" and "GiB" in e.value.message and "segmentation stage" in e.value.message
            assert not ran and not any((tmp_path / "jobs").iterdir())  # nothing started, nothing on disk
            small = make_scene(seed=1)
            c.wait(c.submit(small))
            assert ran
    finally:
        srv.stop()
    # The method's estimate grows with pixels and stays under the default budget for small jobs.
    size = type("S", (), {"views": 1, "height": 64, "width": 64, "masks": 0, "pixels": 64 * 64})
    assert max(estimate_peak_bytes(size, P.JobOptions()).values()) < 2 * 2**30


# 2 -------------------------------------------------------------------------------------------------------------
def test_client_that_never_reads_cannot_grow_server_memory(tmp_path):
    proc, address = spawn(tmp_path / "jobs")
    try:
        scene = make_scene(n_views=3, h=160, w=160, seed=5)  # ~40k points: a ~2 MB result
        with JobClient(address, timeout_s=10, client_token=TOKEN_A) as c:
            job = c.submit(scene, P.JobOptions(iterations=2))
            c.wait(job)
        ctx = zmq.Context.instance()
        bad = ctx.socket(zmq.DEALER)  # requests, never reads (its receive queue and buffer kept tiny)
        bad.setsockopt(zmq.RCVHWM, 1)
        bad.setsockopt(zmq.RCVBUF, 4096)
        bad.setsockopt(zmq.LINGER, 0)
        bad.connect(address)
        base = rss_mb(proc.pid)
        fetch = P.encode(P.Fetch(job=job, wait=False, client_token=TOKEN_A))
        status = P.encode(P.Status(client_token=TOKEN_A))
        peak, t0 = base, time.monotonic()
        for i in range(300):  # 300 unread fetches of the result
            bad.send_multipart(fetch)
            if i % 50 == 0:
                time.sleep(0.05)
                peak = max(peak, rss_mb(proc.pid))
        for i in range(20_000):  # and a flood of unread status requests, bounded in time
            bad.send_multipart(status)
            if i % 2000 == 0:
                peak = max(peak, rss_mb(proc.pid))
            if time.monotonic() - t0 > 30:
                break
        time.sleep(1.0)
        peak = max(peak, rss_mb(proc.pid))
        bad.close()
        assert peak - base < 120, f"server RSS grew {peak - base:.0f} MB under a non-reading client"
        with JobClient(address, timeout_s=10, client_token=TOKEN_A) as c:  # others are still served
            assert c.ping() < 2.0
            assert c.fetch(job).arrays["points"].shape[0] > 10_000
    finally:
        proc.kill()
        proc.wait()


# 3 -------------------------------------------------------------------------------------------------------------
def test_checkpoints_removed_at_job_end_and_finished_jobs_capped(tmp_path):
    def job(scene, options, progress, should_stop, workdir):
        (workdir / "train").mkdir(parents=True)
        (workdir / "train" / "checkpoint.pt").write_bytes(b"\0" * 1_000_000)
        for _ in range(200):
            if should_stop():
                raise InterruptedError("cancelled")
            time.sleep(0.01)
        return run_job(scene, options, progress, should_stop, workdir)

    srv = make_server(tmp_path, run=job, max_finished_jobs=5)
    jobs = tmp_path / "jobs"
    try:
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_A) as c:
            done = c.submit(make_scene())
            c.wait(done)
            folder = job_folder(jobs, done)
            assert not (folder / "train").exists() and (folder / "result.npz").is_file()
            for _ in range(20):  # submit, cancel
                j = c.submit(make_scene())
                c.cancel(j)
                with pytest.raises(JobError):
                    c.wait(j)
            time.sleep(0.3)
            folders = [p for p in jobs.iterdir() if p.is_dir()]
            assert len(folders) <= 5, len(folders)
            assert not list(jobs.rglob("checkpoint.pt"))
            total = sum(p.stat().st_size for p in jobs.rglob("*") if p.is_file())
            assert total < 200_000
    finally:
        srv.stop()


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal, like a full disk's ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_fails_the_job_not_the_server(tmp_path):
    # Room for state files but not for a result: the job fails with a clear message, the server serves on.
    proc, address = spawn(tmp_path / "jobs", preexec=_fsize_limit(3000))
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN_A) as c:
            job = c.submit(make_scene(n_views=3, h=24, w=32))
            with pytest.raises(JobError) as e:
                c.wait(job)
            assert e.value.code == "job_failed" and "disk is full" in e.value.message
            assert c.status(job).jobs[0].state == "failed"
            assert c.ping() < 2.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # No room even for a state file: the submit is refused (not left queued forever); the server serves on.
    proc, address = spawn(tmp_path / "jobs2", preexec=_fsize_limit(10))
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN_A) as c:
            with pytest.raises(JobError) as e:
                c.submit(make_scene())
            assert e.value.code == "job_failed" and "disk is full" in e.value.message
            assert c.status().jobs == [] and c.ping() < 2.0
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


# 4 -------------------------------------------------------------------------------------------------------------
def test_waiting_client_gives_up_within_its_timeout_when_the_server_dies(tmp_path):
    proc, address = spawn(tmp_path / "jobs")
    try:
        # Re-subscribing every 0.5 s must not reset the 3 s silence deadline.
        with JobClient(address, timeout_s=3, resync_s=0.5, client_token=TOKEN_A) as c:
            job = c.submit(make_scene(), P.JobOptions(iterations=100_000))
            for p in c.progress(job):
                if p.stage == "training":
                    break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            t0 = time.monotonic()
            with pytest.raises(ServerUnavailable):
                c.wait(job)
            assert time.monotonic() - t0 < 5.0
    finally:
        proc.kill()
        proc.wait()


def test_submit_without_server_fails_fast_before_uploading():
    with JobClient("tcp://127.0.0.1:9", timeout_s=30) as c:
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable):
            c.submit(make_scene())
        assert time.monotonic() - t0 < 7.0


# 5 -------------------------------------------------------------------------------------------------------------
def test_jobs_belong_to_the_submitting_client(tmp_path):
    srv = make_server(tmp_path)
    try:
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_A) as a, \
                JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_B) as b:
            done = a.submit(make_scene())
            a.wait(done)
            running = a.submit(make_scene(), P.JobOptions(iterations=100_000))
            for call in (b.fetch, b.cancel, b.status):
                with pytest.raises(JobError) as e:
                    call(running if call is b.cancel else done)
                assert e.value.code == "unknown_job"
            assert b.status().jobs == [] and b.status().running is None
            assert {j.job for j in a.status().jobs} == {done, running}
            assert a.fetch(done).arrays["points"].size
            assert a.cancel(running) in ("cancelling", "cancelled")
    finally:
        srv.stop()


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_with_keys_jobs_belong_to_the_public_key_and_an_admin_sees_all(tmp_path):
    keys = create_keys(tmp_path / "keys")
    admin = create_keys(tmp_path / "admin")
    (keys / "authorized_clients" / "admin.key").write_bytes((admin / "client.key").read_bytes())
    admin_public = load_keypair(admin / "client.key", need_secret=False).public.decode()
    srv = make_server(tmp_path, keys_dir=keys, admin_keys=(admin_public,))
    server_key = keys / "server.key"
    try:
        with JobClient(srv.endpoint, server_key, keys / "client.key_secret", timeout_s=10) as a:
            job = a.submit(make_scene())
            a.wait(job)
        # The same key from another process (another token) still owns it; the admin key sees it too.
        with JobClient(srv.endpoint, server_key, keys / "client.key_secret", timeout_s=10) as a2, \
                JobClient(srv.endpoint, server_key, admin / "client.key_secret", timeout_s=10) as adm:
            assert a2.fetch(job).arrays["points"].size
            assert [j.job for j in adm.status().jobs] == [job]
            assert adm.fetch(job).arrays["points"].size
    finally:
        srv.stop()


# 6 -------------------------------------------------------------------------------------------------------------
def test_job_id_with_a_trailing_newline_is_refused(tmp_path):
    srv = make_server(tmp_path)
    try:
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(srv.endpoint)
        msg = P.Submit(job="abcdef", rgb=np.zeros((1, 4, 4, 3), np.uint8), c2w=np.eye(4, dtype=np.float32)[None],
                       intrinsics=np.eye(3, dtype=np.float32))
        frames = P.encode(msg)
        header = json.loads(bytes(frames[0]))
        header["job"] = "abc\n"
        s.send_multipart([json.dumps(header).encode(), *frames[1:]])
        assert s.poll(5000)
        reply = P.decode(s.recv_multipart())
        s.close()
        assert isinstance(reply, P.Error) and reply.code == "bad_message"
        assert not [p for p in (tmp_path / "jobs").iterdir() if "\n" in p.name]
    finally:
        srv.stop()
    with pytest.raises(P.ProtocolError):
        P.Cancel(job="abc\n").validate()


# 7 -------------------------------------------------------------------------------------------------------------
def test_corrupt_or_nan_state_files_neither_block_ids_nor_break_status(tmp_path):
    jobs = tmp_path / "jobs"
    (jobs / "corrupt").mkdir(parents=True)
    (jobs / "corrupt" / "state.json").write_text('{"job": "corrupt", "state": ')
    (jobs / "nanjob").mkdir()
    (jobs / "nanjob" / "state.json").write_text(
        '{"job": "nanjob", "state": "done", "created": NaN, "updated": NaN, "owner": null}')
    srv = make_server(tmp_path)
    try:
        assert not (jobs / "corrupt").exists() and not (jobs / "nanjob").exists()
        with JobClient(srv.endpoint, timeout_s=10, client_token=TOKEN_A) as c:
            assert c.status().jobs == []
            scene = make_scene()
            assert c.wait(c.submit(scene, job="corrupt")).arrays["points"].size  # the id is free again
    finally:
        srv.stop()


# 8 -------------------------------------------------------------------------------------------------------------
def test_key_folders_private_under_a_permissive_umask_and_ipc_socket_private(tmp_path):
    old = os.umask(0)
    try:
        folder = create_keys(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / "authorized_clients").stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "server.key_secret").stat().st_mode) == 0o600
    sock = tmp_path / "s.ipc"
    srv = make_server(tmp_path, bind=f"ipc://{sock}")
    try:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    finally:
        srv.stop()
