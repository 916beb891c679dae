"""Issue #14 figures: what a real ``backend serve`` on loopback costs under hostile or unlucky use.

    python bench/bench_service_limits.py                 # this checkout
    python bench/bench_service_limits.py --repo /tmp/old # another checkout (e.g. `git archive OLD | tar -x`)

Scenarios (each bounded in time, and the large job in server memory: the server is killed past --rss-limit-mb):
  large     one 2048x2048 view submitted to the real pipeline: reply and peak server RSS
  nonread   a client that submits, then sends 300 fetches of its ~2 MB result and 20,000 status requests
            without reading: server RSS growth
  disk      20 submit-then-cancel cycles of a tiny scene on the real pipeline: job folders and bytes left
  submit    `backend submit` (default --timeout 30) while the server is SIGKILLed mid-job: seconds until it exits
Messages are built with this checkout's protocol, without the fields older servers do not know.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

from backend.wire import protocol as P  # noqa: E402
from tests.backend.service_jobs import make_scene  # noqa: E402


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def compat(frames: list) -> list:
    """Frames without null ``client_token`` (unknown to servers before #14)."""
    header = json.loads(bytes(frames[0]))
    if header.get("client_token", 1) is None:
        del header["client_token"]
    return [json.dumps(header).encode(), *frames[1:]]


def submit_msg(scene, job: str, **opts) -> list:
    msg = P.Submit(job=job, rgb=scene.rgb, c2w=scene.c2w, intrinsics=scene.K, depth=scene.depth,
                   names=list(scene.names), options=P.JobOptions(**opts))
    return compat(P.encode(msg, P.Limits(max_total_bytes=2**40)))


def spawn(repo: Path, workdir: Path, run_job: str | None, home: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-B", "-m", "backend", "serve", "--bind", "tcp://127.0.0.1:*", "--device", "cpu",
           "--workdir", str(workdir), "--log-level", "WARNING"]
    if run_job:
        cmd += ["--run-job", run_job]
    proc = subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo), "HOME": str(home)})
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def dealer(address: str) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(address)
    return s


def recv(s: zmq.Socket, timeout_s: float):
    if not s.poll(int(timeout_s * 1000)):
        return None
    return P.decode(s.recv_multipart(), P.Limits(max_total_bytes=2**40))


def wait_end(s: zmq.Socket, timeout_s: float, on=None):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        m = recv(s, min(1.0, end - time.monotonic()))
        if m is None:
            continue
        if on is not None:
            on(m)
        if isinstance(m, (P.Result, P.Error)):
            return m
    return None


def large(repo: Path, tmp: Path, rss_limit_mb: float) -> str:
    proc, address = spawn(repo, tmp / "large", None, tmp)
    try:
        s = dealer(address)
        s.send_multipart(submit_msg(make_scene(n_views=1, h=2048, w=2048), "large"))
        t0, peak, reply, accepted = time.monotonic(), 0.0, None, False
        while time.monotonic() - t0 < 120 and proc.poll() is None:
            peak = max(peak, rss_mb(proc.pid, "VmHWM"))
            if peak > rss_limit_mb:
                break
            m = recv(s, 0.2)
            if isinstance(m, P.Accepted):
                accepted = True
            if isinstance(m, P.Error) or isinstance(m, P.Result):
                reply = m
                break
        peak = max(peak, rss_mb(proc.pid, "VmHWM"))
        what = (f"refused in {time.monotonic() - t0:.1f} s ({reply.code}: {reply.message[:90]}...)"
                if isinstance(reply, P.Error) else
                f"result in {time.monotonic() - t0:.0f} s" if reply is not None else
                f"killed past --rss-limit-mb {rss_limit_mb:.0f} after {time.monotonic() - t0:.0f} s (still growing)"
                if peak > rss_limit_mb else f"{'accepted, ' if accepted else ''}no result within 120 s")
        return f"large 2048x2048: peak server RSS {peak:.0f} MB; {what}"
    finally:
        proc.kill()
        proc.wait()


