"""Job server and client over real loopback sockets, with the small real job of ``service_jobs``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from backend.wire import protocol as P
from backend.service.client import JobClient, JobError, ServerUnavailable
from backend.service.keys import Keypair, create_keys
from backend.wire.result_files import write_outputs
from backend.service.server import ConfigError, JobServer, JobServerConfig, is_local_endpoint
from tests.backend.malformed import malformed
from tests.backend.service.folders import job_folder
from tests.backend.service_jobs import make_scene, run_job, unproject

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(120)


def make_server(tmp_path: Path, **kw) -> JobServer:
    kw.setdefault("bind", "tcp://127.0.0.1:*")
    job_fn = kw.pop("run_job", run_job)
    cfg = JobServerConfig(device="cpu", workdir=tmp_path / "jobs", **kw)
    return JobServer(cfg, run_job=job_fn).start()


@pytest.fixture
def server(tmp_path):
    srv = make_server(tmp_path)
    yield srv
    srv.stop()


def client_for(server: JobServer, **kw) -> JobClient:
    kw.setdefault("timeout_s", 5.0)
    return JobClient(server.endpoint, **kw)


def check_result(result: P.JobResult, scene, max_points: int = 200_000):
    pts, cols = unproject(scene)
    n = min(len(pts), max_points)
    a = result.arrays
    assert a["points"].shape == (n, 3) and a["colors"].shape == (n, 3)
    if n == len(pts):
        np.testing.assert_allclose(a["points"], pts, atol=1e-6)
    assert a["parents"].shape == (2 * n - 1,) and a["parents"][-1] == 2 * n - 2
    assert a["labels"].shape == (len(a["thresholds"]), n)
    assert result.meta["hierarchy"]["thresholds"] == pytest.approx(a["thresholds"].tolist())


def test_submit_progress_result_fetch_status(server, tmp_path):
    scene = make_scene(seed=3)
    with client_for(server) as c:
        assert c.ping() < 1.0
        job = c.submit(scene, P.JobOptions(thresholds=(0.05, 0.3)))
        assert c.accepted[job] == 0
        events = list(c.progress(job))
        stages = [e.stage for e in events]
        assert stages[0] == "starting" and "training" in stages and stages[-1] == "segmentation"
        assert any(e.losses for e in events)
        result = c.wait(job)
        check_result(result, scene)
        np.testing.assert_allclose(result.arrays["thresholds"], [0.05, 0.3], rtol=1e-6)
        again = c.fetch(job)  # re-fetch from disk
        for k, v in result.arrays.items():
            np.testing.assert_array_equal(again.arrays[k], v)
        assert again.meta == result.meta
        st = c.status()
        assert st.device == "cpu" and st.jobs[0].job == job and st.jobs[0].state == "done" and st.queue == []
        assert c.status(job).jobs[0].state == "done"
        with pytest.raises(JobError) as e:
            c.status("nosuchjob")
        assert e.value.code == "unknown_job"
        with pytest.raises(JobError) as e:
            c.submit(scene, job=job)
        assert e.value.code == "duplicate_job"
    folder = job_folder(tmp_path / "jobs", job)
    assert json.loads((folder / "state.json").read_text())["state"] == "done"
    assert (folder / "result.npz").is_file() and (folder / "result.json").is_file()
    files = write_outputs(result, tmp_path / "out")
    head = (tmp_path / "out" / "points.ply").read_bytes()[:400]
    assert b"property int seg_t0_3" in head and len(files) == 4


def test_fuzz_1000_malformed_messages_then_a_valid_job(server):
    """Every malformed message gets an error reply; the server then still runs a job."""
    rng = random.Random(1234)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    kinds = {}
    try:
        for i in range(1200):
            kind, frames = malformed(rng)
            sock.send_multipart(frames)
            assert sock.poll(5000), f"no reply to malformed message {i} ({kind})"
            reply = P.decode(sock.recv_multipart())
            assert isinstance(reply, P.Error), (kind, reply)
            kinds[kind] = kinds.get(kind, 0) + 1
    finally:
        sock.close()
    assert len(kinds) >= 20 and sum(kinds.values()) == 1200
    scene = make_scene(seed=5)
    with client_for(server) as c:
        check_result(c.wait(c.submit(scene)), scene)


def test_cancel_running_job_within_one_second_and_queued_at_once(server):
    with client_for(server) as c:
        running = c.submit(make_scene(), P.JobOptions(iterations=100_000))
        queued = c.submit(make_scene(), P.JobOptions(iterations=10))
        assert c.accepted[queued] == 1
        for p in c.progress(running):
            if p.stage == "training":
                break
        assert c.cancel(queued) == "cancelled"
        with pytest.raises(JobError) as e:
            c.wait(queued)
        assert e.value.code == "cancelled"
        t0 = time.monotonic()
        assert c.cancel(running) == "cancelling"
        with pytest.raises(JobError) as e:
            c.wait(running)
        assert e.value.code == "cancelled" and time.monotonic() - t0 < 1.0
        assert c.status(running).jobs[0].state == "cancelled"
        assert c.cancel(running) == "cancelled"  # already over: reports the final state
        with pytest.raises(JobError) as e:
            c.cancel("nosuchjob")
        assert e.value.code == "unknown_job"
        scene = make_scene(seed=9)
        check_result(c.wait(c.submit(scene)), scene)  # the device is free again


def test_two_clients_at_once_get_their_own_results_and_progress(server):
    scenes = [make_scene(n_views=2, seed=1), make_scene(n_views=4, h=10, w=14, seed=2)]
    out: dict[int, tuple] = {}
    barrier = threading.Barrier(2)

    def go(i):
        with client_for(server) as c:
            barrier.wait()
            job = c.submit(scenes[i], P.JobOptions(iterations=20))
            events = list(c.progress(job))
            out[i] = (job, events, c.wait(job))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(out) == {0, 1}
    assert out[0][0] != out[1][0]
    for i in range(2):
        job, events, result = out[i]
        assert all(e.job == job for e in events)
        check_result(result, scenes[i])
    # Whichever ran second was told its queue position first.
    queued = [e for i in range(2) for e in out[i][1] if e.stage == "queued"]
    assert len(queued) >= 1 and queued[0].queue_position == 1


def test_reconnecting_client_follows_and_fetches(server):
    scene = make_scene(seed=4)
    c1 = client_for(server)
    job = c1.submit(scene, P.JobOptions(iterations=40))
    c1.close()
    with client_for(server, client_token=c1.client_token) as c2:  # the same client, reconnecting
        with pytest.raises(JobError) as e:
            c2.fetch(job)
        assert e.value.code == "not_ready"
        result = c2.wait(job)  # subscribes with fetch(wait)
        check_result(result, scene)
        check_result(c2.fetch(job), scene)
        check_result(c2.wait(job, timeout_s=5), scene)  # asking again re-subscribes, answered at once


def test_vanished_client_does_not_stall_the_queue(tmp_path):
    srv = make_server(tmp_path, client_timeout_s=0.5)
    try:
        scene = make_scene(seed=6)
        c1 = client_for(srv)
        job = c1.submit(scene, P.JobOptions(iterations=60))
        c1.close()  # gone mid-job
        with client_for(srv, client_token=c1.client_token) as c2:
            other = c2.submit(make_scene(seed=7))
            c2.wait(other)
            check_result(c2.fetch(job), scene)  # the orphan finished; result kept
    finally:
        srv.stop()


def test_orphaned_jobs_cancelled_when_configured(tmp_path):
    srv = make_server(tmp_path, client_timeout_s=0.5, cancel_orphaned_jobs=True)
    try:
        c1 = client_for(srv)
        job = c1.submit(make_scene(), P.JobOptions(iterations=100_000))
        c1.close()
        with client_for(srv, client_token=c1.client_token) as c2:
            deadline = time.monotonic() + 5
            while c2.status(job).jobs[0].state != "cancelled":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            scene = make_scene(seed=8)
            check_result(c2.wait(c2.submit(scene)), scene)
    finally:
        srv.stop()


@pytest.mark.parametrize("name, code", [("raise-oom", "out_of_memory"), ("raise-value", "job_failed")])
def test_job_exceptions_become_error_replies(server, name, code):
    with client_for(server) as c:
        job = c.submit(make_scene(names=[name, "b", "c"]))
        with pytest.raises(JobError) as e:
            c.wait(job)
        assert e.value.code == code
        assert ("out of memory" in e.value.message) if code == "out_of_memory" else "ValueError" in e.value.message
        with pytest.raises(JobError) as e:
            c.fetch(job)
        assert e.value.code == code
        assert c.ping() < 1.0
        scene = make_scene(seed=2)
        check_result(c.wait(c.submit(scene)), scene)


def test_invalid_job_result_is_reported(tmp_path):
    srv = make_server(tmp_path, run_job=lambda *a: {"points": np.zeros((3, 3))})
    try:
        with client_for(srv) as c:
            with pytest.raises(JobError, match="not a JobResult") as e:
                c.wait(c.submit(make_scene()))
            assert e.value.code == "job_failed"
    finally:
        srv.stop()


def test_oversized_frame_is_dropped_and_server_keeps_serving(tmp_path):
    srv = make_server(tmp_path, max_message_bytes=10_000)
    try:
        with client_for(srv, timeout_s=1.0) as c:
            with pytest.raises(ServerUnavailable):
                c.submit(make_scene(n_views=4, h=40, w=40))
        with client_for(srv) as c:
            assert c.ping() < 1.0
            scene = make_scene(n_views=2, h=8, w=8)
            check_result(c.wait(c.submit(scene)), scene)
    finally:
        srv.stop()


def test_results_expire_after_ttl(tmp_path):
    srv = make_server(tmp_path, result_ttl_s=0.3, client_timeout_s=0.4)
    try:
        with client_for(srv) as c:
            job = c.submit(make_scene())
            c.wait(job)
            time.sleep(1.0)
            with pytest.raises(JobError) as e:
                c.fetch(job)
            assert e.value.code == "unknown_job"
        assert not job_folder(tmp_path / "jobs", job).exists()
    finally:
        srv.stop()


def test_curve_keys_required_off_loopback_and_enforced(tmp_path):
    assert is_local_endpoint("tcp://127.0.0.1:5557") and is_local_endpoint("ipc:///tmp/x")
    assert is_local_endpoint("tcp://[::1]:5557") and is_local_endpoint("tcp://localhost:1")
    assert not is_local_endpoint("tcp://*:5557") and not is_local_endpoint("tcp://0.0.0.0:5557")
    assert not is_local_endpoint("tcp://192.168.1.2:5557") and not is_local_endpoint("tcp://eth0:5557")
    with pytest.raises(ConfigError, match="requires CurveZMQ keys"):
        JobServer(JobServerConfig(bind="tcp://0.0.0.0:5557", workdir=tmp_path), run_job)

    keys = create_keys(tmp_path / "keys")
    srv = make_server(tmp_path, keys_dir=keys)
    try:
        with JobClient(srv.endpoint, keys / "server.key", keys / "client.key_secret", timeout_s=5) as c:
            assert c.ping() < 1.0
            scene = make_scene(seed=11)
            check_result(c.wait(c.submit(scene)), scene)
        t0 = time.monotonic()
        with JobClient(srv.endpoint, timeout_s=1.0) as c:  # no keys at all
            with pytest.raises(ServerUnavailable, match="no reply from the job server at tcp://127.0.0.1") as e:
                c.ping()
            assert "--keys" in str(e.value)
        assert time.monotonic() - t0 < 3
        pub, sec = zmq.curve_keypair()  # a valid keypair the server does not know
        with JobClient(srv.endpoint, keys / "server.key", Keypair(pub, sec), timeout_s=1.0) as c:
            with pytest.raises(ServerUnavailable, match="authorized_clients"):
                c.ping()
        # Once a refused handshake has closed the connection, the DEALER has no peer to queue a message
        # on: a plain send would block for ever (it often did); the client must fail fast instead.
        for _ in range(6):
            for keys_kw, hint in (({}, "--keys"), ({"server_public_key": keys / "server.key",
                                                   "client_keys": Keypair(*zmq.curve_keypair())}, "authorized")):
                with JobClient(srv.endpoint, timeout_s=1.0, **keys_kw) as c:
                    time.sleep(0.05)  # the handshake fails meanwhile
                    t0 = time.monotonic()
                    with pytest.raises(ServerUnavailable, match=hint):
                        c.ping()
                    assert time.monotonic() - t0 < 3
    finally:
        srv.stop()


def _free_port() -> int:
    """A loopback port nobody listens on (a plain socket closes synchronously, unlike a zmq one,
    whose listener may still accept for a moment after close)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_times_out_clearly_without_server():
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with JobClient(address, timeout_s=0.5) as c:
        with pytest.raises(ServerUnavailable, match=f"no reply from the job server at {address} within 0.5"):
            c.ping()
        with pytest.raises(ServerUnavailable):
            c.submit(make_scene())
    assert time.monotonic() - t0 < 3


