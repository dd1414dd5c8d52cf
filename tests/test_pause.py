"""An operator's pause: a paused policy holds every decision (reason `paused`, with the operator's
reason) from the next decision in every worker, until it is resumed; each change is kept with who
and why. The store on both backends, the HTTP API, the CLI, and a real server with two workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from conftest import POLICIES_DIR
from serving import ROOT, start_serve
from service.store import open_store
from service.store.safety import POLICY_TARGET

CONTEXT = {"segment": "new_users", "country": "FR", "tenure_days": 3}
CONSENT = {"channels": {"email": True, "push": True, "sms": True}, "source": "test"}


def test_the_store_keeps_the_switch_and_every_change(store_url):
    store = open_store(store_url)
    try:
        assert store.pause_state("lifecycle") is None
        assert store.set_paused("lifecycle", True, "broken link", "ops", 100.0)
        assert not store.set_paused("lifecycle", True, "again", "ops", 101.0)  # paused already: nothing written
        assert store.pause_state("lifecycle") == {"reason": "broken link", "since": 100.0}
        assert store.pause_state("other") is None
        state = store.person_state("k", 0.0, "lifecycle")
        assert state.arm_state[POLICY_TARGET]["status"] == "paused"
        assert state.arm_state[POLICY_TARGET]["reason"] == "broken link"
        assert store.set_paused("lifecycle", False, "fixed", None, 200.0)
        assert not store.set_paused("lifecycle", False, "fixed", None, 201.0)
        assert store.pause_state("lifecycle") is None
        assert POLICY_TARGET not in store.person_state("k", 0.0, "lifecycle").arm_state
        assert [(e["kind"], e["reason"], e["by_whom"], e["at"]) for e in store.safety_events("lifecycle")] == [
            ("resume", "fixed", None, 200.0), ("pause", "broken link", "ops", 100.0)]
    finally:
        store.close()


def decide(client, user: str) -> dict:
    r = client.post("/v1/policies/lifecycle/decide", json={"user_id": user, "context": CONTEXT})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_a_paused_policy_holds_every_decision_and_says_why(client, app):
    policy = app.extensions["tactful"].policies["lifecycle"]
    sending = sum(1 for a in policy.arms if not a.hold)
    for i in range(5):
        assert client.put(f"/v1/users/p{i}/consent", json=CONSENT).status_code == 200
    assert any(not decide(client, f"p{i}")["action"]["hold"] for i in range(5))  # it sends when not paused
    r = client.post("/v1/policies/lifecycle/pause", json={"reason": "broken link in the welcome email"})
    assert r.status_code == 200 and r.json["paused"] and r.json["changed"]
    for i in range(5):
        d = decide(client, f"p{i}")
        assert d["action"]["hold"] and d["action"]["arm"] == "hold"
        assert d["removed"] == {"count": sending, "reasons": {"paused": sending}}
        assert d["explanation"]["removed"] == [{"reason": "paused", "detail": "the policy is paused by an operator: "
                                                "broken link in the welcome email", "arms": sending}]
        assert "paused" in d["explanation"]["summary"]
        assert d["probability"] == 1.0
    shown = client.get("/v1/policies/lifecycle").json
    assert shown["paused"]["reason"] == "broken link in the welcome email" and shown["paused"]["since"].endswith("Z")
    again = client.post("/v1/policies/lifecycle/pause", json={"reason": "again"}).json
    assert again["changed"] is False and again["reason"] == "broken link in the welcome email"
    r = client.post("/v1/policies/lifecycle/resume", json={"reason": "link fixed"})
    assert r.status_code == 200 and not r.json["paused"] and r.json["changed"]
    assert any(not decide(client, f"p{i}")["action"]["hold"] for i in range(5))
    assert client.get("/v1/policies/lifecycle").json["paused"] is None
    assert [(e["kind"], e["reason"]) for e in r.json["events"]] == [("resume", "link fixed"),
                                                                    ("pause", "broken link in the welcome email")]


@pytest.mark.parametrize("body,field", [(None, "body"), ({}, "reason"), ({"reason": ""}, "reason"),
                                        ({"reason": "   "}, "reason"), ({"reason": 3}, "reason"),
                                        ({"reason": "x" * 501}, "reason"), ({"reason": "ok", "by": "me"}, "by")])
def test_a_pause_without_a_clear_reason_is_refused(client, body, field):
    r = client.post("/v1/policies/lifecycle/pause", json=body) if body is not None else \
        client.post("/v1/policies/lifecycle/pause")
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    assert r.json["field"] == field
    assert client.post("/v1/policies/nope/pause", json={"reason": "x"}).status_code == 404
    assert client.get("/v1/policies/lifecycle").json["paused"] is None


@pytest.mark.e2e
def test_a_pause_from_the_cli_reaches_every_worker_at_once(tmp_path):
    db = tmp_path / "p.db"
    proc, base = start_serve(["--db", str(db), "--workers", "2"], tmp_path / "serve.log", new_session=True)
    http = requests.Session()

    def decisions(n: int) -> list[dict]:
        out = []
        for i in range(n):
            r = http.post(f"{base}/v1/policies/lifecycle/decide", json={"user_id": f"w{i}", "context": CONTEXT},
                          timeout=10)
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out

    def cli(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "service.cli", "policies", *args, "--policy", "lifecycle",
                              "--db", str(db), "--policies", str(POLICIES_DIR)], cwd=ROOT, capture_output=True,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout

    try:
        for i in range(20):
            assert http.put(f"{base}/v1/users/w{i}/consent", json=CONSENT, timeout=10).status_code == 200
        assert any(not d["action"]["hold"] for d in decisions(20))
        assert "PAUSED" in cli("pause", "--reason", "provider doubles every push")
        held = decisions(20)  # at once: the pause is read with each person's state, in both workers
        assert all(d["action"]["hold"] and d["removed"]["reasons"] == {"paused": d["removed"]["count"]}
                   for d in held)
        assert "serving" in cli("resume", "--reason", "provider fixed")
        assert any(not d["action"]["hold"] for d in decisions(20))
        status = cli("status")
        assert "resume" in status and "cli:" in status and "provider doubles every push" in status
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
