"""Start the real `tactful serve` (gunicorn workers + one learner) for end-to-end tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, seconds: float, proc: subprocess.Popen | None = None, pause: float = 0.2) -> bool:
    """Whether `base`/healthz answers 200 within `seconds` (False at once if `proc` exits)."""
    deadline = time.time() + seconds
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return True
        except requests.ConnectionError:
            pass
        if (proc is not None and proc.poll() is not None) or time.time() > deadline:
            return False
        time.sleep(pause)


def start_serve(args: list[str], log_path: Path, new_session: bool = False) -> tuple[subprocess.Popen, str]:
    """Start `tactful serve ARGS --port <free>` and wait until /healthz answers: (process, base URL).
    With `new_session`, it leads a process group of its own (so a test can kill it whole)."""
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            start_new_session=new_session)
    log.close()
    base = f"http://127.0.0.1:{port}"
    if not wait_healthy(base, 60, proc):
        proc.kill()
        raise RuntimeError("tactful serve did not start:\n" + log_path.read_text())
    return proc, base


@pytest.fixture
def serve(tmp_path):
    """`serve(clock=..., workers=..., policies=...)` -> (requests session, base URL)."""
    started = []

    def start(clock: str = "system", workers: int = 2, policies: Path | None = None, db: Path | None = None):
        port = free_port()
        db = db or tmp_path / "served.db"
        log = open(tmp_path / f"serve-{port}.log", "w")
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--db", str(db),
               "--policies", str(policies or ROOT / "examples" / "policies"), "--clock", clock,
               "--workers", str(workers)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
        started.append((proc, log, tmp_path / f"serve-{port}.log"))
        base = f"http://127.0.0.1:{port}"
        if not wait_healthy(base, 60, proc):
            raise RuntimeError("tactful serve did not start:\n" + (tmp_path / f"serve-{port}.log").read_text())
        return requests.Session(), base

    yield start
    for proc, log, path in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("tactful serve did not stop on SIGINT:\n" + path.read_text())
        log.close()
        assert proc.returncode == 0, f"tactful serve exited {proc.returncode}:\n{path.read_text()}"