def _spawn_server(workdir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu",
         "--workdir", str(workdir), "--run-job", "tests.backend.service_jobs:run_job", "--log-level", "WARNING"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    return proc, line.split()[-1]


def test_server_killed_mid_job_then_restarted_reports_job_failed(tmp_path):
    proc, address = _spawn_server(tmp_path / "jobs")
    token = "restart-test-token-0123456789"
    try:
        with JobClient(address, timeout_s=2, client_token=token) as c:
            job = c.submit(make_scene(), P.JobOptions(iterations=100_000))
            for p in c.progress(job):
                if p.stage == "training":
                    break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            with pytest.raises(ServerUnavailable):  # the waiting client is told, not hung
                c.wait(job)
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((job_folder(tmp_path / "jobs", job) / "state.json").read_text())["state"] == "running"
    proc, address = _spawn_server(tmp_path / "jobs")
    try:
        with JobClient(address, timeout_s=5, client_token=token) as c:
            info = c.status(job).jobs[0]
            assert info.state == "failed" and info.error_code == "job_failed"
            for call in (c.wait, c.fetch):
                with pytest.raises(JobError, match="server stopped while the job was running") as e:
                    call(job)
                assert e.value.code == "job_failed"
        proc.send_signal(signal.SIGTERM)  # graceful stop
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()


def _write_folder(scene, folder: Path) -> None:
    """A minimal NeRF-synthetic / Blender-HS folder of ``scene`` (RGBA PNGs, planar depth, intrinsics)."""
    from PIL import Image

    (folder / "train").mkdir(parents=True)
    (folder / "depth" / "train").mkdir(parents=True)
    n, h, w = scene.depth.shape
    K = scene.K[0]
    frames = []
    for v in range(n):
        rgba = np.concatenate([scene.rgb[v], np.full((h, w, 1), 255, np.uint8)], -1)
        Image.fromarray(rgba, "RGBA").save(folder / "train" / f"r_{v}.png")
        np.save(folder / "depth" / "train" / f"r_{v}.npy", scene.depth[v])
        frames.append({"file_path": f"./train/r_{v}", "transform_matrix": scene.c2w[v].tolist()})
    tf = {"camera_angle_x": float(2 * np.arctan(w / 2 / K[0, 0])), "w": w, "h": h, "fl_x": float(K[0, 0]),
          "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]), "frames": frames}
    (folder / "transforms_train.json").write_text(json.dumps(tf))


def _submit_cli(argv: list[str], tmp_path: Path | None = None) -> int:
    import argparse

    from backend.service_cli import add_submit_parser

    parser = argparse.ArgumentParser(prog="backend")
    add_submit_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["submit", *argv])
    if "--token-file" not in argv:  # never the user's own token file
        args.token_file = Path(os.environ.get("PYTEST_TOKEN_DIR", "/tmp")) / f"umseg-test-token-{os.getpid()}"
    return args.func(args)


def test_submit_command_writes_ply_and_hierarchy(server, tmp_path, capsys):
    scene = make_scene(seed=12)
    _write_folder(scene, tmp_path / "data")
    out = tmp_path / "out"
    rc = _submit_cli([str(tmp_path / "data"), "--server", server.endpoint, "--out", str(out),
                      "--iterations", "8", "--thresholds", "0.05", "0.2", "--timeout", "5"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "accepted" in captured.err and "training" in captured.err  # tqdm progress on stderr
    assert {Path(p).name for p in captured.out.split()} == {"points.ply", "points_segments.ply",
                                                             "hierarchy.json", "result.npz"}
    head = (out / "points.ply").read_bytes()[:400]
    assert b"property int seg_t0_05" in head and b"property int seg_t0_2" in head
    assert json.loads((out / "hierarchy.json").read_text())["thresholds"] == pytest.approx([0.05, 0.2])
    with np.load(out / "result.npz", allow_pickle=False) as z:
        pts, _ = unproject(scene)  # back in the folder's (world) units after the normalisation round trip
        np.testing.assert_allclose(np.sort(z["points"], 0), np.sort(pts, 0), atol=1e-4)
        assert z["labels"].shape == (2, len(pts)) and z["parents"].shape == (2 * len(pts) - 1,)


def test_submit_command_fails_clearly_without_server(tmp_path, capsys):
    _write_folder(make_scene(), tmp_path / "data")
    port = _free_port()
    rc = _submit_cli([str(tmp_path / "data"), "--server", f"tcp://127.0.0.1:{port}", "--out",
                      str(tmp_path / "out"), "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 1 and "no reply from the job server" in err and not (tmp_path / "out").exists()
    rc = _submit_cli([str(tmp_path / "nope"), "--server", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "out")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err  # bad input


def test_keys_command_and_serve_refusing_an_open_bind_without_keys(tmp_path, capsys):
    import argparse

    from backend.cli import main as backend_main
    from backend.service_cli import add_keys_parser

    parser = argparse.ArgumentParser(prog="backend")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", str(tmp_path / "k")])
    assert args.func(args) == 0
    names = {p.name for p in (tmp_path / "k").iterdir()}
    assert {"server.key", "server.key_secret", "client.key", "client.key_secret", "authorized_clients"} <= names
    assert (tmp_path / "k" / "authorized_clients" / "client.key").is_file()
    assert ((tmp_path / "k" / "server.key_secret").stat().st_mode & 0o077) == 0
    assert "--keys" in capsys.readouterr().out
    err = (args.func(args), capsys.readouterr().err)
    assert err[0] == 2 and "exists" in err[1] and "--force" in err[1] and "overwrite" not in err[1]  # no silent overwrite
    assert backend_main(["serve", "--bind", "tcp://0.0.0.0:5599", "--workdir", str(tmp_path / "w")]) == 2
    assert "requires CurveZMQ keys" in capsys.readouterr().err


def test_graceful_stop_mid_job_marks_it_failed(tmp_path):
    srv = make_server(tmp_path)
    try:
        with client_for(srv, timeout_s=2.0) as c:
            job = c.submit(make_scene(), P.JobOptions(iterations=100_000))
            for p in c.progress(job):
                if p.stage == "training":
                    break
            t0 = time.monotonic()
            srv.stop()
            assert time.monotonic() - t0 < 2.0  # the job saw should_stop() promptly
            with pytest.raises((JobError, ServerUnavailable)) as e:
                c.wait(job)
            if isinstance(e.value, JobError):
                assert e.value.code == "job_failed" and "server was stopped" in e.value.message
    finally:
        srv.stop()
    st = json.loads((job_folder(tmp_path / "jobs", job) / "state.json").read_text())
    assert st["state"] == "failed" and st["error_code"] == "job_failed" and "server was stopped" in st["error_message"]
