"""/readyz: ready when the store answers, every policy's active model loads and a learner's
heartbeat (its lease) is fresh; otherwise 503 naming every reason. In process on both backends,
and end to end with a real learner killed with SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import POLICIES_DIR
from serving import ROOT, start_serve
from service.api.app import create_app
from service.learning.learner import LEASE


def reasons(resp) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in resp.get_json()["errors"]}


def test_ready_only_with_a_fresh_learner_and_loadable_models(store_url):
    app = create_app({"DB": store_url, "POLICIES": str(POLICIES_DIR), "MODEL_REFRESH_SECONDS": 0})
    client, store = app.test_client(), app.extensions["tactful"].store
    r = client.get("/readyz")
    assert r.status_code == 503 and r.headers["Content-Type"] == "application/problem+json"
    assert "no learner holds the lease" in reasons(r)["learner"]
    assert store.acquire_lease(LEASE, "host:1", 30)
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["learner"] == "host:1"
    assert store.acquire_lease(LEASE, "host:1", 0.01)  # its heartbeat stops
    time.sleep(0.05)
    assert "heartbeat stopped" in reasons(client.get("/readyz"))["learner"]
    assert store.acquire_lease(LEASE, "host:1", 30)
    broken = store.add_version("lifecycle", b"not a model", "", "import", time.time(), {})
    store.activate("lifecycle", broken, "test", time.time(), watch=False)
    r = client.get("/readyz")
    assert r.status_code == 503 and list(reasons(r)) == ["policies.lifecycle"]
    assert f"version {broken} cannot be loaded" in reasons(r)["policies.lifecycle"]
    store.close()


@pytest.mark.e2e
def test_readyz_turns_503_when_the_learner_is_killed(tmp_path):
    db = tmp_path / "r.db"
    proc, base = start_serve(["--db", str(db), "--no-learner"], tmp_path / "serve.log", new_session=True)
    learner = None
    try:
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
        learner = subprocess.Popen([sys.executable, "-m", "service.cli", "learn", "--db", str(db)], cwd=ROOT,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for_status(base, 200, 30)
        learner.send_signal(signal.SIGKILL)
        learner.wait(10)
        killed = time.monotonic()
        body = wait_for_status(base, 503, 30)
        assert "heartbeat stopped" in body["detail"] and time.monotonic() - killed < 15
    finally:
        if learner is not None and learner.poll() is None:
            learner.kill()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def wait_for_status(base: str, status: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = requests.get(f"{base}/readyz", timeout=10)
        if r.status_code == status:
            return r.json()
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
