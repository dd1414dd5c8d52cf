"""Safe when nobody configured anything: the real `tactful serve` on a store without an API key
serves on a loopback address only (warning that names `tactful keys create`), refuses any other
address with a message that says what to do, and serves one with `--insecure-no-auth` (loudly).
Once the store holds a key, every request needs one, whatever the address or the flag, and every
worker sees a key created or revoked while it runs within two seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner

from serving import ROOT, start_serve
from service.cli.main import main
from service.cli.serve import access_warning, is_loopback
from service.store import open_store

DECIDE = {"user_id": "u1", "context": {"segment": "s"}}


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real `tactful` command, in a process of its own."""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "192.168.1.5", "", "no-such-host.invalid"))


@pytest.mark.slow  # the real command in a process of its own
def test_serve_refuses_a_non_loopback_address_without_a_key(tmp_path):
    host = "0.0.0.0"
    start = time.monotonic()
    run = cli("serve", "--host", host, "--port", "1", "--db", str(tmp_path / "t.db"))
    assert time.monotonic() - start < 20
    assert run.returncode != 0
    err = run.stderr
    assert f"refusing to serve on {host} without authentication" in err and "holds no API key" in err
    assert "tactful keys create --name NAME --scopes" in err and "--insecure-no-auth" in err
    assert "--host 127.0.0.1" in err
    assert "Booting worker" not in err and "Tactful serving" not in err  # nothing started


def test_a_store_whose_keys_are_all_revoked_is_served_protected(tmp_path):
    """Revoked keys keep a store protected: serving it anywhere lets nobody in, so it is not
    refused, but it is warned about; with a key, no warning (and the flag changes nothing)."""
    db = str(tmp_path / "t.db")
    for args in (["keys", "create", "--name", "a", "--scopes", "decide"], ["keys", "revoke", "a"]):
        assert CliRunner().invoke(main, [*args, "--db", db]).exit_code == 0
    store = open_store(db)
    assert "every API key of this store is revoked" in access_warning(store, "0.0.0.0", False)
    store.add_api_key("b", "hash-of-b", ["decide"], 0.0)
    assert access_warning(store, "0.0.0.0", False) is None
    assert "changes nothing" in access_warning(store, "0.0.0.0", True)
    store.close()


def create_key(db: str, name: str, scopes: str) -> str:
    run = cli("keys", "create", "--name", name, "--scopes", scopes, "--db", db)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=30) == 0


def seconds_until(check, limit: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < limit, "never happened"
        time.sleep(0.05)
    return time.monotonic() - start


def every_worker(base: str, headers: dict, status: int, tries: int = 8) -> bool:
    """`tries` requests in a row answer `status` (with two sync workers, both are asked)."""
    return all(requests.get(f"{base}/v1/users/u1", headers=headers, timeout=10).status_code == status
               for _ in range(tries))


@pytest.mark.e2e
def test_loopback_without_a_key_serves_and_warns_then_keys_take_over_while_it_runs(tmp_path):
    db = str(tmp_path / "t.db")
    proc, base = start_serve(["--db", db, "--workers", "2", "--no-learner"], tmp_path / "serve.log", new_session=True)
    try:
        log = (tmp_path / "serve.log").read_text()
        assert "WARNING: this store holds no API key" in log and "tactful keys create" in log
        assert every_worker(base, {}, 200)
        key = create_key(db, "ops", "people:read")
        assert seconds_until(lambda: every_worker(base, {}, 401)) < 2.0
        assert every_worker(base, {"Authorization": f"Bearer {key}"}, 200)
        r = requests.post(f"{base}/v1/policies/lifecycle/decide", json=DECIDE, timeout=10,
                          headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403 and r.json()["scope"] == "decide"  # the fast path, served for real
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        assert cli("keys", "revoke", "ops", "--db", db).returncode == 0
        assert seconds_until(lambda: every_worker(base, {"Authorization": f"Bearer {key}"}, 401)) < 2.0
    finally:
        stop(proc)


@pytest.mark.e2e
def test_insecure_no_auth_serves_a_non_loopback_address_until_a_key_exists(tmp_path):
    db = str(tmp_path / "t.db")
    proc, base = start_serve(["--host", "0.0.0.0", "--insecure-no-auth", "--db", db, "--workers", "1",
                              "--no-learner"], tmp_path / "serve.log", new_session=True)
    try:
        log = (tmp_path / "serve.log").read_text()
        assert "!!! --insecure-no-auth: serving on 0.0.0.0 WITHOUT AUTHENTICATION" in log
        assert requests.post(f"{base}/v1/policies/lifecycle/decide", json=DECIDE, timeout=10).status_code == 200
        key = create_key(db, "campaigns", "decide")
        decide = lambda headers: requests.post(f"{base}/v1/policies/lifecycle/decide", json=DECIDE,  # noqa: E731
                                               headers=headers, timeout=10).status_code
        assert seconds_until(lambda: decide({}) == 401) < 2.0  # the flag does not outrank a key
        assert decide({"Authorization": f"Bearer {key}"}) == 200
    finally:
        stop(proc)


@pytest.mark.e2e
def test_a_store_with_a_key_is_served_on_any_address_and_needs_it(tmp_path):
    db = str(tmp_path / "t.db")
    key = create_key(db, "campaigns", "decide")
    proc, base = start_serve(["--host", "0.0.0.0", "--db", db, "--workers", "1", "--no-learner"],
                             tmp_path / "serve.log", new_session=True)
    try:
        log = (tmp_path / "serve.log").read_text()
        assert "WARNING" not in log and "!!!" not in log
        r = requests.post(f"{base}/v1/policies/lifecycle/decide", json=DECIDE, timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert requests.post(f"{base}/v1/policies/lifecycle/decide", json=DECIDE, timeout=10,
                             headers={"Authorization": f"Bearer {key}"}).status_code == 200
    finally:
        stop(proc)