def nonread(repo: Path, tmp: Path) -> str:
    proc, address = spawn(repo, tmp / "nonread", "tests.backend.service_jobs:run_job", tmp)
    try:
        s = dealer(address)
        s.send_multipart(submit_msg(make_scene(n_views=3, h=320, w=320, seed=5), "nonread", iterations=2))
        end = wait_end(s, 60)
        assert isinstance(end, P.Result), end
        size_mb = sum(a.nbytes for a in end.arrays.values()) / 2**20
        s.setsockopt(zmq.RCVHWM, 1)  # from now on it never reads
        base = peak = rss_mb(proc.pid)
        fetch = compat(P.encode(P.Fetch(job="nonread", wait=False)))
        status = compat(P.encode(P.Status()))
        t0 = time.monotonic()
        for i in range(300):
            s.send_multipart(fetch)
            if i % 25 == 0:
                time.sleep(0.05)
                peak = max(peak, rss_mb(proc.pid))
        for i in range(20_000):
            s.send_multipart(status)
            if i % 1000 == 0:
                peak = max(peak, rss_mb(proc.pid))
            if time.monotonic() - t0 > 40:
                break
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, rss_mb(proc.pid))
        return (f"non-reading client: server RSS {base:.0f} -> peak {peak:.0f} MB (+{peak - base:.0f} MB) after 300 "
                f"unread fetches of a {size_mb:.1f} MB result and 20,000 unread status requests")
    finally:
        proc.kill()
        proc.wait()


def disk(repo: Path, tmp: Path) -> str:
    workdir = tmp / "disk"
    proc, address = spawn(repo, workdir, None, tmp)
    try:
        s = dealer(address)
        scene = make_scene(n_views=3, h=32, w=32, seed=2)
        t0 = time.monotonic()
        done = 0
        for i in range(20):
            if time.monotonic() - t0 > 240:
                break
            job = f"cycle{i}"
            s.send_multipart(submit_msg(scene, job, preset="fast"))
            seen_training = []

            def on(m):
                if isinstance(m, P.Progress) and m.stage == "training" and not seen_training:
                    seen_training.append(1)
                    s.send_multipart(compat(P.encode(P.Cancel(job=job))))

            wait_end(s, 60, on)
            done += 1
        time.sleep(0.5)
        folders = [p for p in workdir.iterdir() if p.is_dir()]
        total = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
        ckpts = list(workdir.rglob("checkpoint.pt"))
        return (f"disk after {done} submit-cancel cycles (real pipeline, preset fast): {len(folders)} job folders, "
                f"{total / 2**20:.1f} MB, {len(ckpts)} checkpoint.pt left ({time.monotonic() - t0:.0f} s)")
    finally:
        proc.kill()
        proc.wait()


def submit_exit(repo: Path, tmp: Path) -> str:
    from tests.backend.service.test_server import _write_folder

    proc, address = spawn(repo, tmp / "submit", "tests.backend.service_jobs:run_job", tmp)
    data = tmp / "data"
    if not data.exists():
        _write_folder(make_scene(), data)
    cli = subprocess.Popen([sys.executable, "-B", "-m", "backend", "submit", str(data), "--server", address,
                            "--out", str(tmp / "out"), "--iterations", "100000"],  # default --timeout 30
                           cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(repo), "HOME": str(tmp)})
    try:
        import threading

        seen = threading.Event()

        def read() -> None:
            for chunk in iter(lambda: cli.stderr.read(64), ""):
                if "training" in chunk or "it/s" in chunk or "/100000" in chunk:
                    seen.set()

        threading.Thread(target=read, daemon=True).start()
        seen.wait(60)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        try:
            rc = cli.wait(90)
            return f"submit (--timeout 30): exited {time.monotonic() - t0:.1f} s after the server was killed (exit {rc})"
        except subprocess.TimeoutExpired:
            return "submit (--timeout 30): still running 90 s after the server was killed (killed by the bench)"
    finally:
        cli.kill()
        cli.wait()
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=HERE, help="checkout whose `backend serve` / `backend submit` run")
    ap.add_argument("--only", nargs="*", default=["large", "nonread", "disk", "submit"])
    ap.add_argument("--rss-limit-mb", type=float, default=4000.0, help="kill the large job's server past this RSS")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-limits-"))
    try:
        for name in args.only:
            fn = {"large": lambda: large(args.repo, tmp, args.rss_limit_mb), "nonread": lambda: nonread(args.repo, tmp),
                  "disk": lambda: disk(args.repo, tmp), "submit": lambda: submit_exit(args.repo, tmp)}[name]
            try:
                print(fn(), flush=True)
            except Exception as e:  # noqa: BLE001 - report and go on with the next scenario
                print(f"{name}: failed: {type(e).__name__}: {e}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
