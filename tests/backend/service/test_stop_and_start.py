"""Issue #27: cancel and SIGTERM end a job in every stage, also one stuck in native code; start-up failures are one
``error:`` line. Real ``backend serve`` processes on loopback with the default ``process`` executor."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.service.client import JobClient, JobError
from tests.backend.service.folders import job_folder
from tests.backend.service_jobs import make_scene

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.timeout(180)
TOKEN = "stop-and-start-token-0123456789"
STAGE_JOB = "tests.backend.service.stage_jobs:run_job"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def serve_cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-B", "-m", "backend", "serve", "--device", "cpu", "--workdir", str(workdir),
            "--log-level", "WARNING", *extra]


def spawn(workdir: Path, *extra: str, run_job: str = STAGE_JOB) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(serve_cmd(workdir, "--bind", "tcp://127.0.0.1:*", "--run-job", run_job, *extra),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[-1]


def run_to_stage(c: JobClient, stage: str, stubborn: bool) -> str:
    """Submit a job and return its id once it reports ``stage`` (stubborn there: it ignores should_stop)."""
    name = f"stubborn-{stage}" if stubborn else "cooperative"
    job = c.submit(make_scene(names=[name, "b", "c"]))
    for p in c.progress(job):
        if p.stage == stage:
            return job
    raise AssertionError(f"job ended before stage {stage}")


def state_of(workdir: Path, job: str) -> dict:
    return json.loads((job_folder(workdir, job) / "state.json").read_text())


# -- cancel ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["masks", "training", "segmentation"])
def test_cancel_ends_a_job_stuck_in_native_code_within_2s(tmp_path, stage):
    proc, address = spawn(tmp_path / "jobs")
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            job = run_to_stage(c, stage, stubborn=True)
            time.sleep(0.3)  # inside the native work now
            t0 = time.monotonic()
            assert c.cancel(job) == "cancelling"
            with pytest.raises(JobError) as e:
                c.wait(job)
            took = time.monotonic() - t0
            assert e.value.code == "cancelled" and took < 2.0, (e.value, took)
            assert state_of(tmp_path / "jobs", job)["state"] == "cancelled"
            # the server goes on: the next job (cooperative) runs to its end
            assert c.wait(c.submit(make_scene(seed=2))).arrays["points"].size
    finally:
        proc.kill()
        proc.wait()


# -- SIGTERM -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["masks", "training", "segmentation"])
def test_sigterm_in_every_stage_exits_0_within_5s_with_the_job_failed(tmp_path, stage):
    proc, address = spawn(tmp_path / "jobs")
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            job = run_to_stage(c, stage, stubborn=True)
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
            took = time.monotonic() - t0
        err = proc.stderr.read()
        assert code == 0 and took < 5.0, (code, took, err[-2000:])
        assert "Traceback" not in err and "terminate called" not in err, err[-2000:]
        st = state_of(tmp_path / "jobs", job)
        assert st["state"] == "failed" and st["error_code"] == "job_failed" and st["stage"] == stage
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_with_a_local_job_thread_in_native_code_exits_0(tmp_path):
    """The in-process executor: the job thread cannot be stopped, yet the exit is clean (no abort, status 0)."""
    proc, address = spawn(tmp_path / "jobs", "--executor", "local")
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            job = run_to_stage(c, "segmentation", stubborn=True)
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
        err = proc.stderr.read()
        assert code == 0 and "terminate called" not in err and "Traceback" not in err, (code, err[-2000:])
        assert time.monotonic() - t0 < 5.0  # the loop's shutdown waits 3 s for the thread, then exits anyway
        assert state_of(tmp_path / "jobs", job)["state"] == "failed"
    finally:
        proc.kill()
        proc.wait()


def test_second_sigterm_marks_the_running_job_failed_before_exiting(tmp_path):
    proc, address = spawn(tmp_path / "jobs", "--executor", "local")  # a job that never stops by itself
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            job = run_to_stage(c, "training", stubborn=True)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(10)
        assert code == 1
        st = state_of(tmp_path / "jobs", job)
        assert st["state"] == "failed" and "stopped twice" in st["error_message"], st
    finally:
        proc.kill()
        proc.wait()


def test_state_names_the_stage_after_a_crash(tmp_path):
    proc, address = spawn(tmp_path / "jobs")
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            job = run_to_stage(c, "training", stubborn=True)
            time.sleep(0.3)
            assert state_of(tmp_path / "jobs", job)["stage"] == "training"  # rewritten when the stage changed
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    proc, address = spawn(tmp_path / "jobs")
    try:
        with JobClient(address, timeout_s=10, client_token=TOKEN) as c:
            info = c.status(job).jobs[0]
            assert info.state == "failed" and "at stage training" in info.error_message, info
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


# -- start-up failures and bad options: one error line, exit 2 ---------------------------------------------------
def _busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


@pytest.mark.timeout(900)
def test_bad_serve_options_and_start_up_failures_are_one_error_line(tmp_path):
    from backend.service.keys import create_keys

    keys = create_keys(tmp_path / "keys")
    no_auth = create_keys(tmp_path / "noauth")
    for f in (no_auth / "authorized_clients").iterdir():
        f.unlink()
    (no_auth / "authorized_clients").rmdir()
    (tmp_path / "afile").write_text("x")
    busy, port = _busy_port()
    wd = str(tmp_path / "w")
    cases = {
        "no module": ["--run-job", "nosuchmod:fn"],
        "no function": ["--run-job", "tests.backend.service_jobs:nosuch"],
        "no colon": ["--run-job", "nocolon"],
        "not callable": ["--run-job", "os:sep"],
        "empty": ["--run-job", ":"],
        "port in use": ["--bind", f"tcp://127.0.0.1:{port}"],
        "keys lacking authorized_clients": ["--keys", str(no_auth), "--bind", "tcp://127.0.0.1:*"],
        "keys folder missing": ["--keys", str(tmp_path / "nokeys")],
        "open bind without keys": ["--bind", "tcp://0.0.0.0:*"],
        "bad bind": ["--bind", "udp://x"],
        "workdir a file": ["--workdir", str(tmp_path / "afile")],
        "bad budget": ["--memory-budget-gb", "-1"],
        "nan ttl": ["--result-ttl", "nan"],
        "bad device": ["--device", "tpu"],
        "bad executor": ["--executor", "nope"],
        "admin key missing": ["--admin-key", str(tmp_path / "none.key")],
        "admin key not a key": ["--admin-key", str(tmp_path / "afile")],
        "unknown flag": ["--frobnicate"],
        "bad max jobs": ["--max-jobs", "0"],
        "negative gpus": ["--executor", "ray", "--gpus-per-job", "-1"],
        "keys and a used port": ["--keys", str(keys), "--bind", f"tcp://127.0.0.1:{port}"],
    }
    bad = {}
    names = list(cases)
    try:
        for i in range(0, len(names), 4):  # four at a time: each imports torch, on a shared machine
            procs = {name: subprocess.Popen(serve_cmd(Path(wd), *cases[name]), cwd=REPO, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, env=ENV) for name in names[i:i + 4]}
            for name, p in procs.items():
                try:
                    out, err = p.communicate(timeout=300)
                finally:
                    p.kill()
                lines = [ln for ln in err.splitlines() if ln.strip()]
                if p.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error:") or "Traceback" in err \
                        or "listening" in out:
                    bad[name] = (p.returncode, err[-1500:])
    finally:
        busy.close()
    assert not bad, bad
